package generate

import (
	"bytes"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// proxylessSnapshot is web's proxy with the upstreams a gRPC client of
// web dials: db (two listeners in the sidecar, one here) and billing in
// another datacenter, with no instances known.
func proxylessSnapshot() *proxycfg.Snapshot {
	return &proxycfg.Snapshot{
		ProxyID: "web-sidecar-proxy", Service: "web", Datacenter: "dc1", TrustDomain: "11111111-2222-3333-4444-555555555555.consul",
		Address: "10.0.0.1", Port: 21000, LocalAddress: "127.0.0.1", LocalPort: 8080, Protocol: "grpc",
		Leaf:  &proxycfg.Leaf{CertPEM: "CERT", PrivateKeyPEM: "KEY"},
		Roots: []string{"ROOT"},
		Upstreams: []proxycfg.Upstream{
			{Name: "db", LocalBindPort: 9191, Protocol: "grpc", Endpoints: []proxycfg.Endpoint{
				{Address: "10.0.0.2", Port: 21000, Weight: 1}, {Address: "10.0.0.3", Port: 21001, Weight: 0}, {Address: "10.0.0.4", Port: 21000, Weight: 5},
			}},
			{Name: "db", Datacenter: "dc1", LocalBindAddress: "127.0.0.2", LocalBindPort: 9192, Protocol: "grpc"},
			{Name: "billing", Datacenter: "dc2", LocalBindPort: 9193, Protocol: "http2"},
		},
		Version: 3,
	}
}

func TestProxylessGolden(t *testing.T) {
	snap := proxylessSnapshot()
	res, err := ProxylessResources(snap)
	if err != nil {
		t.Fatalf("ProxylessResources: %v", err)
	}
	for typ, rs := range res {
		for _, r := range rs {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				t.Errorf("%s %q: ValidateAll: %v", typ, cache.GetResourceName(r), err)
			}
		}
	}
	checkProxylessReferences(t, res)
	if got := names(res[resource.ListenerType]); got != "db billing" {
		t.Errorf("listeners %q, want one per upstream name: db billing", got)
	}

	got := checkGolden(t, "proxyless_two_upstreams", res)
	again, err := ProxylessResources(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(render(t, again), got) {
		t.Errorf("second generation differs")
	}
}

func names(rs []types.Resource) string {
	var out []string
	for _, r := range rs {
		out = append(out, cache.GetResourceName(r))
	}
	return strings.Join(out, " ")
}

// checkProxylessReferences follows what a gRPC client follows: listener
// → RDS route → cluster → its EDS load assignment, and finds each.
// go-control-plane's Consistent cannot: it does not look inside API
// listeners.
func checkProxylessReferences(t *testing.T, res map[resource.Type][]types.Resource) {
	t.Helper()
	byName := func(typ resource.Type) map[string]types.Resource {
		m := map[string]types.Resource{}
		for _, r := range res[typ] {
			m[cache.GetResourceName(r)] = r
		}
		return m
	}
	routes, clusters, endpoints := byName(resource.RouteType), byName(resource.ClusterType), byName(resource.EndpointType)
	for _, r := range res[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
			t.Fatalf("listener %q: api_listener: %v", l.Name, err)
		}
		if fs := hcm.HttpFilters; len(fs) != 1 || fs[0].Name != "envoy.filters.http.router" {
			t.Errorf("listener %q: http filters %v, want the router alone", l.Name, fs)
		}
		if hcm.GetRds().GetConfigSource().GetAds() == nil {
			t.Errorf("listener %q: RDS not over ADS", l.Name)
		}
		rc, ok := routes[hcm.GetRds().GetRouteConfigName()].(*routev3.RouteConfiguration)
		if !ok {
			t.Fatalf("listener %q: route %q missing", l.Name, hcm.GetRds().GetRouteConfigName())
		}
		name := rc.VirtualHosts[0].Routes[0].GetRoute().GetCluster()
		c, ok := clusters[name].(*clusterv3.Cluster)
		if !ok {
			t.Fatalf("route %q: cluster %q missing", rc.Name, name)
		}
		if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || c.LbPolicy != clusterv3.Cluster_ROUND_ROBIN {
			t.Errorf("cluster %q: want EDS over ADS, round robin", name)
		}
		la, ok := endpoints[c.GetEdsClusterConfig().GetServiceName()].(*endpointv3.ClusterLoadAssignment)
		if !ok {
			t.Fatalf("cluster %q: load assignment missing", name)
		}
		for _, loc := range la.Endpoints {
			if loc.Locality == nil || loc.LoadBalancingWeight.GetValue() < 1 {
				t.Errorf("cluster %q: locality %v weight %v, want a locality of weight ≥ 1", name, loc.Locality, loc.LoadBalancingWeight)
			}
		}
	}
	for typ, want := range map[resource.Type]int{resource.RouteType: len(routes), resource.ClusterType: len(clusters), resource.EndpointType: len(endpoints)} {
		if n := len(res[resource.ListenerType]); n != want {
			t.Errorf("%d listeners but %d %s: each listener has its own", n, want, typ)
		}
	}
}

func TestProxylessErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(s *proxycfg.Snapshot)
		want   string
	}{
		{"no service", func(s *proxycfg.Snapshot) { s.Service = "" }, "no service name"},
		{"no trust domain", func(s *proxycfg.Snapshot) { s.TrustDomain = "" }, "no trust domain"},
		{"unnamed upstream", func(s *proxycfg.Snapshot) { s.Upstreams = append(s.Upstreams, proxycfg.Upstream{LocalBindPort: 1}) }, "upstream with no name"},
		{"one name in two datacenters", func(s *proxycfg.Snapshot) {
			s.Upstreams = append(s.Upstreams, proxycfg.Upstream{Name: "db", Datacenter: "dc3", LocalBindPort: 9999})
		}, `upstream "db" is in datacenters "dc1" and "dc3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := proxylessSnapshot()
			tc.modify(s)
			res, err := ProxylessResources(s)
			if err == nil || res != nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `proxy "web-sidecar-proxy": proxyless`) {
				t.Fatalf("got %v, %v; want no resources and an error naming the proxy and containing %q", res, err, tc.want)
			}
		})
	}
	if _, err := ProxylessResources(nil); err == nil {
		t.Error("nil snapshot: no error")
	}
}
