package xds

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

const (
	proxyID    = "web-sidecar-proxy"
	dbCluster  = "db.default.dc1.internal.td.consul"
	recvWithin = 10 * time.Second // a deadline, not a delay: tests end as soon as the event arrives
)

func snapshot(version uint64, endpoints ...proxycfg.Endpoint) *proxycfg.Snapshot {
	return &proxycfg.Snapshot{
		ProxyID: proxyID, Service: "web", Datacenter: "dc1", TrustDomain: "td.consul",
		Address: "127.0.0.1", Port: 21000, LocalAddress: "127.0.0.1", LocalPort: 8080, Protocol: "tcp",
		Leaf:  &proxycfg.Leaf{CertPEM: "CERT", PrivateKeyPEM: "KEY"},
		Roots: []string{"ROOT"},
		Upstreams: []proxycfg.Upstream{{
			Name: "db", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "tcp", Endpoints: endpoints,
		}},
		Version: version,
	}
}

// serve runs s on a gRPC server on 127.0.0.1:0 and returns a client
// connection to it; cleanup ends both and waits for the server.
func serve(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = g.Serve(ln)
	}()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		s.Close()
		g.GracefulStop() // returns once Close has ended the streams
		wg.Wait()
	})
	return cc
}

func endpointsOf(t *testing.T, a *anypb.Any) []string {
	t.Helper()
	var la endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&la); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range la.Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.Address, strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	return out
}

// sotwStream serves snap from a new Server and opens a state-of-the-world
// ADS stream to it, which ends within recvWithin or with the test.
func sotwStream(t *testing.T, snap *proxycfg.Snapshot) (*Server, discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	t.Helper()
	s, cc, ctx := serveSnapshot(t, snap)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, stream
}

// deltaStream is sotwStream for the delta protocol.
func deltaStream(t *testing.T, snap *proxycfg.Snapshot) (*Server, discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) {
	t.Helper()
	s, cc, ctx := serveSnapshot(t, snap)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, stream
}

func serveSnapshot(t *testing.T, snap *proxycfg.Snapshot) (*Server, *grpc.ClientConn, context.Context) {
	t.Helper()
	s := New(nil)
	if err := s.Update(snap); err != nil {
		t.Fatal(err)
	}
	cc := serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), recvWithin)
	t.Cleanup(cancel)
	return s, cc, ctx
}

func TestADSStateOfTheWorld(t *testing.T) {
	s, stream := sotwStream(t, snapshot(1, proxycfg.Endpoint{Address: "10.0.0.2", Port: 21000, Weight: 1}))
	node := &corev3.Node{Id: proxyID}
	requests := map[string][]string{
		resource.ClusterType:  nil,
		resource.ListenerType: nil,
		resource.EndpointType: {dbCluster},
		resource.SecretType:   {generate.LeafSecret, generate.RootsSecret},
	}
	for typ, names := range requests {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
	}
	// recv answers until want reports it has what it waits for, ACKing
	// every response as Envoy does.
	recv := func(want func(*discoverygrpc.DiscoveryResponse) bool) {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo,
				ResponseNonce: resp.Nonce, ResourceNames: requests[resp.TypeUrl]}); err != nil {
				t.Fatal(err)
			}
			if want(resp) {
				return
			}
		}
	}
	counts := map[string]int{}
	recv(func(r *discoverygrpc.DiscoveryResponse) bool {
		if r.VersionInfo != "1" {
			t.Fatalf("%s: version %q, want 1", r.TypeUrl, r.VersionInfo)
		}
		counts[r.TypeUrl] = len(r.Resources)
		if r.TypeUrl == resource.EndpointType {
			if got := endpointsOf(t, r.Resources[0]); len(got) != 1 || got[0] != "10.0.0.2:21000" {
				t.Fatalf("endpoints %v, want [10.0.0.2:21000]", got)
			}
		}
		return len(counts) == len(requests)
	})
	want := map[string]int{resource.ClusterType: 2, resource.ListenerType: 2, resource.EndpointType: 1, resource.SecretType: 2}
	for typ, n := range want {
		if counts[typ] != n {
			t.Errorf("%s: %d resources, want %d", typ, counts[typ], n)
		}
	}

	// A new instance of db reaches the connected proxy.
	if err := s.Update(snapshot(2, proxycfg.Endpoint{Address: "10.0.0.2", Port: 21000, Weight: 1}, proxycfg.Endpoint{Address: "10.0.0.3", Port: 21000, Weight: 1})); err != nil {
		t.Fatal(err)
	}
	recv(func(r *discoverygrpc.DiscoveryResponse) bool {
		if r.TypeUrl != resource.EndpointType {
			return false
		}
		if r.VersionInfo != "2" {
			t.Fatalf("endpoints version %q, want 2", r.VersionInfo)
		}
		if got := endpointsOf(t, r.Resources[0]); len(got) != 2 || got[1] != "10.0.0.3:21000" {
			t.Fatalf("endpoints %v, want 10.0.0.2:21000 and 10.0.0.3:21000", got)
		}
		return true
	})
}

func TestADSDelta(t *testing.T) {
	s, stream := deltaStream(t, snapshot(1, proxycfg.Endpoint{Address: "10.0.0.2", Port: 21000, Weight: 1}))
	node := &corev3.Node{Id: proxyID}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{dbCluster}}); err != nil {
		t.Fatal(err)
	}
	recv := func(want func(*discoverygrpc.DeltaDiscoveryResponse) bool) {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
				t.Fatal(err)
			}
			if want(resp) {
				return
			}
		}
	}
	var clusters []string
	gotEDS := false
	recv(func(r *discoverygrpc.DeltaDiscoveryResponse) bool {
		for _, res := range r.Resources {
			switch r.TypeUrl {
			case resource.ClusterType:
				clusters = append(clusters, res.Name)
			case resource.EndpointType:
				if got := endpointsOf(t, res.Resource); len(got) != 1 {
					t.Fatalf("endpoints %v, want one", got)
				}
				gotEDS = true
			}
		}
		return len(clusters) > 0 && gotEDS
	})
	if len(clusters) != 2 {
		t.Errorf("clusters %v, want local_app and %s", clusters, dbCluster)
	}

	// Only the changed load assignment is sent again.
	if err := s.Update(snapshot(2, proxycfg.Endpoint{Address: "10.0.0.3", Port: 21000, Weight: 1})); err != nil {
		t.Fatal(err)
	}
	recv(func(r *discoverygrpc.DeltaDiscoveryResponse) bool {
		if r.TypeUrl == resource.ClusterType && len(r.Resources) > 0 {
			t.Fatalf("unchanged clusters sent again: %v", r.Resources)
		}
		if r.TypeUrl != resource.EndpointType || len(r.Resources) == 0 {
			return false
		}
		if got := endpointsOf(t, r.Resources[0].Resource); len(got) != 1 || got[0] != "10.0.0.3:21000" {
			t.Fatalf("endpoints %v, want [10.0.0.3:21000]", got)
		}
		return true
	})
}

func TestUpdateErrors(t *testing.T) {
	s := New(nil)
	defer s.Close()
	if err := s.Update(&proxycfg.Snapshot{}); err == nil {
		t.Error("Update with no proxy ID succeeded")
	}
	bad := snapshot(1)
	bad.Leaf = nil
	if err := s.Update(bad); err == nil {
		t.Error("Update with no leaf succeeded")
	}
}

// httpSnapshot has an http upstream "api" whose router sends /admin
// with a 2 s timeout, and the version given.
func httpSnapshot(version uint64, adminTimeout time.Duration) *proxycfg.Snapshot {
	s := snapshot(version)
	s.Protocol = "http"
	s.Upstreams = []proxycfg.Upstream{{
		Name: "api", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "http",
		Endpoints: []proxycfg.Endpoint{{Address: "10.0.0.2", Port: 21000, Weight: 1}},
		Routes: []configentry.ServiceRoute{{
			Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin"}},
			Destination: &configentry.ServiceRouteDestination{RequestTimeout: adminTimeout},
		}},
	}}
	return s
}

// rdsNames are the route configurations the listeners fetch by RDS.
func rdsNames(t *testing.T, resources []*anypb.Any) []string {
	t.Helper()
	var out []string
	for _, a := range resources {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				if rds := hcm.GetRds(); rds != nil {
					out = append(out, rds.RouteConfigName)
				}
			}
		}
	}
	return out
}

func adminTimeoutOf(t *testing.T, a *anypb.Any) (string, time.Duration) {
	t.Helper()
	var rc routev3.RouteConfiguration
	if err := a.UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	routes := rc.VirtualHosts[0].Routes
	if len(routes) != 2 || routes[0].Match.GetPrefix() != "/admin" || routes[1].Match.GetPrefix() != "/" {
		t.Fatalf("routes %v, want /admin then the catch-all", routes)
	}
	return rc.Name, routes[0].GetRoute().GetTimeout().AsDuration()
}

// Routes are served over ADS as Envoy asks for them: the listeners name
// their RDS route configurations, which the proxy then requests, and a
// changed router reaches it.
func TestADSRoutes(t *testing.T) {
	s, stream := sotwStream(t, httpSnapshot(1, 2*time.Second))
	node := &corev3.Node{Id: proxyID}
	names := map[string][]string{}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	// next answers (ACKing) until one of typ arrives.
	next := func(typ string) *discoverygrpc.DiscoveryResponse {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo,
				ResponseNonce: resp.Nonce, ResourceNames: names[resp.TypeUrl]}); err != nil {
				t.Fatal(err)
			}
			if resp.TypeUrl == typ {
				return resp
			}
		}
	}
	rds := rdsNames(t, next(resource.ListenerType).Resources)
	if len(rds) != 1 || rds[0] != "api" {
		t.Fatalf("listeners fetch routes %v, want [api]", rds)
	}
	names[resource.RouteType] = rds
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNames: rds}); err != nil {
		t.Fatal(err)
	}
	r := next(resource.RouteType)
	if len(r.Resources) != 1 || r.VersionInfo != "1" {
		t.Fatalf("routes version %q: %d resources, want 1", r.VersionInfo, len(r.Resources))
	}
	if name, timeout := adminTimeoutOf(t, r.Resources[0]); name != "api" || timeout != 2*time.Second {
		t.Fatalf("route configuration %q with /admin timeout %v, want api and 2s", name, timeout)
	}

	if err := s.Update(httpSnapshot(2, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	r = next(resource.RouteType)
	if _, timeout := adminTimeoutOf(t, r.Resources[0]); r.VersionInfo != "2" || timeout != 5*time.Second {
		t.Fatalf("routes version %q with /admin timeout %v, want 2 and 5s", r.VersionInfo, timeout)
	}
}

// Over delta ADS, a subscription to the route configuration gets it.
func TestADSDeltaRoutes(t *testing.T) {
	_, stream := deltaStream(t, httpSnapshot(1, 3*time.Second))
	node := &corev3.Node{Id: proxyID}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNamesSubscribe: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
			t.Fatal(err)
		}
		if resp.TypeUrl != resource.RouteType || len(resp.Resources) == 0 {
			continue
		}
		if name, timeout := adminTimeoutOf(t, resp.Resources[0].Resource); name != "api" || timeout != 3*time.Second {
			t.Fatalf("route configuration %q with /admin timeout %v, want api and 3s", name, timeout)
		}
		return
	}
}
