package xdsclient

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/xds"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

const (
	proxyID = "web-sidecar-proxy"
	within  = 10 * time.Second // a deadline, not a delay
)

func snapshot(version uint64, leaf string, endpoints ...string) *proxycfg.Snapshot {
	var eps []proxycfg.Endpoint
	for _, e := range endpoints {
		eps = append(eps, proxycfg.Endpoint{Address: e, Port: 21000, Weight: 1})
	}
	return &proxycfg.Snapshot{
		ProxyID: proxyID, Service: "web", Datacenter: "dc1", TrustDomain: "td.consul",
		Address: "127.0.0.1", Port: 21000, LocalAddress: "127.0.0.1", LocalPort: 8080, Protocol: "tcp",
		Leaf:  &proxycfg.Leaf{CertPEM: leaf, PrivateKeyPEM: "KEY"},
		Roots: []string{"ROOT"},
		Upstreams: []proxycfg.Upstream{{
			Name: "db", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "tcp", Endpoints: eps,
		}},
		Version: version,
	}
}

// agent is an xDS server on a gRPC server, which records the requests it
// receives.
type agent struct {
	xds  *xds.Server
	g    *grpc.Server
	addr string
	wg   sync.WaitGroup

	mu   sync.Mutex
	reqs []*discoveryv3.DiscoveryRequest // guarded by mu
	got  chan struct{}                   // receives after each request, never blocks
}

// startAgent serves a new xDS server on addr ("127.0.0.1:0" for any port)
// holding snap; cleanup stops it if the test did not.
func startAgent(t *testing.T, addr string, snap *proxycfg.Snapshot) *agent {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{xds: xds.New(nil), addr: ln.Addr().String(), got: make(chan struct{}, 1)}
	if err := a.xds.Update(snap); err != nil {
		t.Fatal(err)
	}
	a.g = grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, recordingStream{ss, a})
	}))
	a.xds.Register(a.g)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		_ = a.g.Serve(ln)
	}()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) stop() {
	a.xds.Close()
	a.g.Stop()
	a.wg.Wait()
}

func (a *agent) requests() []*discoveryv3.DiscoveryRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), a.reqs...)
}

type recordingStream struct {
	grpc.ServerStream
	a *agent
}

func (s recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*discoveryv3.DiscoveryRequest); ok && err == nil {
		s.a.mu.Lock()
		s.a.reqs = append(s.a.reqs, r)
		s.a.mu.Unlock()
		select {
		case s.a.got <- struct{}{}:
		default:
		}
	}
	return err
}

// applier records the configurations it is given; fail, if set, decides
// which it refuses.
type applier struct {
	fail func(proxy.Config) error

	mu      sync.Mutex
	applied []proxy.Config // guarded by mu
	refused int            // guarded by mu
	changed chan struct{}  // receives after each Apply, never blocks
}

func (f *applier) Apply(cfg proxy.Config) error {
	var err error
	if f.fail != nil {
		err = f.fail(cfg)
	}
	f.mu.Lock()
	if err == nil {
		f.applied = append(f.applied, cfg)
	} else {
		f.refused++
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return err
}

// waitFor returns the first applied configuration ok accepts, waiting
// for it until the deadline.
func (f *applier) waitFor(t *testing.T, what string, ok func(proxy.Config) bool) proxy.Config {
	t.Helper()
	deadline := time.After(within)
	for {
		f.mu.Lock()
		for _, c := range f.applied {
			if ok(c) {
				f.mu.Unlock()
				return c
			}
		}
		f.mu.Unlock()
		select {
		case <-f.changed:
		case <-deadline:
			t.Fatalf("no configuration with %s applied", what)
		}
	}
}

// run runs a client of addr for proxyID until the test ends.
func run(t *testing.T, addr string, a Applier) {
	t.Helper()
	c, err := New(Options{Target: addr, NodeID: proxyID, Applier: a, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		c.Close()
	})
}

func endpoints(cfg proxy.Config) []string {
	var out []string
	for _, la := range cfg.Endpoints {
		for _, l := range la.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
		}
	}
	return out
}

func leaf(cfg proxy.Config) string {
	for _, s := range cfg.Secrets {
		if s.GetName() == generate.LeafSecret {
			return s.GetTlsCertificate().GetCertificateChain().GetInlineString()
		}
	}
	return ""
}

func hasEndpoints(want ...string) func(proxy.Config) bool {
	return func(c proxy.Config) bool {
		got := endpoints(c)
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	}
}

func TestAppliesCompleteConfigAndUpdates(t *testing.T) {
	ag := startAgent(t, "127.0.0.1:0", snapshot(1, "CERT1", "10.0.0.2"))
	f := &applier{changed: make(chan struct{}, 1)}
	run(t, ag.addr, f)

	cfg := f.waitFor(t, "the first snapshot", func(proxy.Config) bool { return true })
	if len(cfg.Listeners) != 2 || len(cfg.Clusters) != 2 || len(cfg.Endpoints) != 1 || len(cfg.Secrets) != 2 {
		t.Fatalf("first configuration: %d listeners, %d clusters, %d endpoints, %d secrets; want 2, 2, 1, 2",
			len(cfg.Listeners), len(cfg.Clusters), len(cfg.Endpoints), len(cfg.Secrets))
	}
	if got := endpoints(cfg); len(got) != 1 || got[0] != "10.0.0.2:21000" || leaf(cfg) != "CERT1" {
		t.Fatalf("first configuration: endpoints %v, leaf %q; want [10.0.0.2:21000], CERT1", got, leaf(cfg))
	}

	// A new instance of db, and a new leaf, reach the proxy.
	if err := ag.xds.Update(snapshot(2, "CERT2", "10.0.0.2", "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "the new endpoint and leaf", func(c proxy.Config) bool {
		return hasEndpoints("10.0.0.2:21000", "10.0.0.3:21000")(c) && leaf(c) == "CERT2"
	})
}

func TestRefusedConfigIsNACKed(t *testing.T) {
	ag := startAgent(t, "127.0.0.1:0", snapshot(1, "CERT1", "10.0.0.2"))
	f := &applier{changed: make(chan struct{}, 1), fail: func(c proxy.Config) error {
		if hasEndpoints("10.0.0.9:21000")(c) {
			return errors.New("bad endpoint")
		}
		return nil
	}}
	run(t, ag.addr, f)
	f.waitFor(t, "the first snapshot", hasEndpoints("10.0.0.2:21000"))

	if err := ag.xds.Update(snapshot(2, "CERT1", "10.0.0.9")); err != nil {
		t.Fatal(err)
	}
	// The NACK names the endpoints' previous version and the error.
	deadline := time.After(within)
	for !nacked(ag.requests()) {
		select {
		case <-ag.got:
		case <-deadline:
			t.Fatalf("no NACK of the refused endpoints; requests: %v", ag.requests())
		}
	}

	if err := ag.xds.Update(snapshot(3, "CERT1", "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "the later good snapshot", hasEndpoints("10.0.0.3:21000"))
	f.mu.Lock()
	refused := f.refused
	f.mu.Unlock()
	if refused != 1 {
		t.Errorf("Apply refused %d configurations, want 1: the version refused must not be applied again", refused)
	}
}

func nacked(reqs []*discoveryv3.DiscoveryRequest) bool {
	for _, r := range reqs {
		if r.GetTypeUrl() == resource.EndpointType && r.GetErrorDetail() != nil {
			return r.GetVersionInfo() == "1" && r.GetResponseNonce() != "" &&
				r.GetErrorDetail().GetMessage() == "xdsclient: apply: bad endpoint"
		}
	}
	return false
}

func TestReconnectsAfterServerRestart(t *testing.T) {
	ag := startAgent(t, "127.0.0.1:0", snapshot(1, "CERT1", "10.0.0.2"))
	f := &applier{changed: make(chan struct{}, 1)}
	run(t, ag.addr, f)
	f.waitFor(t, "the first snapshot", hasEndpoints("10.0.0.2:21000"))

	ag.stop()
	startAgent(t, ag.addr, snapshot(1, "CERT1", "10.0.0.4"))
	f.waitFor(t, "the restarted agent's snapshot", hasEndpoints("10.0.0.4:21000"))
}
