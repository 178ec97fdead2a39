package proxy

import (
	"net"
	"net/http"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// The generator/proxy contract: what xds/generate makes of a snapshot
// with the resiliency settings of the config entries, applied to the
// proxy and carrying traffic.

func ptr[T any](v T) *T { return &v }

func TestGeneratedResiliencyContract(t *testing.T) {
	authority := newCA(t, td)
	roots := []string{authority.root.CertPEM}
	sidecar := func(service, protocol string, app net.Addr) net.Addr {
		snap := snapshot(service, authority.leaf(t, td, service), roots, app.(*net.TCPAddr).Port)
		snap.Protocol = protocol
		snap.DefaultAllow = true
		return addr(t, newProxy(t, configOf(t, snap)), publicName())
	}
	// Two instances of api; the first fails on /flaky.
	var apiSidecars []net.Addr
	for _, name := range []string{"api1", "api2"} {
		app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/flaky" && name == "api1" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			w.Write([]byte(name))
		}))
		apiSidecars = append(apiSidecars, sidecar("api", "http", app.addr))
	}
	greeterSidecar := sidecar("greeter", "grpc", grpcApp(t))

	api := upstream("api", apiSidecars...)
	api.Protocol = "http"
	api.Limits = &proxycfg.Limits{MaxConnections: ptr(10), MaxPendingRequests: ptr(5), MaxConcurrentRequests: ptr(20)}
	api.PassiveHealthCheck = &configentry.PassiveHealthCheck{Interval: 10 * time.Millisecond, MaxFailures: 2, BaseEjectionTime: ptr(time.Hour)}
	api.LoadBalancer = &configentry.LoadBalancer{
		Policy:         configentry.LBPolicyRingHash,
		RingHashConfig: &configentry.RingHashConfig{MinimumRingSize: 64, MaximumRingSize: 1024},
		HashPolicies:   []configentry.HashPolicy{{Field: configentry.HashPolicyHeader, FieldValue: "x-user"}},
	}
	api.Routes = []configentry.ServiceRoute{{
		Match:       &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/flaky"}},
		Destination: &configentry.ServiceRouteDestination{NumRetries: 2, RetryOn: []string{"5xx"}},
	}}
	greeter := upstream("greeter", greeterSidecar)
	greeter.Protocol = "grpc"
	greeter.LoadBalancer = &configentry.LoadBalancer{Policy: configentry.LBPolicyLeastRequest,
		LeastRequestConfig: &configentry.LeastRequestConfig{ChoiceCount: 3}}

	webSnap := snapshot("web", authority.leaf(t, td, "web"), roots, newEcho(t).port())
	webSnap.Upstreams = []proxycfg.Upstream{api, greeter}
	web := newProxy(t, configOf(t, webSnap))
	apiCluster, greeterCluster := clusterName("api"), clusterName("greeter")

	t.Run("settings", func(t *testing.T) {
		st := web.cur.Load()
		a := st.clusters[apiCluster].balance
		wantBreaker := balance.Thresholds{MaxConnections: 10, MaxPendingRequests: 5, MaxRequests: 20, MaxRetries: 3,
			RetryBudget: &balance.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}}
		if a.Policy != balance.RingHash || a.MinRingSize != 64 || a.MaxRingSize != 1024 {
			t.Errorf("api balancing: %v, ring %d..%d", a.Policy, a.MinRingSize, a.MaxRingSize)
		}
		if b := a.Breaker; b.MaxConnections != wantBreaker.MaxConnections || b.MaxPendingRequests != wantBreaker.MaxPendingRequests ||
			b.MaxRequests != wantBreaker.MaxRequests || b.RetryBudget == nil || *b.RetryBudget != *wantBreaker.RetryBudget {
			t.Errorf("api circuit breaker: %+v (budget %+v)", b, b.RetryBudget)
		}
		if o := a.Outlier; o == nil || o.Consecutive5xx != 2 || o.Interval != 10*time.Millisecond || o.BaseEjectionTime != time.Hour {
			t.Errorf("api outlier detection: %+v", o)
		}
		if g := st.clusters[greeterCluster].balance; g.Policy != balance.LeastRequest || g.ChoiceCount != 3 || g.Outlier == nil {
			t.Errorf("greeter balancing: %+v", g)
		}
	})

	apiListener := addr(t, web, upstreamName(api))
	c := h1Client(t)
	var users []string
	for i := range 40 {
		users = append(users, "user-"+itoa(i))
	}

	t.Run("ring hash sticks", func(t *testing.T) {
		seen := map[string]bool{}
		for _, u := range users {
			code, first := get(t, c, apiListener, "/", "X-User", u)
			if code != 200 {
				t.Fatalf("%s: status %d %q", u, code, first)
			}
			for range 2 {
				if _, got := get(t, c, apiListener, "/again", "X-User", u); got != first {
					t.Fatalf("%s went to %s, then to %s", u, first, got)
				}
			}
			seen[first] = true
		}
		if len(seen) != 2 {
			t.Errorf("users reached %v, want both instances", seen)
		}
	})

	t.Run("route retries and passive health check", func(t *testing.T) {
		// The users of api1 get api2's answer by a retry, until api1's
		// second 503 in a row ejects it.
		for _, u := range users {
			if code, body := get(t, c, apiListener, "/flaky", "X-User", u); code != 200 || body != "api2" {
				t.Fatalf("%s: got %d %q, want api2's answer", u, code, body)
			}
		}
		settle(t, web, apiCluster)
		if n := metric(t, web, "trellis_proxy_upstream_retries_total", "cluster", apiCluster); n < 2 {
			t.Errorf("retries = %v, want at least 2", n)
		}
		if n := metric(t, web, "trellis_proxy_outlier_ejections_active", "cluster", apiCluster); n != 1 {
			t.Errorf("ejected = %v, want 1 (api1)", n)
		}
		// Ejected, api1 gets no requests: its users go to api2 at once.
		retries := metric(t, web, "trellis_proxy_upstream_retries_total", "cluster", apiCluster)
		for _, u := range users {
			if _, body := get(t, c, apiListener, "/", "X-User", u); body != "api2" {
				t.Fatalf("%s reached %s, which is ejected", u, body)
			}
		}
		if n := metric(t, web, "trellis_proxy_upstream_retries_total", "cluster", apiCluster); n != retries {
			t.Errorf("retries went from %v to %v with api1 ejected", retries, n)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		g := grpcClient(t, addr(t, web, upstreamName(greeter)))
		for i := range 5 {
			msg := "hello " + itoa(i)
			resp, err := g.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{Payload: payload(msg)})
			if err != nil || string(resp.GetPayload().GetBody()) != msg {
				t.Fatalf("UnaryCall = %v, %v", resp, err)
			}
		}
	})
}
