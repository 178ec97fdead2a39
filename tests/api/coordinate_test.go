package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/httpapi"
)

// fastCoordinates starts agents that send their coordinate every 50ms, so
// that tests see it within moments.
var fastCoordinates = agenttest.Options{Agent: agent.Options{CoordinateUpdateInterval: 50 * time.Millisecond}}

// coordAt is a coordinate x seconds along the first axis from the origin,
// where a lone agent's own coordinate stays.
func coordAt(x float64) *coordinate.Coordinate {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0] = x
	return c
}

// waitOwnCoordinate waits until the agent's own coordinate is in the
// catalog and returns it.
func waitOwnCoordinate(t *testing.T, a *testAgent) *coordinate.Coordinate {
	t.Helper()
	var own *coordinate.Coordinate
	waitFor(t, 10*time.Second, func() error {
		entries, _, err := a.c.Coordinate().Node(nodeName, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Coord == nil {
			return errorf("entries %+v", entries)
		}
		own = entries[0].Coord
		return nil
	})
	return own
}

func TestCoordinateOwnNodeAppears(t *testing.T) {
	t.Parallel()
	a := start(t, fastCoordinates)
	waitFor(t, 10*time.Second, func() error {
		entries, meta, err := a.c.Coordinate().Nodes(nil)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Node == nodeName && e.Segment == "" && e.Coord != nil && len(e.Coord.Vec) == 8 && meta.LastIndex > 0 {
				return nil
			}
		}
		return errorf("%s not among %+v", nodeName, entries)
	})

	// A lone agent has nobody to measure against: it sits at the origin.
	own := waitOwnCoordinate(t, a)
	if want := coordinate.NewCoordinate(coordinate.DefaultConfig()); !reflect.DeepEqual(own, want) {
		t.Errorf("own coordinate = %+v, want the origin %+v", own, want)
	}

	// /v1/coordinate/datacenters lists the servers from WAN gossip,
	// named "<node>.<dc>" as WAN members are.
	dcs, err := a.c.Coordinate().Datacenters()
	must(t, err)
	if len(dcs) != 1 || dcs[0].Datacenter != "dc1" || dcs[0].AreaID != "WAN" ||
		len(dcs[0].Coordinates) != 1 || dcs[0].Coordinates[0].Node != nodeName+".dc1" || dcs[0].Coordinates[0].Coord == nil {
		t.Errorf("Datacenters = %s, want dc1 in area WAN with %s", jsonOf(dcs), nodeName)
	}

	// /v1/agent/self carries the agent's coordinate.
	self, err := a.c.Agent().Self()
	must(t, err)
	if c, ok := self["Coord"]; !ok || c == nil {
		t.Errorf("agent/self Coord = %v, want the agent's coordinate", c)
	}
}

// The agent sends its coordinate with the default options too, within
// moments of starting.
func TestCoordinateOwnNodeAppearsWithDefaults(t *testing.T) {
	t.Parallel()
	a := start(t)
	waitOwnCoordinate(t, a)
}

func TestCoordinateUpdateAndRead(t *testing.T) {
	t.Parallel()
	a := start(t, fastCoordinates)
	waitOwnCoordinate(t, a)
	registerExternal(t, a.c, "n1", "192.0.2.1", "web-1", "web", nil, nil, api.HealthPassing)
	coord := a.c.Coordinate()

	_, meta, err := coord.Nodes(nil)
	must(t, err)
	type result struct {
		entries []*api.CoordinateEntry
		meta    *api.QueryMeta
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		e, m, err := coord.Nodes(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: longWait})
		ch <- result{e, m, err}
	}()

	want := coordAt(0.25)
	want.Error, want.Adjustment, want.Height = 0.5, -0.0001, 0.0002
	_, err = coord.Update(&api.CoordinateEntry{Node: "n1", Coord: want}, nil)
	must(t, err)

	r := <-ch
	must(t, r.err)
	if r.meta.LastIndex <= meta.LastIndex || !hasCoordinate(r.entries, "n1", want) {
		t.Errorf("blocking Nodes woke at index %d (from %d) with %s; want n1 at %+v", r.meta.LastIndex, meta.LastIndex, jsonOf(r.entries), want)
	}

	got, qm, err := coord.Node("n1", nil)
	must(t, err)
	if len(got) != 1 || got[0].Node != "n1" || got[0].Segment != "" || !reflect.DeepEqual(got[0].Coord, want) || qm.LastIndex == 0 {
		t.Errorf("Node(n1) = %s (index %d), want n1 at %+v", jsonOf(got), qm.LastIndex, want)
	}
	// The JSON keys are Consul's.
	raw := a.do(t, "GET", "/v1/coordinate/node/n1", nil).expect(t, "GET coordinate/node/n1", 200)
	for _, k := range []string{`"Node":"n1"`, `"Segment":""`, `"Coord":{`, `"Vec":[0.25,0,0,0,0,0,0,0]`, `"Error":0.5`, `"Adjustment":-0.0001`, `"Height":0.0002`} {
		if !strings.Contains(raw.body, k) {
			t.Errorf("coordinate/node/n1 body %s lacks %s", raw.body, k)
		}
	}
	if raw.header.Get("X-Consul-Index") == "" {
		t.Error("coordinate/node/n1 has no X-Consul-Index")
	}

	// ?segment= keeps one segment's entries.
	var seg []*api.CoordinateEntry
	body := a.do(t, "GET", "/v1/coordinate/nodes?segment=other", nil).expect(t, "nodes?segment=other", 200).body
	must(t, json.Unmarshal([]byte(body), &seg))
	if seg == nil || len(seg) != 0 {
		t.Errorf("nodes?segment=other = %s, want []", body)
	}
	body = a.do(t, "GET", "/v1/coordinate/nodes?segment=", nil).expect(t, "nodes?segment=", 200).body
	must(t, json.Unmarshal([]byte(body), &seg))
	if !hasCoordinate(seg, "n1", want) {
		t.Errorf("nodes?segment= = %s, want n1 in the default segment", body)
	}

	// A node without a coordinate is a 404, whether known or not.
	for _, n := range []string{"no-such-node", "n2"} {
		if n == "n2" {
			registerExternal(t, a.c, "n2", "192.0.2.2", "web-2", "web", nil, nil, api.HealthPassing)
		}
		a.do(t, "GET", "/v1/coordinate/node/"+n, nil).expect(t, "coordinate of "+n, 404)
		if _, _, err := coord.Node(n, nil); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("client Node(%s) error = %v, want a 404", n, err)
		}
	}

	// An update for a node the catalog lacks succeeds and stores nothing.
	_, err = coord.Update(&api.CoordinateEntry{Node: "ghost", Coord: coordAt(1)}, nil)
	must(t, err)
	a.do(t, "GET", "/v1/coordinate/node/ghost", nil).expect(t, "coordinate of an uncatalogued node", 404)

	// Deregistering the node deletes its coordinate.
	_, err = a.c.Catalog().Deregister(&api.CatalogDeregistration{Node: "n1"}, nil)
	must(t, err)
	a.do(t, "GET", "/v1/coordinate/node/n1", nil).expect(t, "coordinate of a deregistered node", 404)
	entries, _, err := coord.Nodes(nil)
	must(t, err)
	for _, e := range entries {
		if e.Node == "n1" {
			t.Errorf("Nodes still lists n1 after its deregistration: %s", jsonOf(entries))
		}
	}
}

func TestCoordinateUpdateRejectsBadInput(t *testing.T) {
	t.Parallel()
	a := start(t, fastCoordinates)
	waitOwnCoordinate(t, a)
	registerExternal(t, a.c, "n1", "192.0.2.1", "web-1", "web", nil, nil, api.HealthPassing)
	good := coordAt(0.01)
	_, err := a.c.Coordinate().Update(&api.CoordinateEntry{Node: "n1", Coord: good}, nil)
	must(t, err)
	before := a.do(t, "GET", "/v1/coordinate/nodes", nil).expect(t, "nodes", 200)

	for _, tc := range []struct {
		name, body, want string
	}{
		{"no node", `{"Coord":{"Vec":[0,0,0,0,0,0,0,0]}}`, "missing Node"},
		{"no coord", `{"Node":"n1"}`, "missing Coord"},
		{"empty body", ``, "missing Node"},
		{"too few dimensions", `{"Node":"n1","Coord":{"Vec":[1,2,3],"Height":0.00001}}`, "Coord.Vec has 3 dimensions, want 8"},
		{"too many dimensions", `{"Node":"n1","Coord":{"Vec":[0,0,0,0,0,0,0,0,0]}}`, "Coord.Vec has 9 dimensions, want 8"},
		{"negative height", `{"Node":"n1","Coord":{"Vec":[0,0,0,0,0,0,0,0],"Height":-1}}`, "Coord.Height -1 is negative"},
		{"vec not numbers", `{"Node":"n1","Coord":{"Vec":"east"}}`, "Vec"},
		{"not JSON", `{"Node":`, "Request decode failed"},
		{"number too large", `{"Node":"n1","Coord":{"Vec":[1e400,0,0,0,0,0,0,0]}}`, "Request decode failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, "PUT", "/v1/coordinate/update", tc.body).expect(t, "bad update", 400)
			if !strings.Contains(r.body, tc.want) {
				t.Errorf("body = %q, want it to name %q", r.body, tc.want)
			}
		})
	}

	after := a.do(t, "GET", "/v1/coordinate/nodes", nil).expect(t, "nodes", 200)
	if after.body != before.body || after.header.Get("X-Consul-Index") != before.header.Get("X-Consul-Index") {
		t.Errorf("bad updates changed the coordinates:\nbefore %s (index %s)\nafter  %s (index %s)",
			before.body, before.header.Get("X-Consul-Index"), after.body, after.header.Get("X-Consul-Index"))
	}

	// Only PUT writes.
	a.do(t, "POST", "/v1/coordinate/update", `{}`).expect(t, "POST coordinate/update", 405)
	// Another datacenter cannot be reached.
	r := a.do(t, "PUT", "/v1/coordinate/update?dc=elsewhere", `{"Node":"n1","Coord":{"Vec":[0,0,0,0,0,0,0,0]}}`)
	if r.code == 200 || !strings.Contains(r.body, "No path to datacenter") {
		t.Errorf("update for another dc = %d %q, want No path to datacenter", r.code, r.body)
	}
}

// nearLayout registers n1..n4, each with a "web" instance, and places n1
// to n3 on one axis (n4 has no coordinate; the agent's own node stays at
// the origin):
//
//	test-node(0)  n1(2ms)  n3(5ms)  n2(10ms)      n4: none
func nearLayout(t *testing.T, a *testAgent) {
	t.Helper()
	for i, addr := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		n := strconv.Itoa(i + 1)
		registerExternal(t, a.c, "n"+n, addr, "web-"+n, "web", nil, nil, api.HealthPassing)
	}
	for node, x := range map[string]float64{"n1": 0.002, "n2": 0.010, "n3": 0.005} {
		if _, err := a.c.Coordinate().Update(&api.CoordinateEntry{Node: node, Coord: coordAt(x)}, nil); err != nil {
			t.Fatalf("update %s: %v", node, err)
		}
	}
}

func TestNearSortsCatalogAndHealth(t *testing.T) {
	t.Parallel()
	a := start(t, fastCoordinates)
	waitOwnCoordinate(t, a)
	nearLayout(t, a)

	catalogNodes := func(near string) []string {
		nodes, _, err := a.c.Catalog().Nodes(&api.QueryOptions{Near: near})
		must(t, err)
		var out []string
		for _, n := range nodes {
			out = append(out, n.Node)
		}
		return out
	}
	catalogService := func(near string) []string {
		svcs, _, err := a.c.Catalog().Service("web", "", &api.QueryOptions{Near: near})
		must(t, err)
		var out []string
		for _, s := range svcs {
			out = append(out, s.Node)
		}
		return out
	}
	healthService := func(near string) []string {
		entries, _, err := a.c.Health().Service("web", "", true, &api.QueryOptions{Near: near})
		must(t, err)
		var out []string
		for _, e := range entries {
			out = append(out, e.Node.Node)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		query func(near string) []string
		near  string
		want  []string
	}{
		{"catalog nodes unsorted", catalogNodes, "", []string{"n1", "n2", "n3", "n4", nodeName}},
		{"catalog nodes near n1", catalogNodes, "n1", []string{"n1", nodeName, "n3", "n2", "n4"}},
		{"catalog nodes near n2", catalogNodes, "n2", []string{"n2", "n3", "n1", nodeName, "n4"}},
		{"catalog nodes near _agent", catalogNodes, "_agent", []string{nodeName, "n1", "n3", "n2", "n4"}},
		{"catalog nodes near an unknown node", catalogNodes, "nobody", []string{"n1", "n2", "n3", "n4", nodeName}},
		{"catalog nodes near a node without coordinate", catalogNodes, "n4", []string{"n1", "n2", "n3", "n4", nodeName}},
		{"catalog service near n3", catalogService, "n3", []string{"n3", "n1", "n2", "n4"}},
		{"catalog service near _agent", catalogService, "_agent", []string{"n1", "n3", "n2", "n4"}},
		{"catalog service near an unknown node", catalogService, "nobody", []string{"n1", "n2", "n3", "n4"}},
		{"health service near n2", healthService, "n2", []string{"n2", "n3", "n1", "n4"}},
		{"health service near _agent", healthService, "_agent", []string{"n1", "n3", "n2", "n4"}},
		{"health service near an unknown node", healthService, "nobody", []string{"n1", "n2", "n3", "n4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.query(tc.near); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("near %q: got %v, want %v", tc.near, got, tc.want)
			}
		})
	}

	// Filters and ?near= combine: the filter keeps, the distance orders.
	svcs, _, err := a.c.Catalog().Service("web", "", &api.QueryOptions{Near: "n2", Filter: `Node != "n3"`})
	must(t, err)
	var got []string
	for _, s := range svcs {
		got = append(got, s.Node)
	}
	if want := []string{"n2", "n1", "n4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("service web near n2 without n3 = %v, want %v", got, want)
	}

	// Health checks by state are sorted too.
	checks, _, err := a.c.Health().State(api.HealthAny, &api.QueryOptions{Near: "n2"})
	must(t, err)
	if len(checks) == 0 || checks[0].Node != "n2" {
		t.Errorf("health/state/any near n2 starts with %s, want n2", jsonOf(checks))
	}
}

// ?near=_agent means the agent the client asked. The origin header that
// names it on a forwarded request is honoured only on the internal RPC: sent
// from outside, it is ignored (review finding: it could be forged).
func TestNearAgentIgnoresAnOriginHeaderFromOutside(t *testing.T) {
	t.Parallel()
	a := start(t, fastCoordinates)
	waitOwnCoordinate(t, a)
	nearLayout(t, a)

	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/v1/catalog/nodes?near=_agent", []string{nodeName, "n1", "n3", "n2", "n4"}},
		{"/v1/catalog/service/web?near=_agent", []string{"n1", "n3", "n2", "n4"}},
		{"/v1/health/service/web?near=_agent", []string{"n1", "n3", "n2", "n4"}},
	} {
		req, err := http.NewRequest("GET", a.base+tc.path, nil)
		must(t, err)
		req.Header.Set(httpapi.OriginNodeHeader, "n2")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		must(t, err)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", tc.path, resp.StatusCode, body)
		}
		var rows []struct {
			Node json.RawMessage
		}
		must(t, json.Unmarshal(body, &rows))
		var got []string
		for _, r := range rows {
			// Catalog rows carry the node's name, health entries the node.
			var name string
			if json.Unmarshal(r.Node, &name) != nil {
				var n struct{ Node string }
				must(t, json.Unmarshal(r.Node, &n))
				name = n.Node
			}
			got = append(got, name)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("GET %s with a forged origin n2 = %v, want %v (sorted from %s)", tc.path, got, tc.want, nodeName)
		}
	}
}

func hasCoordinate(entries []*api.CoordinateEntry, node string, want *coordinate.Coordinate) bool {
	for _, e := range entries {
		if e.Node == node && reflect.DeepEqual(e.Coord, want) {
			return true
		}
	}
	return false
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// Two agents that gossip measure each other: /v1/coordinate/datacenters
// lists both servers from WAN gossip, and each agent's LAN coordinate
// leaves the origin and reaches its catalog by the periodic update.
func TestCoordinatesFromGossip(t *testing.T) {
	t.Parallel()
	opts := func(name string) agenttest.Options {
		o := fastGossip(name)
		o.Agent.CoordinateUpdateInterval = 50 * time.Millisecond
		return o
	}
	a := start(t, opts("coord-a"))
	b := start(t, opts("coord-b"))
	self, err := b.c.Agent().Self()
	must(t, err)
	m := self["Member"]
	must(t, a.c.Agent().Join(fmt.Sprintf("%v:%v", m["Addr"], m["Port"]), false))
	wan, err := b.c.Agent().Members(true)
	must(t, err)
	if len(wan) != 1 {
		t.Fatalf("coord-b's WAN members = %s, want itself", jsonOf(wan))
	}
	must(t, a.c.Agent().Join(fmt.Sprintf("%s:%d", wan[0].Addr, wan[0].Port), true))

	origin := coordinate.NewCoordinate(coordinate.DefaultConfig())
	waitFor(t, 30*time.Second, func() error {
		dcs, err := a.c.Coordinate().Datacenters()
		if err != nil {
			return err
		}
		if len(dcs) != 1 || len(dcs[0].Coordinates) != 2 ||
			dcs[0].Coordinates[0].Node != "coord-a.dc1" || dcs[0].Coordinates[1].Node != "coord-b.dc1" {
			return errorf("datacenters %s, want coord-a.dc1 and coord-b.dc1", jsonOf(dcs))
		}
		return nil
	})
	waitFor(t, 30*time.Second, func() error {
		entries, _, err := a.c.Coordinate().Node("coord-a", nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || reflect.DeepEqual(entries[0].Coord, origin) {
			return errorf("coord-a's stored coordinate %s has not moved from the origin", jsonOf(entries))
		}
		return nil
	})
}
