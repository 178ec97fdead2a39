package proxycfg

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// prompt bounds how long a change may take to reach the publisher. The
// goal is well under a second; the bound leaves room for a loaded
// machine running the race detector.
const prompt = 3 * time.Second

// fakeCA serves one leaf (for any service) and the roots, blocking as the
// agent's CA client does.
type fakeCA struct {
	mu       sync.Mutex
	leaf     *structs.IssuedCert     // guarded by mu
	roots    *structs.IndexedCARoots // guarded by mu
	rootsIdx uint64                  // guarded by mu
	ch       chan struct{}           // guarded by mu: closed at each change
	leafFor  map[string]bool         // guarded by mu: services asked for
}

func newFakeCA() *fakeCA {
	f := &fakeCA{ch: make(chan struct{}), leafFor: map[string]bool{}}
	f.setLeaf("leaf-1")
	f.setRoots("root-1")
	return f
}

func (f *fakeCA) changedLocked() {
	close(f.ch)
	f.ch = make(chan struct{})
}

func (f *fakeCA) setLeaf(pem string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var idx uint64 = 1
	if f.leaf != nil {
		idx = f.leaf.ModifyIndex + 1
	}
	f.leaf = &structs.IssuedCert{CertPEM: pem, PrivateKeyPEM: "key-" + pem,
		ValidBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), ModifyIndex: idx}
	f.changedLocked()
}

// setRoots makes active the new active root; the previous roots stay.
func (f *fakeCA) setRoots(active string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &structs.IndexedCARoots{ActiveRootID: active, TrustDomain: "11111111.consul",
		Roots: []*structs.CARoot{{ID: active, RootCert: "PEM " + active, Active: true}}}
	if f.roots != nil {
		for _, old := range f.roots.Roots {
			o := *old
			o.Active = false
			r.Roots = append(r.Roots, &o)
		}
	}
	f.roots = r
	f.rootsIdx++
	f.changedLocked()
}

func (f *fakeCA) leafServices() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.leafFor)
}

func (f *fakeCA) ConnectCALeaf(ctx context.Context, service string, minIndex uint64) (*structs.IssuedCert, bool, error) {
	f.mu.Lock()
	f.leafFor[service] = true
	for {
		if f.leaf != nil && f.leaf.ModifyIndex > minIndex {
			c := *f.leaf
			c.Service = service
			f.mu.Unlock()
			return &c, true, nil
		}
		ch := f.ch
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-ch:
		}
		f.mu.Lock()
	}
}

func (f *fakeCA) ConnectCARoots(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error) {
	f.mu.Lock()
	for {
		if f.roots != nil && f.rootsIdx > minIndex {
			r, idx := f.roots, f.rootsIdx
			f.mu.Unlock()
			return r, idx, nil
		}
		ch := f.ch
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-ch:
		}
		f.mu.Lock()
	}
}

// fakeServices are an agent's local services.
type fakeServices struct {
	mu   sync.Mutex
	svcs map[string]*structs.NodeService // guarded by mu
	ch   chan struct{}                   // guarded by mu
}

func (f *fakeServices) Services() map[string]*structs.NodeService {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]*structs.NodeService, len(f.svcs))
	for id, s := range f.svcs {
		c := *s
		out[id] = &c
	}
	return out
}

func (f *fakeServices) ServicesChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch
}

func (f *fakeServices) put(s *structs.NodeService) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svcs[s.ID] = s
	close(f.ch)
	f.ch = make(chan struct{})
}

func (f *fakeServices) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.svcs, id)
	close(f.ch)
	f.ch = make(chan struct{})
}

// recorder is a Publisher that queues what it gets.
type recorder struct {
	updates chan *Snapshot
	removes chan string
	builds  chan string
}

func (r *recorder) Update(s *Snapshot) { r.updates <- s }
func (r *recorder) Remove(id string)   { r.removes <- id }
func (r *recorder) built(id string)    { r.builds <- id }
func newRecorder() *recorder {
	return &recorder{make(chan *Snapshot, 64), make(chan string, 64), make(chan string, 256)}
}

func (h *harness) store() *state.Store { return h.src.Store }

type harness struct {
	t    *testing.T
	src  Sources
	ca   *fakeCA
	svcs *fakeServices
	rec  *recorder
	idx  uint64
}

// newHarness starts a Manager on an empty store; it is stopped, and
// must have ended, at cleanup.
func newHarness(t *testing.T, opts ...func(*Sources)) *harness {
	h := &harness{t: t, ca: newFakeCA(), rec: newRecorder(),
		svcs: &fakeServices{svcs: map[string]*structs.NodeService{}, ch: make(chan struct{})}}
	h.src = Sources{Store: state.New(), CA: h.ca, Services: h.svcs, Datacenter: "dc1", Address: "10.0.0.1"}
	for _, o := range opts {
		o(&h.src)
	}
	m := New(h.src, h.rec)
	m.built = h.rec.built
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(prompt):
			t.Error("Run did not return after its context ended")
		}
	})
	return h
}

func (h *harness) register(node, addr string, svc *structs.NodeService, checks ...*structs.HealthCheck) {
	h.t.Helper()
	h.idx++
	for _, c := range checks {
		c.Node, c.ServiceID = node, svc.ID
	}
	req := &structs.RegisterRequest{Node: node, Address: addr, Service: svc, Checks: checks}
	if err := h.store().EnsureRegistration(h.idx, req); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) setCheck(node, serviceID, status string) {
	h.t.Helper()
	h.idx++
	req := &structs.RegisterRequest{Node: node, SkipNodeUpdate: true, Check: &structs.HealthCheck{
		Node: node, CheckID: "check-" + serviceID, ServiceID: serviceID, Status: status}}
	if err := h.store().EnsureRegistration(h.idx, req); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) entry(body string) {
	h.t.Helper()
	e, err := configentry.DecodeJSON([]byte(body))
	if err != nil {
		h.t.Fatalf("DecodeJSON(%s): %v", body, err)
	}
	e.Normalize()
	if err := e.Validate(); err != nil {
		h.t.Fatalf("entry %s: %v", body, err)
	}
	h.idx++
	if _, err := h.store().ConfigEntryApply(h.idx, state.ConfigEntryUpsert, "", "", e, 0); err != nil {
		h.t.Fatal(err)
	}
}

// next waits for the next snapshot.
func (h *harness) next() *Snapshot {
	h.t.Helper()
	select {
	case s := <-h.rec.updates:
		return s
	case <-time.After(prompt):
		h.t.Fatalf("no snapshot within %v", prompt)
		return nil
	}
}

// sidecar is an instance of dest's sidecar proxy, passing.
func dbSidecar(id string, port int) *structs.NodeService {
	return &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: id, Service: "db-sidecar-proxy", Port: port,
		Weights: structs.Weights{Passing: 1, Warning: 1},
		Proxy:   &structs.ConnectProxyConfig{DestinationServiceName: "db", LocalServicePort: 5432}}
}

func check(id, status string) *structs.HealthCheck {
	return &structs.HealthCheck{CheckID: id, Status: status}
}

// webProxy is the local proxy the tests watch.
func webProxy() *structs.NodeService {
	return &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: "web-sidecar-proxy", Service: "web-sidecar-proxy",
		Port: 21000,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "web", LocalServicePort: 8080,
			Upstreams: []structs.Upstream{
				{DestinationName: "db", LocalBindPort: 9191, Config: map[string]any{"connect_timeout_ms": float64(750)}},
				{DestinationType: structs.UpstreamDestTypePreparedQuery, DestinationName: "q", LocalBindPort: 9192},
				{DestinationName: "api", LocalBindAddress: "127.0.0.2", LocalBindPort: 9193},
				{DestinationName: "db", Datacenter: "dc2", LocalBindPort: 9194},
			}}}
}

// baseState writes db's instances: two healthy sidecars (one with its
// own address and weight) and a critical one.
func (h *harness) baseState() {
	h.register("n2", "10.0.0.2", dbSidecar("db-1", 21000), check("check-db-1", structs.HealthPassing))
	s := dbSidecar("db-2", 21001)
	s.Address, s.Weights = "10.0.0.9", structs.Weights{Passing: 3, Warning: 1}
	h.register("n3", "10.0.0.3", s, check("check-db-2", structs.HealthPassing))
	h.register("n4", "10.0.0.4", dbSidecar("db-3", 21002), check("check-db-3", structs.HealthCritical))
}

func names(es []*configentry.ServiceIntentionsConfigEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

func TestSnapshotBuilt(t *testing.T) {
	h := newHarness(t)
	h.baseState()
	h.entry(`{"Kind":"service-defaults","Name":"web","Protocol":"http",
		"UpstreamConfig":{"Defaults":{"ConnectTimeoutMs":2000}}}`)
	h.entry(`{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"grpc"}}`)
	h.entry(`{"Kind":"service-defaults","Name":"db","Protocol":"tcp"}`)
	h.entry(`{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"allow"}]}`)
	h.entry(`{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"*","Action":"deny"}]}`)
	h.entry(`{"Kind":"mesh","DefaultIntentionPolicy":"deny"}`)
	h.svcs.put(webProxy())

	s := h.next()
	want := &Snapshot{
		ProxyID: "web-sidecar-proxy", Service: "web", Datacenter: "dc1", TrustDomain: "11111111.consul",
		Address: "10.0.0.1", Port: 21000, LocalAddress: "127.0.0.1", LocalPort: 8080, Protocol: "http",
		Leaf:  &Leaf{CertPEM: "leaf-1", PrivateKeyPEM: "key-leaf-1", ValidBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		Roots: []string{"PEM root-1"},
		Upstreams: []Upstream{
			{Name: "db", Datacenter: "dc1", LocalBindAddress: "127.0.0.1", LocalBindPort: 9191, Protocol: "tcp",
				ConnectTimeout: 750 * time.Millisecond,
				Endpoints:      []Endpoint{{"10.0.0.2", 21000, 1}, {"10.0.0.9", 21001, 3}}},
			{Name: "api", Datacenter: "dc1", LocalBindAddress: "127.0.0.2", LocalBindPort: 9193, Protocol: "grpc",
				ConnectTimeout: 2 * time.Second},
			{Name: "db", Datacenter: "dc2", LocalBindAddress: "127.0.0.1", LocalBindPort: 9194, Protocol: "tcp",
				ConnectTimeout: 2 * time.Second},
		},
		Version: 1,
	}
	if got := names(s.Intentions); !reflect.DeepEqual(got, []string{"web", "*"}) {
		t.Errorf("intentions = %v, want web's then the wildcard's", got)
	}
	if s.DefaultAllow {
		t.Error("DefaultAllow = true, want the mesh entry's deny")
	}
	got := *s
	got.Intentions, got.DefaultAllow = nil, false
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("snapshot =\n%+v\nwant\n%+v", &got, want)
	}
}

func TestSnapshotDefaults(t *testing.T) {
	h := newHarness(t)
	p := webProxy()
	p.Address, p.Proxy.LocalServiceAddress, p.Proxy.Upstreams = "10.1.1.1", "10.2.2.2", nil
	h.svcs.put(p)
	s := h.next()
	if s.Address != "10.1.1.1" || s.LocalAddress != "10.2.2.2" || s.Protocol != "tcp" || !s.DefaultAllow {
		t.Errorf("snapshot = %+v, want the registration's addresses, tcp and allow", s)
	}
}

// With no mesh entry, the ACLs' default decides.
func TestSnapshotDefaultDeny(t *testing.T) {
	h := newHarness(t, func(s *Sources) { s.DefaultDeny = true })
	h.svcs.put(webProxy())
	if s := h.next(); s.DefaultAllow {
		t.Error("DefaultAllow = true, want the ACLs' deny")
	}
	h.entry(`{"Kind":"mesh","DefaultIntentionPolicy":"allow"}`)
	if s := h.next(); !s.DefaultAllow {
		t.Error("DefaultAllow = false, want the mesh entry's allow")
	}
}

// Each change to something a snapshot was built from publishes a new
// snapshot, with the next version.
func TestSnapshotChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *harness)
		check  func(s *Snapshot) error
	}{
		{"upstream instance critical", func(h *harness) { h.setCheck("n2", "db-1", structs.HealthCritical) },
			func(s *Snapshot) error {
				return wantEndpoints(s, []Endpoint{{"10.0.0.9", 21001, 3}})
			}},
		{"upstream instance warning", func(h *harness) { h.setCheck("n3", "db-2", structs.HealthWarning) },
			func(s *Snapshot) error {
				return wantEndpoints(s, []Endpoint{{"10.0.0.2", 21000, 1}, {"10.0.0.9", 21001, 1}})
			}},
		{"upstream instance recovers", func(h *harness) { h.setCheck("n4", "db-3", structs.HealthPassing) },
			func(s *Snapshot) error {
				return wantEndpoints(s, []Endpoint{{"10.0.0.2", 21000, 1}, {"10.0.0.4", 21002, 1}, {"10.0.0.9", 21001, 3}})
			}},
		{"new upstream instance", func(h *harness) {
			h.register("n5", "10.0.0.5", dbSidecar("db-5", 21005), check("check-db-5", structs.HealthPassing))
		}, func(s *Snapshot) error {
			return wantEndpoints(s, []Endpoint{{"10.0.0.2", 21000, 1}, {"10.0.0.5", 21005, 1}, {"10.0.0.9", 21001, 3}})
		}},
		{"upstream instance deregistered", func(h *harness) {
			h.idx++
			if err := h.store().DeleteService(h.idx, "n2", "db-1"); err != nil {
				h.t.Fatal(err)
			}
		}, func(s *Snapshot) error { return wantEndpoints(s, []Endpoint{{"10.0.0.9", 21001, 3}}) }},
		{"intention written", func(h *harness) {
			h.entry(`{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"allow"}]}`)
		}, func(s *Snapshot) error {
			if got := names(s.Intentions); !reflect.DeepEqual(got, []string{"web"}) {
				return fmt.Errorf("intentions %v, want web's", got)
			}
			return nil
		}},
		{"mesh default deny", func(h *harness) { h.entry(`{"Kind":"mesh","DefaultIntentionPolicy":"deny"}`) },
			func(s *Snapshot) error {
				if s.DefaultAllow {
					return fmt.Errorf("DefaultAllow true, want false")
				}
				return nil
			}},
		{"leaf rotated", func(h *harness) { h.ca.setLeaf("leaf-2") }, func(s *Snapshot) error {
			if s.Leaf.CertPEM != "leaf-2" || s.Leaf.PrivateKeyPEM != "key-leaf-2" {
				return fmt.Errorf("leaf %+v, want leaf-2", s.Leaf)
			}
			return nil
		}},
		{"root rotated", func(h *harness) { h.ca.setRoots("root-2") }, func(s *Snapshot) error {
			if want := []string{"PEM root-2", "PEM root-1"}; !reflect.DeepEqual(s.Roots, want) {
				return fmt.Errorf("roots %v, want %v", s.Roots, want)
			}
			return nil
		}},
		{"service protocol", func(h *harness) { h.entry(`{"Kind":"service-defaults","Name":"web","Protocol":"http2"}`) },
			func(s *Snapshot) error {
				if s.Protocol != "http2" {
					return fmt.Errorf("protocol %q, want http2", s.Protocol)
				}
				return nil
			}},
		{"upstream protocol from proxy-defaults", func(h *harness) {
			h.entry(`{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}}`)
		}, func(s *Snapshot) error {
			if s.Protocol != "http" || s.Upstreams[0].Protocol != "http" {
				return fmt.Errorf("protocols %q and %q, want http", s.Protocol, s.Upstreams[0].Protocol)
			}
			return nil
		}},
		{"resolver written", func(h *harness) {
			h.entry(`{"Kind":"service-resolver","Name":"db","ConnectTimeout":"1200ms","RequestTimeout":"9s",
				"LoadBalancer":{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":4}}}`)
		}, func(s *Snapshot) error {
			db, dc2 := s.Upstreams[0], s.Upstreams[2]
			if db.LoadBalancer == nil || db.LoadBalancer.Policy != "least_request" || db.LoadBalancer.LeastRequestConfig.ChoiceCount != 4 ||
				db.RequestTimeout != 9*time.Second {
				return fmt.Errorf("db: load balancer %+v, request timeout %v", db.LoadBalancer, db.RequestTimeout)
			}
			// The registration's connect timeout beats the resolver's.
			if db.ConnectTimeout != 750*time.Millisecond || dc2.ConnectTimeout != 1200*time.Millisecond {
				return fmt.Errorf("connect timeouts %v and %v, want 750ms (registration) and 1.2s (resolver)", db.ConnectTimeout, dc2.ConnectTimeout)
			}
			if s.Upstreams[1].LoadBalancer != nil {
				return fmt.Errorf("api got db's load balancer")
			}
			return nil
		}},
		{"upstream limits from service-defaults", func(h *harness) {
			h.entry(`{"Kind":"service-defaults","Name":"web","UpstreamConfig":{
				"Overrides":[{"Name":"db","Limits":{"MaxConnections":3},"PassiveHealthCheck":{"MaxFailures":2,"Interval":"3s"}}],
				"Defaults":{"Limits":{"MaxPendingRequests":8}}}}`)
		}, func(s *Snapshot) error {
			db, api := s.Upstreams[0], s.Upstreams[1]
			if db.Limits == nil || db.Limits.MaxConnections == nil || *db.Limits.MaxConnections != 3 || db.Limits.MaxPendingRequests != nil {
				return fmt.Errorf("db limits %+v, want the override's", db.Limits)
			}
			if db.PassiveHealthCheck == nil || db.PassiveHealthCheck.MaxFailures != 2 || db.PassiveHealthCheck.Interval != 3*time.Second {
				return fmt.Errorf("db passive health check %+v", db.PassiveHealthCheck)
			}
			if api.Limits == nil || api.Limits.MaxPendingRequests == nil || *api.Limits.MaxPendingRequests != 8 || api.PassiveHealthCheck != nil {
				return fmt.Errorf("api limits %+v / %+v, want the defaults'", api.Limits, api.PassiveHealthCheck)
			}
			return nil
		}},
		{"local timeouts from service-defaults", func(h *harness) {
			h.entry(`{"Kind":"service-defaults","Name":"web","LocalConnectTimeoutMs":1500,"LocalRequestTimeoutMs":20000}`)
		}, func(s *Snapshot) error {
			if s.LocalConnectTimeout != 1500*time.Millisecond || s.LocalRequestTimeout != 20*time.Second {
				return fmt.Errorf("local timeouts %v and %v, want 1.5s and 20s", s.LocalConnectTimeout, s.LocalRequestTimeout)
			}
			return nil
		}},
		{"proxy re-registered on another port", func(h *harness) {
			p := webProxy()
			p.Port = 21500
			h.svcs.put(p)
		}, func(s *Snapshot) error {
			if s.Port != 21500 {
				return fmt.Errorf("port %d, want 21500", s.Port)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.baseState()
			h.svcs.put(webProxy())
			first := h.next()
			tc.change(h)
			s := h.next()
			if s.Version <= first.Version {
				t.Errorf("version %d, want above %d", s.Version, first.Version)
			}
			if err := tc.check(s); err != nil {
				t.Error(err)
			}
		})
	}
}

// A service-router reaches the snapshot of an HTTP upstream, changes
// with it, and goes when it is deleted; a resolver's hash policies
// arrive with it.
func TestSnapshotRoutes(t *testing.T) {
	h := newHarness(t)
	h.baseState()
	h.entry(`{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}}`)
	h.svcs.put(webProxy())
	if s := h.next(); s.Upstreams[0].Routes != nil {
		t.Fatalf("routes %+v before any router", s.Upstreams[0].Routes)
	}
	h.entry(`{"Kind":"service-router","Name":"db","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin"}},
		"Destination":{"RequestTimeout":"2s","NumRetries":2}},{"Match":{"HTTP":{"Methods":["POST"]}}}]}`)
	s := h.next()
	db := s.Upstreams[0]
	if len(db.Routes) != 2 || db.Routes[0].Match.HTTP.PathPrefix != "/admin" || db.Routes[0].Destination.NumRetries != 2 ||
		db.Routes[1].Match.HTTP.Methods[0] != "POST" {
		t.Fatalf("db routes %+v", db.Routes)
	}
	if s.Upstreams[1].Routes != nil {
		t.Errorf("api got db's routes")
	}
	h.entry(`{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"ring_hash","HashPolicies":[{"Field":"header","FieldValue":"x-user"}]}}`)
	if hp := h.next().Upstreams[0].LoadBalancer.HashPolicies; len(hp) != 1 || hp[0].FieldValue != "x-user" {
		t.Fatalf("hash policies %+v", hp)
	}
	h.idx++
	if _, err := h.store().ConfigEntryApply(h.idx, state.ConfigEntryDelete, configentry.ServiceRouter, "db", nil, 0); err != nil {
		t.Fatal(err)
	}
	if s := h.next(); s.Upstreams[0].Routes != nil {
		t.Errorf("routes %+v after the router was deleted", s.Upstreams[0].Routes)
	}
}

func wantEndpoints(s *Snapshot, want []Endpoint) error {
	if got := s.Upstreams[0].Endpoints; !reflect.DeepEqual(got, want) {
		return fmt.Errorf("db endpoints %v, want %v", got, want)
	}
	return nil
}

// A change the proxy's snapshot does not depend on wakes the build (the
// config entries are watched by table) but publishes nothing.
func TestSnapshotUnrelatedChange(t *testing.T) {
	h := newHarness(t)
	h.baseState()
	h.svcs.put(webProxy())
	first := h.next()
	drainBuilds(h)
	h.entry(`{"Kind":"service-defaults","Name":"unrelated","Protocol":"http"}`)
	select {
	case <-h.rec.builds:
	case <-time.After(prompt):
		t.Fatal("no rebuild after a config entry write")
	}
	select {
	case s := <-h.rec.updates:
		t.Fatalf("published version %d after an unrelated change", s.Version)
	default:
	}
	// The next real change is the next version.
	h.ca.setLeaf("leaf-2")
	if s := h.next(); s.Version != first.Version+1 || s.Leaf.CertPEM != "leaf-2" {
		t.Errorf("got version %d with leaf %q, want version %d with leaf-2", s.Version, s.Leaf.CertPEM, first.Version+1)
	}
}

func drainBuilds(h *harness) {
	for {
		select {
		case <-h.rec.builds:
		default:
			return
		}
	}
}

func TestProxyRemoved(t *testing.T) {
	h := newHarness(t)
	h.svcs.put(webProxy())
	first := h.next()
	h.svcs.remove("web-sidecar-proxy")
	select {
	case id := <-h.rec.removes:
		if id != "web-sidecar-proxy" {
			t.Errorf("removed %q, want web-sidecar-proxy", id)
		}
	case <-time.After(prompt):
		t.Fatal("no Remove after deregistration")
	}
	// Registered again, its versions still rise: a stream that
	// outlived the removal never sees an older version.
	h.svcs.put(webProxy())
	if s := h.next(); s.Version <= first.Version {
		t.Errorf("version %d after re-registration, want above %d", s.Version, first.Version)
	}
}

// Only connect-proxy services get a watch, and so a leaf.
func TestOnlyProxiesGetLeaves(t *testing.T) {
	h := newHarness(t)
	h.svcs.put(&structs.NodeService{ID: "api", Service: "api", Port: 8080})
	h.svcs.put(webProxy())
	h.next()
	if got := h.ca.leafServices(); !reflect.DeepEqual(got, map[string]bool{"web": true}) {
		t.Errorf("leaves asked for %v, want only web's", got)
	}
}
