package xdsclient

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

// RDS, with resources made by hand (the generator emits inline routes so
// far): a listener whose HTTP connection manager names its route
// configuration, which names a cluster.

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func rdsListener(t *testing.T, name, routeConfig string) *listenerv3.Listener {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: routeConfig}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9191}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)},
		}}}},
	}
}

func tcpListener(t *testing.T, name, cluster string) *listenerv3.Listener {
	l := rdsListener(t, name, "")
	l.FilterChains[0].Filters[0] = &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: mustAny(t, &tcpproxyv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}),
	}}
	return l
}

func routeConfigTo(name, cluster string, timeout time.Duration) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: name, Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(timeout),
			}},
		}},
	}}}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		ConnectTimeout:       durationpb.New(time.Second),
	}
}

func cla(name string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name}
}

// rawAgent is an ADS server of resources set by hand, recording the
// requests it receives.
type rawAgent struct {
	cache cache.SnapshotCache
	addr  string

	mu   sync.Mutex
	reqs []*discoveryv3.DiscoveryRequest // guarded by mu
}

func startRawAgent(t *testing.T) *rawAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawAgent{cache: cache.NewSnapshotCache(true, cache.IDHash{}, nil), addr: ln.Addr().String()}
	ctx, stop := context.WithCancel(context.Background())
	srv := server.NewServer(ctx, a.cache, nil)
	g := grpc.NewServer(grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(s, rawRecorder{ss, a})
	}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	var wg sync.WaitGroup
	wg.Go(func() { g.Serve(ln) })
	t.Cleanup(func() {
		stop()
		g.Stop()
		wg.Wait()
	})
	return a
}

type rawRecorder struct {
	grpc.ServerStream
	a *rawAgent
}

func (r rawRecorder) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if req, ok := m.(*discoveryv3.DiscoveryRequest); ok && err == nil {
		r.a.mu.Lock()
		r.a.reqs = append(r.a.reqs, req)
		r.a.mu.Unlock()
	}
	return err
}

func (a *rawAgent) set(t *testing.T, version string, rs ...cachetypes.Resource) {
	t.Helper()
	byType := map[resource.Type][]cachetypes.Resource{}
	for _, r := range rs {
		var typ resource.Type
		switch r.(type) {
		case *listenerv3.Listener:
			typ = resource.ListenerType
		case *routev3.RouteConfiguration:
			typ = resource.RouteType
		case *clusterv3.Cluster:
			typ = resource.ClusterType
		case *endpointv3.ClusterLoadAssignment:
			typ = resource.EndpointType
		}
		byType[typ] = append(byType[typ], r)
	}
	snap, err := cache.NewSnapshot(version, byType)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cache.SetSnapshot(context.Background(), proxyID, snap); err != nil {
		t.Fatal(err)
	}
}

func (a *rawAgent) routeNames() [][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out [][]string
	for _, r := range a.reqs {
		if r.GetTypeUrl() == resource.RouteType {
			out = append(out, r.GetResourceNames())
		}
	}
	return out
}

func routeTimeout(c proxy.Config) time.Duration {
	if len(c.Routes) != 1 {
		return -1
	}
	return c.Routes[0].GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetTimeout().AsDuration()
}

func TestRDS(t *testing.T) {
	ag := startRawAgent(t)
	ag.set(t, "1", rdsListener(t, "svc", "svc-routes"), routeConfigTo("svc-routes", "c", time.Second), edsCluster("c"), cla("c"))
	f := &applier{changed: make(chan struct{}, 1)}
	run(t, ag.addr, f)

	cfg := f.waitFor(t, "the route configuration", func(c proxy.Config) bool { return routeTimeout(c) == time.Second })
	if len(cfg.Listeners) != 1 || len(cfg.Clusters) != 1 || len(cfg.Endpoints) != 1 || cfg.Routes[0].GetName() != "svc-routes" {
		t.Fatalf("applied %d listeners, %d clusters, %d endpoints, routes %v", len(cfg.Listeners), len(cfg.Clusters), len(cfg.Endpoints), cfg.Routes)
	}
	for _, names := range ag.routeNames() {
		if !slices.Equal(names, []string{"svc-routes"}) {
			t.Errorf("RDS subscription %v, want [svc-routes]", names)
		}
	}

	// A new version of the route configuration alone is applied.
	ag.set(t, "2", rdsListener(t, "svc", "svc-routes"), routeConfigTo("svc-routes", "c", 2*time.Second), edsCluster("c"), cla("c"))
	f.waitFor(t, "the new route configuration", func(c proxy.Config) bool { return routeTimeout(c) == 2*time.Second })

	// A listener that names no route configuration any more: the
	// subscription is dropped and the routes leave the configuration.
	ag.set(t, "3", tcpListener(t, "svc", "c"), edsCluster("c"), cla("c"))
	f.waitFor(t, "no routes", func(c proxy.Config) bool { return len(c.Routes) == 0 && len(c.Listeners) == 1 })
	deadline := time.After(within)
	for {
		names := ag.routeNames()
		if len(names) > 0 && len(names[len(names)-1]) == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("RDS subscriptions %v, want the last one empty", names)
		case <-time.After(time.Millisecond): // polling interval
		}
	}
}

func TestAssembleConsistency(t *testing.T) {
	msgs := func(ms ...proto.Message) map[string]proto.Message {
		out := map[string]proto.Message{}
		for _, m := range ms {
			switch r := m.(type) {
			case *listenerv3.Listener:
				out[r.GetName()] = r
			case *routev3.RouteConfiguration:
				out[r.GetName()] = r
			case *clusterv3.Cluster:
				out[r.GetName()] = r
			case *endpointv3.ClusterLoadAssignment:
				out[r.GetClusterName()] = r
			}
		}
		return out
	}
	l := msgs(rdsListener(t, "svc", "r"))
	for _, tc := range []struct {
		name      string
		listeners map[string]proto.Message
		clusters  map[string]proto.Message
		routes    map[string]proto.Message
		endpoints map[string]proto.Message
		want      bool
	}{
		{"complete", l, msgs(edsCluster("c")), msgs(routeConfigTo("r", "c", 0)), msgs(cla("c")), true},
		{"no route configuration yet", l, msgs(edsCluster("c")), nil, msgs(cla("c")), false},
		{"route to a cluster not there yet", l, msgs(edsCluster("c")), msgs(routeConfigTo("r", "d", 0)), msgs(cla("c")), false},
		{"no load assignment yet", l, msgs(edsCluster("c")), msgs(routeConfigTo("r", "c", 0)), nil, false},
		{"tcp_proxy to a cluster not there yet", msgs(tcpListener(t, "svc", "d")), msgs(edsCluster("c")), nil, msgs(cla("c")), false},
		{"unreferenced route configuration left out", msgs(tcpListener(t, "svc", "c")), msgs(edsCluster("c")), msgs(routeConfigTo("r", "d", 0)), msgs(cla("c")), true},
	} {
		cfg, ok := assemble(tc.listeners, tc.clusters, tc.routes, tc.endpoints, nil)
		if ok != tc.want {
			t.Errorf("%s: consistent = %v, want %v", tc.name, ok, tc.want)
		}
		if ok && tc.routes != nil && tc.name == "complete" && len(cfg.Routes) != 1 {
			t.Errorf("%s: routes %v", tc.name, cfg.Routes)
		}
		if ok && tc.name == "unreferenced route configuration left out" && len(cfg.Routes) != 0 {
			t.Errorf("%s: routes %v", tc.name, cfg.Routes)
		}
	}
}
