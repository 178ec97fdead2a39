package generate

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// text is m in the text format without whitespace: protobuf-go varies
// the spacing on purpose, and the values here contain none.
func text(m proto.Message) string {
	return strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(m)), "")
}

func squash(s string) string { return strings.Join(strings.Fields(s), "") }

// A passive health check maps as Consul's does, Envoy's defaults filling
// in the rest.
func TestOutlierDetection(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *configentry.PassiveHealthCheck
		want string
	}{
		{"none: Envoy's defaults", nil, `consecutive_5xx:{value:5} interval:{seconds:10} base_ejection_time:{seconds:30} max_ejection_percent:{value:10} enforcing_consecutive_5xx:{value:100} consecutive_gateway_failure:{value:5} enforcing_consecutive_gateway_failure:{} max_ejection_time:{seconds:300}`},
		{"MaxFailures is consecutive_5xx", &configentry.PassiveHealthCheck{MaxFailures: 2, Interval: time.Second},
			`consecutive_5xx:{value:2} interval:{seconds:1} base_ejection_time:{seconds:30} max_ejection_percent:{value:10} enforcing_consecutive_5xx:{value:100} consecutive_gateway_failure:{value:5} enforcing_consecutive_gateway_failure:{} max_ejection_time:{seconds:300}`},
		{"Consecutive5xx wins over MaxFailures; the rest as given", &configentry.PassiveHealthCheck{MaxFailures: 2, Consecutive5xx: u32(7),
			ConsecutiveGatewayFailure: u32(3), EnforcingConsecutive5xx: u32(0), EnforcingConsecutiveGatewayFailure: u32(100), MaxEjectionPercent: u32(100),
			BaseEjectionTime: dur(time.Minute)},
			`consecutive_5xx:{value:7} interval:{seconds:10} base_ejection_time:{seconds:60} max_ejection_percent:{value:100} enforcing_consecutive_5xx:{} consecutive_gateway_failure:{value:3} enforcing_consecutive_gateway_failure:{value:100} max_ejection_time:{seconds:300}`},
		{"max ejection time never below the base", &configentry.PassiveHealthCheck{BaseEjectionTime: dur(time.Hour)},
			`consecutive_5xx:{value:5} interval:{seconds:10} base_ejection_time:{seconds:3600} max_ejection_percent:{value:10} enforcing_consecutive_5xx:{value:100} consecutive_gateway_failure:{value:5} enforcing_consecutive_gateway_failure:{} max_ejection_time:{seconds:3600}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			od := outlierDetection(tc.p)
			if err := od.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			if got := text(od); got != squash(tc.want) {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestCircuitBreakers(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, tc := range []struct {
		name string
		l    *proxycfg.Limits
		want string
	}{
		{"no limits: the retry budget only", nil, `thresholds:{retry_budget:{budget_percent:{value:20} min_retry_concurrency:{value:3}}}`},
		{"limits", &proxycfg.Limits{MaxConnections: n(10), MaxPendingRequests: n(0), MaxConcurrentRequests: n(30)},
			`thresholds:{max_connections:{value:10} max_pending_requests:{} max_requests:{value:30} retry_budget:{budget_percent:{value:20} min_retry_concurrency:{value:3}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := text(circuitBreakers(tc.l)); got != squash(tc.want) {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestLBPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		lb   *configentry.LoadBalancer
		want string
	}{
		{"none", nil, ``},
		{"round robin", &configentry.LoadBalancer{Policy: "round_robin"}, ``},
		{"random", &configentry.LoadBalancer{Policy: "random"}, `lb_policy:RANDOM`},
		{"least request default", &configentry.LoadBalancer{Policy: "least_request"}, `lb_policy:LEAST_REQUEST least_request_lb_config:{choice_count:{value:2}}`},
		{"ring hash defaults", &configentry.LoadBalancer{Policy: "ring_hash"},
			`lb_policy:RING_HASH ring_hash_lb_config:{minimum_ring_size:{value:1024} maximum_ring_size:{value:8388608}}`},
		{"ring hash small maximum lowers the minimum", &configentry.LoadBalancer{Policy: "ring_hash", RingHashConfig: &configentry.RingHashConfig{MaximumRingSize: 256}},
			`lb_policy:RING_HASH ring_hash_lb_config:{minimum_ring_size:{value:256} maximum_ring_size:{value:256}}`},
		{"maglev", &configentry.LoadBalancer{Policy: "maglev"}, `lb_policy:MAGLEV maglev_lb_config:{table_size:{value:65537}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clusterv3.Cluster{}
			lbPolicy(c, tc.lb)
			if got := text(c); got != squash(tc.want) {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Retry conditions come in Consul's order, each once; NumRetries 0 is
// Envoy's default, 1; every policy avoids the hosts already tried.
func TestRetryPolicy(t *testing.T) {
	rp := retryPolicy(&configentry.ServiceRouteDestination{RetryOn: []string{"reset", "connect-failure"}, RetryOnConnectFailure: true,
		RetryOnStatusCodes: []uint32{502}})
	if err := rp.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if rp.RetryOn != "reset,connect-failure,retriable-status-codes" || rp.NumRetries.GetValue() != 1 || len(rp.RetriableStatusCodes) != 1 {
		t.Errorf("retry_on %q, num_retries %d, codes %v", rp.RetryOn, rp.NumRetries.GetValue(), rp.RetriableStatusCodes)
	}
	if len(rp.RetryHostPredicate) != 1 || rp.RetryHostPredicate[0].Name != "envoy.retry_host_predicates.previous_hosts" || rp.HostSelectionRetryMaxAttempts != 5 {
		t.Errorf("host predicate %v, attempts %d", rp.RetryHostPredicate, rp.HostSelectionRetryMaxAttempts)
	}
	if b := rp.RetryBackOff; b.BaseInterval.AsDuration() != 25*time.Millisecond || b.MaxInterval.AsDuration() != 250*time.Millisecond {
		t.Errorf("back-off %v", b)
	}
	if (&configentry.ServiceRouteDestination{RequestTimeout: time.Second}).HasRetries() {
		t.Error("a destination without retry settings has retries")
	}
}

// Hash policies go on every route of a ring_hash or maglev upstream, the
// catch-all included, and on none of another policy.
func TestHashPoliciesOnEveryRoute(t *testing.T) {
	hp := []configentry.HashPolicy{{Field: configentry.HashPolicyHeader, FieldValue: "x-user"}}
	u := proxycfg.Upstream{Name: "api", Protocol: "http", Routes: []configentry.ServiceRoute{{}}}
	for _, tc := range []struct {
		policy string
		want   int
	}{{"ring_hash", 1}, {"maglev", 1}, {"least_request", 0}} {
		u.LoadBalancer = &configentry.LoadBalancer{Policy: tc.policy, HashPolicies: hp}
		rc, err := upstreamRoutes("api", "api-cluster", u)
		if err != nil {
			t.Fatal(err)
		}
		routes := rc.VirtualHosts[0].Routes
		if len(routes) != 2 {
			t.Fatalf("%d routes, want the router's and the catch-all", len(routes))
		}
		for i, r := range routes {
			if got := len(r.GetRoute().HashPolicy); got != tc.want {
				t.Errorf("%s: route %d has %d hash policies, want %d", tc.policy, i, got, tc.want)
			}
		}
	}
}

func TestUpstreamRouteName(t *testing.T) {
	for _, tc := range []struct {
		u    proxycfg.Upstream
		want string
	}{
		{proxycfg.Upstream{Name: "api"}, "api"},
		{proxycfg.Upstream{Name: "api", Datacenter: "dc1"}, "api"},
		{proxycfg.Upstream{Name: "api", Datacenter: "dc2"}, "api?dc=dc2"},
	} {
		if got := UpstreamRouteName(tc.u, "dc1"); got != tc.want {
			t.Errorf("UpstreamRouteName(%+v) = %q, want %q", tc.u, got, tc.want)
		}
	}
}

// The route timeout is the route's, else the resolver's, else unset.
func TestRouteTimeouts(t *testing.T) {
	u := proxycfg.Upstream{Name: "api", Protocol: "http", RequestTimeout: 9 * time.Second, Routes: []configentry.ServiceRoute{
		{Destination: &configentry.ServiceRouteDestination{RequestTimeout: time.Second}}, {}}}
	rc, err := upstreamRoutes("api", "c", u)
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for _, r := range rc.VirtualHosts[0].Routes {
		got = append(got, r.GetRoute().GetTimeout().AsDuration())
	}
	if len(got) != 3 || got[0] != time.Second || got[1] != 9*time.Second || got[2] != 9*time.Second {
		t.Errorf("timeouts %v, want 1s, 9s, 9s", got)
	}
	u.RequestTimeout = 0
	rc, _ = upstreamRoutes("api", "c", u)
	if r := rc.VirtualHosts[0].Routes[2].GetRoute(); r.Timeout != nil {
		t.Errorf("catch-all timeout %v without a resolver's, want unset (Envoy's 15 s)", r.Timeout)
	}
}

// Sidecars speak to each other what Consul's Envoy configuration makes
// them speak: HTTP/1.1 for http (Envoy's default, no options), HTTP/2
// for http2 and grpc, offered by ALPN to the upstream's public listener.
func TestUpstreamClusterProtocol(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		options  string // typed_extension_protocol_options, "" for none
		alpn     []string
	}{
		{"tcp", "", nil},
		{"http", "", []string{"http/1.1"}},
		{"http2", "explicit_http_config:{http2_protocol_options:{}}", []string{"h2"}},
		{"grpc", "explicit_http_config:{http2_protocol_options:{}}", []string{"h2"}},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			s := baseSnapshot("web", "tcp")
			g := &gen{snap: s}
			c := g.upstreamCluster(proxycfg.Upstream{Name: "db", Protocol: tc.protocol}, "dc1", "db.cluster")
			if err := c.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			got := ""
			if a := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a != nil {
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Fatal(err)
				}
				got = text(m)
			}
			if got != squash(tc.options) {
				t.Errorf("protocol options: got %q, want %q", got, tc.options)
			}
			ctx := &tlsv3.UpstreamTlsContext{}
			if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
				t.Fatal(err)
			}
			if alpn := ctx.GetCommonTlsContext().GetAlpnProtocols(); !slices.Equal(alpn, tc.alpn) {
				t.Errorf("ALPN: got %q, want %q", alpn, tc.alpn)
			}
		})
	}
}

// Every HTTP connection manager of a sidecar lets WebSocket upgrades
// through, inbound and outbound, as Consul's Envoy configuration does.
func TestHCMsAllowWebSocket(t *testing.T) {
	res, err := Resources(httpUpstreamRoutes())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range res[resource.ListenerType] {
		for _, fc := range r.(*listenerv3.Listener).GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != "envoy.filters.network.http_connection_manager" {
					continue
				}
				h := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					t.Fatal(err)
				}
				n++
				if got := text(&hcmv3.HttpConnectionManager{UpgradeConfigs: h.GetUpgradeConfigs()}); got != `upgrade_configs:{upgrade_type:"websocket"}` {
					t.Errorf("HCM %s: %s", h.GetStatPrefix(), got)
				}
			}
		}
	}
	if n < 2 {
		t.Fatalf("%d HTTP connection managers, want the public listener's and the upstream's", n)
	}
}
