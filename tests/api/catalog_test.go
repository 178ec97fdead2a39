package api_test

import (
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// registerExternal registers a node with one service and a check in the
// catalog, as an external-service registrar does.
func registerExternal(t *testing.T, c *api.Client, node, addr, svcID, svcName string, tags []string, meta map[string]string, status string) {
	t.Helper()
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		Node:     node,
		Address:  addr,
		NodeMeta: meta,
		Service: &api.AgentService{
			ID: svcID, Service: svcName, Tags: tags, Port: 80,
			Meta: map[string]string{"team": "core"},
		},
		Check: &api.AgentCheck{
			CheckID: svcID + "-check", Name: "external", Status: status, ServiceID: svcID,
		},
	}, nil)
	if err != nil {
		t.Fatalf("catalog register %s/%s: %v", node, svcID, err)
	}
}

func TestCatalogRegisterDeregister(t *testing.T) {
	t.Parallel()
	a := start(t)
	cat := a.c.Catalog()
	registerExternal(t, a.c, "ext-1", "192.0.2.1", "redis-1", "redis", []string{"primary"}, map[string]string{"rack": "r1"}, api.HealthPassing)
	registerExternal(t, a.c, "ext-2", "192.0.2.2", "redis-2", "redis", []string{"replica"}, map[string]string{"rack": "r2"}, api.HealthPassing)

	dcs, err := cat.Datacenters()
	must(t, err)
	if !reflect.DeepEqual(dcs, []string{"dc1"}) {
		t.Errorf("Datacenters = %v, want [dc1]", dcs)
	}

	nodes, _, err := cat.Nodes(nil)
	must(t, err)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Node)
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"ext-1", "ext-2", nodeName}) {
		t.Errorf("Nodes = %v", names)
	}
	nodes, _, err = cat.Nodes(&api.QueryOptions{NodeMeta: map[string]string{"rack": "r2"}})
	must(t, err)
	if len(nodes) != 1 || nodes[0].Node != "ext-2" || nodes[0].Address != "192.0.2.2" {
		t.Errorf("Nodes(rack=r2) = %+v", nodes)
	}

	svcs, _, err := cat.Services(nil)
	must(t, err)
	tags := svcs["redis"]
	sort.Strings(tags)
	if !reflect.DeepEqual(tags, []string{"primary", "replica"}) {
		t.Errorf("Services[redis] = %v, want [primary replica]", tags)
	}

	svcs, _, err = cat.Services(&api.QueryOptions{NodeMeta: map[string]string{"rack": "r1"}})
	must(t, err)
	if !reflect.DeepEqual(svcs, map[string][]string{"redis": {"primary"}}) {
		t.Errorf("Services(rack=r1) = %v, want redis [primary]", svcs)
	}

	// service/:name with tag, node-meta and filter.
	for _, tc := range []struct {
		name string
		tag  string
		q    *api.QueryOptions
		want []string
	}{
		{"all", "", nil, []string{"redis-1", "redis-2"}},
		{"tag", "replica", nil, []string{"redis-2"}},
		{"tag case-insensitive", "PRIMARY", nil, []string{"redis-1"}},
		{"node-meta", "", &api.QueryOptions{NodeMeta: map[string]string{"rack": "r1"}}, []string{"redis-1"}},
		{"filter", "", &api.QueryOptions{Filter: `Node == "ext-2"`}, []string{"redis-2"}},
		{"filter meta", "", &api.QueryOptions{Filter: `ServiceMeta.team == "core" and "primary" in ServiceTags`}, []string{"redis-1"}},
		{"no match", "nope", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := cat.Service("redis", tc.tag, tc.q)
			must(t, err)
			var ids []string
			for _, s := range got {
				ids = append(ids, s.ServiceID)
			}
			sort.Strings(ids)
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("Service(redis, %q) = %v, want %v", tc.tag, ids, tc.want)
			}
		})
	}
	multi, _, err := cat.ServiceMultipleTags("redis", []string{"primary", "replica"}, nil)
	must(t, err)
	if len(multi) != 0 {
		t.Errorf("ServiceMultipleTags(primary, replica) = %d entries, want 0 (tags are ANDed)", len(multi))
	}
	if _, _, err := cat.Service("redis", "", &api.QueryOptions{Filter: "Node =="}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad filter: err = %v, want a 400", err)
	}

	node, _, err := cat.Node("ext-1", nil)
	must(t, err)
	if node == nil || node.Node.Address != "192.0.2.1" || node.Services["redis-1"] == nil || node.Services["redis-1"].Port != 80 {
		t.Fatalf("Node(ext-1) = %+v", node)
	}
	list, _, err := cat.NodeServiceList("ext-1", nil)
	must(t, err)
	if list == nil || len(list.Services) != 1 || list.Services[0].ID != "redis-1" {
		t.Fatalf("NodeServiceList(ext-1) = %+v", list)
	}
	// An unknown node is not an error: the body is null. (Fixed bug: the
	// body was empty, which the client fails to decode with EOF.)
	node, _, err = cat.Node("nope", nil)
	if err != nil || node != nil {
		t.Errorf("Node(nope) = %+v, %v; want nil, nil", node, err)
	}
	list, _, err = cat.NodeServiceList("nope", nil)
	if err != nil || list != nil {
		t.Errorf("NodeServiceList(nope) = %+v, %v; want nil, nil", list, err)
	}

	// Deregister a check, then a service, then the node.
	_, err = cat.Deregister(&api.CatalogDeregistration{Node: "ext-1", CheckID: "redis-1-check"}, nil)
	must(t, err)
	hc, _, err := a.c.Health().Checks("redis", nil)
	must(t, err)
	if hasCheck(hc, "redis-1-check") || !hasCheck(hc, "redis-2-check") {
		t.Errorf("checks after check deregister = %v", checkIDs(hc))
	}
	_, err = cat.Deregister(&api.CatalogDeregistration{Node: "ext-1", ServiceID: "redis-1"}, nil)
	must(t, err)
	got, _, err := cat.Service("redis", "", nil)
	must(t, err)
	if len(got) != 1 || got[0].ServiceID != "redis-2" {
		t.Errorf("Service(redis) after service deregister = %+v", got)
	}
	_, err = cat.Deregister(&api.CatalogDeregistration{Node: "ext-2"}, nil)
	must(t, err)
	got, _, err = cat.Service("redis", "", nil)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("Service(redis) after node deregister = %+v", got)
	}
	hc, _, err = a.c.Health().Checks("redis", nil)
	must(t, err)
	if len(hc) != 0 {
		t.Errorf("checks left after node deregister: %v", checkIDs(hc))
	}
	svcs, _, err = cat.Services(nil)
	must(t, err)
	if _, ok := svcs["redis"]; ok {
		t.Errorf("redis still listed after all instances went")
	}
}

func TestCatalogRegisterInvalid(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct {
		name string
		body string
	}{
		{"no node", `{"Address":"192.0.2.1"}`},
		{"no address", `{"Node":"x"}`},
		{"service without name", `{"Node":"x","Address":"192.0.2.1","Service":{"ID":"s"}}`},
		{"bad check status", `{"Node":"x","Address":"192.0.2.1","Check":{"CheckID":"c","Status":"bogus"}}`},
		{"check for missing service", `{"Node":"x","Address":"192.0.2.1","Check":{"CheckID":"c","ServiceID":"nope"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.do(t, "PUT", "/v1/catalog/register", tc.body).expect(t, tc.name, 400)
			// Nothing was written, not even the node.
			n, _, err := a.c.Catalog().Node("x", nil)
			must(t, err)
			if n != nil {
				t.Errorf("node x exists after a refused registration: %+v", n)
			}
		})
	}
	_, err := a.c.Catalog().Register(&api.CatalogRegistration{Node: "x", Address: "192.0.2.1", Datacenter: "elsewhere"}, nil)
	if err == nil || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Errorf("register in an unknown datacenter: err = %v", err)
	}
}

// TestCatalogAntiEntropy checks that the agent puts back a service of its
// own that was removed from the catalog behind its back.
func TestCatalogAntiEntropy(t *testing.T) {
	t.Parallel()
	a := start(t, agenttest.Options{Agent: agent.Options{SyncInterval: 100 * time.Millisecond}})
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "ae-1", Name: "ae", Tags: []string{"x"},
		Check: &api.AgentServiceCheck{CheckID: "ae-ttl", TTL: "1m", Status: api.HealthPassing},
	}))
	_, err := a.c.Catalog().Deregister(&api.CatalogDeregistration{Node: nodeName, ServiceID: "ae-1"}, nil)
	must(t, err)
	waitFor(t, 10*time.Second, func() error {
		e, _, err := a.c.Health().Service("ae", "x", true, nil)
		if err != nil {
			return err
		}
		if len(e) != 1 || !hasCheck(e[0].Checks, "ae-ttl") {
			return errorf("health/service/ae = %d entries, want 1 passing with its check", len(e))
		}
		return nil
	})

	// A service in the catalog that the agent does not have is removed.
	_, err = a.c.Catalog().Register(&api.CatalogRegistration{
		Node: nodeName, Address: "127.0.0.1", SkipNodeUpdate: true,
		Service: &api.AgentService{ID: "stray", Service: "stray"},
	}, nil)
	must(t, err)
	waitFor(t, 10*time.Second, func() error {
		s, _, err := a.c.Catalog().Service("stray", "", nil)
		if err != nil {
			return err
		}
		if len(s) != 0 {
			return errorf("stray still in the catalog")
		}
		return nil
	})
}

// TestCatalogAntiEntropyRepairs checks that a sync reverts changes made in
// the catalog to the agent's own services and checks, except the tags of a
// service with enable_tag_override, which the catalog may own. (Fixed bug:
// anti-entropy overwrote those tags too.)
func TestCatalogAntiEntropyRepairs(t *testing.T) {
	t.Parallel()
	a := start(t, agenttest.Options{Agent: agent.Options{SyncInterval: 100 * time.Millisecond}})
	for _, reg := range []*api.AgentServiceRegistration{
		{ID: "fixed", Name: "fixed", Tags: []string{"local"}, Port: 1,
			Check: &api.AgentServiceCheck{CheckID: "fixed-ttl", TTL: "1m", Status: api.HealthPassing}},
		{ID: "override", Name: "override", Tags: []string{"local"}, Port: 2, EnableTagOverride: true},
	} {
		must(t, a.c.Agent().ServiceRegister(reg))
	}
	// Someone else rewrites both services and the check in the catalog.
	for _, s := range []*api.AgentService{
		{ID: "fixed", Service: "fixed", Tags: []string{"remote"}, Port: 1},
		{ID: "override", Service: "override", Tags: []string{"remote"}, Port: 2, EnableTagOverride: true},
	} {
		_, err := a.c.Catalog().Register(&api.CatalogRegistration{
			Node: nodeName, Address: "127.0.0.1", SkipNodeUpdate: true, Service: s,
		}, nil)
		must(t, err)
	}
	_, err := a.c.Catalog().Register(&api.CatalogRegistration{
		Node: nodeName, Address: "127.0.0.1", SkipNodeUpdate: true,
		Check: &api.AgentCheck{CheckID: "fixed-ttl", Name: "fixed-ttl", Status: api.HealthCritical, ServiceID: "fixed"},
	}, nil)
	must(t, err)

	catalogTags := func(name string) []string {
		s, _, err := a.c.Catalog().Service(name, "", nil)
		must(t, err)
		if len(s) != 1 {
			t.Fatalf("catalog has %d instances of %s, want 1", len(s), name)
		}
		return s[0].ServiceTags
	}
	waitFor(t, 10*time.Second, func() error {
		if tags := catalogTags("fixed"); !reflect.DeepEqual(tags, []string{"local"}) {
			return errorf("fixed tags = %v, want the agent's [local] back", tags)
		}
		checks, _, err := a.c.Health().Checks("fixed", nil)
		if err != nil {
			return err
		}
		if len(checks) != 1 || checks[0].Status != api.HealthPassing {
			return errorf("fixed checks = %+v, want the agent's passing check back", checks)
		}
		return nil
	})
	// By now at least one sync ran since the catalog writes: the override
	// tags were left alone, and the agent adopted them.
	if tags := catalogTags("override"); !reflect.DeepEqual(tags, []string{"remote"}) {
		t.Errorf("override tags in the catalog = %v, want [remote] kept", tags)
	}
	s, _, err := a.c.Agent().Service("override", nil)
	must(t, err)
	if !reflect.DeepEqual(s.Tags, []string{"remote"}) {
		t.Errorf("override tags on the agent = %v, want [remote] adopted", s.Tags)
	}
}

// TestAntiEntropyQuiet checks that a sync of an agent already in sync
// writes nothing: each write would wake every blocking query watching the
// agent's services.
func TestAntiEntropyQuiet(t *testing.T) {
	t.Parallel()
	a := start(t, agenttest.Options{Agent: agent.Options{SyncInterval: 20 * time.Millisecond}})
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "quiet", Name: "quiet", Port: 1, EnableTagOverride: true,
		Check: &api.AgentServiceCheck{CheckID: "quiet-ttl", TTL: "1m", Status: api.HealthPassing},
	}))
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "full", Name: "full", Port: 2, Tags: []string{"a"}, Meta: map[string]string{"k": "v"},
		Weights:         &api.AgentWeights{Passing: 2, Warning: 1},
		TaggedAddresses: map[string]api.ServiceAddress{"lan": {Address: "10.0.0.1", Port: 2}},
		Checks: api.AgentServiceChecks{
			{CheckID: "full-ttl", TTL: "1m", Status: api.HealthPassing, Notes: "n"},
			{CheckID: "full-tcp", TCP: "127.0.0.1:1", Interval: "1h", Timeout: "1s"},
		},
	}))
	must(t, a.c.Agent().CheckRegister(&api.AgentCheckRegistration{
		ID: "node-ttl", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}))
	// Let the TCP check report its first (critical) result.
	waitFor(t, 10*time.Second, func() error {
		checks, _, err := a.c.Health().Checks("full", nil)
		if err != nil {
			return err
		}
		for _, c := range checks {
			if c.CheckID == "full-tcp" && c.Output == "" {
				return errorf("full-tcp has not run yet")
			}
		}
		return nil
	})
	for _, name := range []string{"quiet", "full"} {
		_, meta, err := a.c.Health().Service(name, "", false, nil)
		must(t, err)
		_, meta2, err := a.c.Health().Service(name, "", false, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 500 * time.Millisecond})
		must(t, err)
		if meta2.LastIndex != meta.LastIndex {
			t.Errorf("health/service/%s index moved from %d to %d with nothing changed: anti-entropy rewrote it", name, meta.LastIndex, meta2.LastIndex)
		}
	}
	_, meta, err := a.c.Health().Node(nodeName, nil)
	must(t, err)
	_, meta2, err := a.c.Health().Node(nodeName, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 500 * time.Millisecond})
	must(t, err)
	if meta2.LastIndex != meta.LastIndex {
		t.Errorf("health/node index moved from %d to %d with nothing changed", meta.LastIndex, meta2.LastIndex)
	}
}
