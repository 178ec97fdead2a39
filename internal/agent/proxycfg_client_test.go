package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// entry decodes a config entry as the servers store it (normalised and
// validated), failing the test if it does not decode.
func entry(t *testing.T, js string) configentry.Entry {
	t.Helper()
	e, err := configentry.DecodeJSON([]byte(js))
	if err != nil {
		t.Fatalf("entry %s: %v", js, err)
	}
	return e
}

// mirrorEntries lists the mirror's entries as "kind/name".
func mirrorEntries(t *testing.T, m *mirror) []string {
	t.Helper()
	rt := m.store.Read()
	defer rt.Abort()
	_, all, err := rt.ConfigEntries(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range all {
		out = append(out, e.GetKind()+"/"+e.GetName())
	}
	return out
}

// The mirror goes from one valid set of the servers' entries to another
// although the store refuses an intermediate state where a service needs
// an L7 protocol it does not have; an entry it cannot apply is reported
// and the others applied; an unchanged set writes nothing.
func TestMirrorEntriesFollowTheServers(t *testing.T) {
	const (
		httpWeb   = `{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}`
		tcpWeb    = `{"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}`
		routerWeb = `{"Kind": "service-router", "Name": "web", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a"}}}]}`
		httpAll   = `{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}`
		tcpAll    = `{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}`
		httpAPI   = `{"Kind": "service-defaults", "Name": "api", "Protocol": "http"}`
		hashAPI   = `{"Kind": "service-resolver", "Name": "api", "LoadBalancer": {"Policy": "ring_hash", "HashPolicies": [{"Field": "header", "FieldValue": "x-user"}]}}`
		routerDB  = `{"Kind": "service-router", "Name": "db", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a"}}}]}`
	)
	m := newMirror()
	set := func(want ...string) error {
		var es []configentry.Entry
		for _, js := range want {
			es = append(es, entry(t, js)) // fresh, as each answer of the servers
		}
		return m.setEntries(es)
	}
	steps := []struct {
		name string
		want []string
		has  []string
	}{
		{"an http service with a router", []string{httpWeb, routerWeb},
			[]string{"service-defaults/web", "service-router/web"}},
		// Setting tcp before deleting the router is refused.
		{"the router deleted and the service made tcp", []string{tcpWeb},
			[]string{"service-defaults/web"}},
		{"hash policies on api under an http default", []string{httpAll, hashAPI},
			[]string{"proxy-defaults/global", "service-resolver/api"}},
		// proxy-defaults' tcp is refused until api's own http is in.
		{"tcp by default, http for api", []string{tcpAll, httpAPI, hashAPI},
			[]string{"proxy-defaults/global", "service-defaults/api", "service-resolver/api"}},
	}
	for _, s := range steps {
		if err := set(s.want...); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := mirrorEntries(t, m); !slices.Equal(got, s.has) {
			t.Fatalf("%s: mirror holds %v, want %v", s.name, got, s.has)
		}
	}
	rt := m.store.Read()
	before, _, _ := rt.ConfigEntries(nil, "")
	rt.Abort()
	if err := set(tcpAll, httpAPI, hashAPI); err != nil {
		t.Fatal(err)
	}
	rt = m.store.Read()
	after, _, _ := rt.ConfigEntries(nil, "")
	_, sd, _ := rt.ConfigEntry(nil, configentry.ServiceDefaults, "api")
	rt.Abort()
	if after != before {
		t.Errorf("the same entries again moved the index from %d to %d", before, after)
	}
	if sd.(*configentry.ServiceConfigEntry).Protocol != "http" {
		t.Errorf("service-defaults/api = %+v", sd)
	}

	// A router on a tcp service: the store refuses it (the servers'
	// validation would have), and the rest of the set is applied.
	err := set(tcpAll, routerDB)
	if err == nil || !strings.Contains(err.Error(), "service-router/db") {
		t.Fatalf("a router on a tcp service: %v, want an error naming service-router/db", err)
	}
	if got, want := mirrorEntries(t, m), []string{"proxy-defaults/global"}; !slices.Equal(got, want) {
		t.Fatalf("mirror holds %v, want %v", got, want)
	}
}

// csn is a connect-proxy instance for db on node, with a check.
func csn(node, addr, id, status string) *structs.CheckServiceNode {
	return &structs.CheckServiceNode{
		Node: &structs.Node{Node: node, Address: addr, Datacenter: "dc1"},
		Service: &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: id, Service: "db-proxy", Port: 21000,
			Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "db"}},
		Checks: []*structs.HealthCheck{
			{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: structs.HealthPassing},
			{Node: node, CheckID: id + "-alive", Name: "alive", Status: status, ServiceID: id, ServiceName: "db-proxy"},
		},
	}
}

// mirrorInstances describes the mirror's instances of name as
// "node/id/status of its check".
func mirrorInstances(t *testing.T, m *mirror, name string) []string {
	t.Helper()
	rt := m.store.Read()
	defer rt.Abort()
	_, csns, err := rt.CheckConnectServiceNodes(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range csns {
		var status []string
		for _, h := range c.Checks {
			status = append(status, h.CheckID+"="+h.Status)
		}
		out = append(out, c.Node.Node+"/"+c.Service.ID+"/"+strings.Join(status, ","))
	}
	slices.Sort(out)
	return out
}

func mirrorNodes(t *testing.T, m *mirror) []string {
	t.Helper()
	rt := m.store.Read()
	defer rt.Abort()
	_, nodes, err := rt.Nodes(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes {
		out = append(out, n.Node)
	}
	return out
}

// The mirror's instances of a service follow the servers' answers:
// added, changed (a check turned critical, a check gone), removed with
// their node, and forgotten; another service's instances stay.
func TestMirrorInstancesFollowTheServers(t *testing.T) {
	m := newMirror()
	other := csn("n3", "10.0.0.3", "cache-proxy", structs.HealthPassing)
	other.Service.Service, other.Service.Proxy.DestinationServiceName = "cache-proxy", "cache"
	if err := m.setInstances("cache", []*structs.CheckServiceNode{other}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		csns  []*structs.CheckServiceNode
		want  []string
		nodes []string
	}{
		{"two instances", []*structs.CheckServiceNode{
			csn("n1", "10.0.0.1", "db-1", structs.HealthPassing), csn("n2", "10.0.0.2", "db-2", structs.HealthPassing)},
			[]string{"n1/db-1/serfHealth=passing,db-1-alive=passing", "n2/db-2/serfHealth=passing,db-2-alive=passing"},
			[]string{"n1", "n2", "n3"}},
		{"one critical", []*structs.CheckServiceNode{
			csn("n1", "10.0.0.1", "db-1", structs.HealthCritical), csn("n2", "10.0.0.2", "db-2", structs.HealthPassing)},
			[]string{"n1/db-1/serfHealth=passing,db-1-alive=critical", "n2/db-2/serfHealth=passing,db-2-alive=passing"},
			[]string{"n1", "n2", "n3"}},
		{"one gone, the other's check gone", func() []*structs.CheckServiceNode {
			c := csn("n2", "10.0.0.2", "db-2", structs.HealthPassing)
			c.Checks = c.Checks[:1]
			return []*structs.CheckServiceNode{c}
		}(), []string{"n2/db-2/serfHealth=passing"}, []string{"n2", "n3"}},
		{"forgotten", nil, nil, []string{"n3"}},
	}
	for _, s := range steps {
		if err := m.setInstances("db", s.csns); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := mirrorInstances(t, m, "db"); !slices.Equal(got, s.want) {
			t.Fatalf("%s: db instances %v, want %v", s.name, got, s.want)
		}
		if got := mirrorNodes(t, m); !slices.Equal(got, s.nodes) {
			t.Fatalf("%s: nodes %v, want %v", s.name, got, s.nodes)
		}
	}
	if got := mirrorInstances(t, m, "cache"); len(got) != 1 {
		t.Fatalf("cache instances %v, want n3's", got)
	}
}

// ---- a client's sources against a real agent's API ----

// startDevAgent starts a dev agent (no gRPC port) and stops it at the
// end of the test.
func startDevAgent(t *testing.T) *Agent {
	t.Helper()
	cfg, err := config.Load([]string{"-dev", "-http-port", "0", "-dns-port", "-1", "-server-port", "0",
		"-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "-1", "-node", "servers"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// httpReads reads an agent's HTTP API, as a client agent reads its
// servers' through the internal RPC.
type httpReads struct {
	addr string
	c    *http.Client
}

func (h *httpReads) get() remoteGet {
	return func(ctx context.Context, path string, q url.Values) (*rpc.HTTPResponse, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr+path+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := h.c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return &rpc.HTTPResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}, err
	}
}

// localServices are a client agent's own services, set by the test.
type localServices struct {
	mu   sync.Mutex
	svcs map[string]*structs.NodeService // guarded by mu
	ch   chan struct{}                   // guarded by mu
}

func (l *localServices) Services() map[string]*structs.NodeService {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*structs.NodeService, len(l.svcs))
	for id, s := range l.svcs {
		out[id] = s.Clone()
	}
	return out
}

func (l *localServices) ServicesChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch
}

func (l *localServices) set(svcs ...*structs.NodeService) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.svcs = make(map[string]*structs.NodeService)
	for _, s := range svcs {
		l.svcs[s.ID] = s
	}
	close(l.ch)
	l.ch = make(chan struct{})
}

// staticCA answers one leaf and one set of roots, and blocks for newer
// ones until the caller gives up.
type staticCA struct{}

func (staticCA) ConnectCARoots(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error) {
	if minIndex > 0 {
		<-ctx.Done()
	}
	return &structs.IndexedCARoots{ActiveRootID: "r1", TrustDomain: "11111111-2222-3333-4444-555555555555.consul",
		Roots: []*structs.CARoot{{ID: "r1", RootCert: "root PEM"}}}, 1, nil
}

func (staticCA) ConnectCALeaf(ctx context.Context, service string, minIndex uint64) (*structs.IssuedCert, bool, error) {
	if minIndex > 0 {
		<-ctx.Done()
	}
	return &structs.IssuedCert{Service: service, CertPEM: "leaf PEM", PrivateKeyPEM: "key PEM", ModifyIndex: 1}, false, nil
}

// snapshots is a proxycfg.Publisher that queues what it gets.
type snapshots struct {
	updates chan *proxycfg.Snapshot
	removes chan string
}

func (q *snapshots) Update(s *proxycfg.Snapshot) { q.updates <- s }
func (q *snapshots) Remove(id string)            { q.removes <- id }

// next returns the next snapshot that satisfies cond, failing the test
// with the last one's description after a deadline.
func (q *snapshots) next(t *testing.T, what string, cond func(*proxycfg.Snapshot) error) *proxycfg.Snapshot {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	last := fmt.Errorf("no snapshot")
	for {
		select {
		case s := <-q.updates:
			if last = cond(s); last == nil {
				return s
			}
		case <-deadline.C:
			t.Fatalf("%s: no snapshot within 10s: %v", what, last)
		}
	}
}

// endpoints describes a snapshot's endpoints of its first upstream.
func endpoints(s *proxycfg.Snapshot) []string {
	var out []string
	if len(s.Upstreams) > 0 {
		for _, e := range s.Upstreams[0].Endpoints {
			out = append(out, fmt.Sprintf("%s:%d", e.Address, e.Port))
		}
	}
	return out
}

func webSidecar(upstream string) *structs.NodeService {
	return &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: "web-sidecar-proxy", Service: "web-sidecar-proxy",
		Port: 21000, Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "web", LocalServicePort: 8080,
			Upstreams: []structs.Upstream{{DestinationName: upstream, LocalBindPort: 9191}}}}
}

// A proxycfg.Manager fed by a client's sources builds its sidecar's
// snapshots from what the servers hold, and follows their changes: its
// first snapshot already has the intentions, config entries and
// upstream instances; instances added, turned critical and removed,
// intentions deleted, an upstream replaced, all reach it; an upstream no
// sidecar has any more is forgotten and its queries stop, as do all of
// them when the last sidecar goes.
func TestClientSourcesFollowTheServers(t *testing.T) {
	srv := startDevAgent(t)
	c, err := api.NewClient(&api.Config{Address: srv.HTTPAddrs()[0]})
	if err != nil {
		t.Fatal(err)
	}
	register := func(node, addr, id, status string) {
		t.Helper()
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: addr,
			Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: id, Service: "db-proxy", Port: 21000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db"}},
			Check: &api.AgentCheck{CheckID: id + "-alive", Name: "alive", Status: status, ServiceID: id}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	register("n1", "127.0.0.11", "db-1", api.HealthPassing)
	if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "evil", DestinationName: "web",
		Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}

	reads := &httpReads{addr: srv.HTTPAddrs()[0], c: &http.Client{}}
	t.Cleanup(reads.c.CloseIdleConnections)
	local := &localServices{svcs: map[string]*structs.NodeService{}, ch: make(chan struct{})}
	local.set(webSidecar("db"))
	cs := newClientSources(local, reads.get, "dc1", nil)
	q := &snapshots{updates: make(chan *proxycfg.Snapshot, 64), removes: make(chan string, 4)}
	m := proxycfg.New(proxycfg.Sources{Store: cs.mirror.store, CA: staticCA{}, Services: cs, Datacenter: "dc1",
		Address: "127.0.0.20"}, q)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { cs.Run(ctx) })
	wg.Go(func() { m.Run(ctx) })
	defer wg.Wait() // every goroutine of the sources and the manager ends
	defer cancel()

	// The first snapshot is the complete one.
	select {
	case s := <-q.updates:
		if got := endpoints(s); !slices.Equal(got, []string{"127.0.0.11:21000"}) || len(s.Intentions) != 1 || s.Protocol != "http" {
			t.Fatalf("first snapshot: endpoints %v, %d intentions, protocol %s; want db-1, evil's intention, http",
				got, len(s.Intentions), s.Protocol)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}

	wantEndpoints := func(what string, want ...string) {
		t.Helper()
		q.next(t, what, func(s *proxycfg.Snapshot) error {
			if got := endpoints(s); !slices.Equal(got, want) {
				return fmt.Errorf("endpoints %v, want %v", got, want)
			}
			return nil
		})
	}
	register("n2", "127.0.0.12", "db-2", api.HealthPassing)
	wantEndpoints("a new instance", "127.0.0.11:21000", "127.0.0.12:21000")
	register("n1", "127.0.0.11", "db-1", api.HealthCritical)
	wantEndpoints("an instance turned critical", "127.0.0.12:21000")
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "n2"}, nil); err != nil {
		t.Fatal(err)
	}
	wantEndpoints("a node deregistered")
	// The node goes in a write of its own, after its last instance.
	eventually(t, "n2 gone from the mirror", func() bool { return slices.Equal(mirrorNodes(t, cs.mirror), []string{"n1"}) })
	if _, err := c.Connect().IntentionDeleteExact("evil", "web", nil); err != nil {
		t.Fatal(err)
	}
	q.next(t, "the intention deleted", func(s *proxycfg.Snapshot) error {
		if len(s.Intentions) != 0 {
			return fmt.Errorf("%d intentions", len(s.Intentions))
		}
		return nil
	})

	// Replace the upstream: db's instances are forgotten, cache's read.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "n3", Address: "127.0.0.13",
		Service: &api.AgentService{ID: "cache", Service: "cache", Port: 6379, Connect: &api.AgentServiceConnect{Native: true}}}, nil); err != nil {
		t.Fatal(err)
	}
	local.set(webSidecar("cache"))
	q.next(t, "the upstream replaced", func(s *proxycfg.Snapshot) error {
		if len(s.Upstreams) != 1 || s.Upstreams[0].Name != "cache" || !slices.Equal(endpoints(s), []string{"127.0.0.13:6379"}) {
			return fmt.Errorf("upstreams %+v", s.Upstreams)
		}
		return nil
	})
	eventually(t, "db's instances forgotten", func() bool { return slices.Equal(mirrorNodes(t, cs.mirror), []string{"n3"}) })

	// The sidecar goes: its snapshot is removed and no query is left.
	local.set()
	select {
	case id := <-q.removes:
		if id != "web-sidecar-proxy" {
			t.Fatalf("removed %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Remove")
	}
	eventually(t, "the sources idle after the last sidecar went", func() bool {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		return !cs.entriesOK && len(cs.synced) == 0
	})
}

// eventually polls cond until it holds, failing the test after a
// deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
