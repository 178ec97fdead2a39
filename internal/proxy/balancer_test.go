package proxy

import (
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// The balancers as the proxy uses them: an upstream listener "svc" whose
// routes lead to cluster "c", configured as each test says.

// lbConfig is edgeConfig with the one cluster "c" of eps, changed by
// mutate, its endpoints weighted by weights (1 where not given).
func lbConfig(rc *routev3.RouteConfiguration, eps []net.Addr, mutate func(*clusterv3.Cluster), weights ...uint32) Config {
	cfg := edgeConfig(rc, map[string][]net.Addr{"c": eps})
	if mutate != nil {
		mutate(cfg.Clusters[0])
	}
	for i, w := range weights {
		cfg.Endpoints[0].Endpoints[0].LbEndpoints[i].LoadBalancingWeight = wrapperspb.UInt32(w)
	}
	return cfg
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// balancerOf is p's balancer of cluster name.
func balancerOf(t *testing.T, p *Proxy, name string) *balancer {
	t.Helper()
	b := (*p.balancers.Load())[name]
	if b == nil {
		t.Fatalf("no balancer for cluster %q", name)
	}
	return b
}

// settle waits until the requests to cluster name have ended, outlier
// detection included: the client sees a response before the proxy
// accounts for it.
func settle(t *testing.T, p *Proxy, name string) {
	t.Helper()
	b := balancerOf(t, p, name)
	waitFor(t, "requests to end", func() bool { return b.bc.InUse(balance.Requests) == 0 })
}

// get sends GET path with hdr and returns the status and body.
func get(t *testing.T, c *http.Client, svc net.Addr, path string, hdr ...string) (int, string) {
	t.Helper()
	resp, body := do(t, c, "GET", urlOf(svc, path), "", hdr...)
	return resp.StatusCode, body
}

// holdApp answers its name; a request with X-Hold waits, after saying
// so on arrived, until release is closed.
type holdApp struct {
	*app
	name    string
	hits    atomic.Int64
	arrived chan string
	release chan struct{}
	once    sync.Once
}

func newHoldApp(t *testing.T, name string, arrived chan string) *holdApp {
	h := &holdApp{name: name, arrived: arrived, release: make(chan struct{})}
	h.app = newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if r.Header.Get("X-Hold") != "" {
			h.arrived <- name
			select {
			case <-h.release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte(name))
	}))
	t.Cleanup(h.free)
	return h
}

func (h *holdApp) free() { h.once.Do(func() { close(h.release) }) }

// Round robin goes on where it was across Applies: a push that changes
// nothing of the cluster used to restart it at the first endpoint, so
// that with a push between requests the first host got them all.
func TestRoundRobinSurvivesApplies(t *testing.T) {
	apps := []*statusApp{newStatusApp(t, "a", 200), newStatusApp(t, "b", 200), newStatusApp(t, "c", 200)}
	eps := []net.Addr{apps[0].addr, apps[1].addr, apps[2].addr}
	cfg := lbConfig(svcRoutes("c", nil), eps, nil)
	p, svc := edge(t, cfg, nil)
	c := h1Client(t)
	for range 30 {
		if err := p.Apply(cloneL7(cfg)); err != nil {
			t.Fatal(err)
		}
		if code, _ := get(t, c, svc, "/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	for _, a := range apps {
		if n := a.hits.Load(); n != 10 {
			t.Errorf("host %s got %d requests, want 10 of 30", a.addr, n)
		}
	}
}

// Endpoint weights shape round robin: 3 and 1 share 40 requests 30, 10.
func TestWeightedRoundRobin(t *testing.T) {
	a, b := newStatusApp(t, "a", 200), newStatusApp(t, "b", 200)
	_, svc := edge(t, lbConfig(svcRoutes("c", nil), []net.Addr{a.addr, b.addr}, nil, 3, 1), nil)
	c := h1Client(t)
	for range 40 {
		get(t, c, svc, "/")
	}
	if a.hits.Load() != 30 || b.hits.Load() != 10 {
		t.Errorf("hits %d and %d, want 30 and 10", a.hits.Load(), b.hits.Load())
	}
}

// LEAST_REQUEST sends requests to the host that has none in flight.
func TestLeastRequestPrefersIdleHost(t *testing.T) {
	arrived := make(chan string, 1)
	a, b := newHoldApp(t, "a", arrived), newHoldApp(t, "b", arrived)
	cfg := lbConfig(svcRoutes("c", nil), []net.Addr{a.addr, b.addr}, func(c *clusterv3.Cluster) {
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		// 64 draws miss the idle host one time in 2^64.
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(64)}}
	})
	_, svc := edge(t, cfg, nil)
	c := h1Client(t)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { get(t, c, svc, "/", "X-Hold", "1") })
	busy := <-arrived
	for range 20 {
		if _, got := get(t, c, svc, "/"); got == busy {
			t.Fatalf("a request went to %s, which has one in flight, not to the idle host", busy)
		}
	}
	a.free()
	b.free()
}

// RING_HASH and MAGLEV place a request by its hash: a user (the header
// hash policy) always reaches the same host, and users spread.
func TestHashPoliciesStick(t *testing.T) {
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String(), func(t *testing.T) {
			var eps []net.Addr
			for _, n := range []string{"a", "b", "c", "d"} {
				eps = append(eps, newStatusApp(t, n, 200).addr)
			}
			rc := svcRoutes("c", func(r *routev3.RouteAction) {
				r.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
					Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
			})
			_, svc := edge(t, lbConfig(rc, eps, func(c *clusterv3.Cluster) { c.LbPolicy = policy }), nil)
			c := h1Client(t)
			hosts := map[string]bool{}
			for u := range 20 {
				user := "user-" + itoa(u)
				_, first := get(t, c, svc, "/", "X-User", user)
				for range 4 {
					if _, got := get(t, c, svc, "/", "X-User", user); got != first {
						t.Fatalf("%s went to %s, then to %s", user, first, got)
					}
				}
				hosts[first] = true
			}
			if len(hosts) < 2 {
				t.Errorf("20 users all went to %v", hosts)
			}
		})
	}
}

// RANDOM reaches every host, not in turn.
func TestRandomPolicy(t *testing.T) {
	var eps []net.Addr
	for _, n := range []string{"a", "b", "c"} {
		eps = append(eps, newStatusApp(t, n, 200).addr)
	}
	_, svc := edge(t, lbConfig(svcRoutes("c", nil), eps, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM }), nil)
	c := h1Client(t)
	var seq []string
	seen := map[string]bool{}
	for range 60 {
		_, got := get(t, c, svc, "/")
		seq = append(seq, got)
		seen[got] = true
	}
	if len(seen) != 3 {
		t.Errorf("hosts reached: %v, want all 3", seen)
	}
	rotation := true
	for i := 3; i < len(seq); i++ {
		rotation = rotation && seq[i] == seq[i-3]
	}
	if rotation {
		t.Errorf("hosts taken in turn: %v", seq)
	}
}

func outlier(consecutive uint32, interval, base time.Duration, maxPercent uint32) *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(consecutive),
		Interval:           durationpb.New(interval),
		BaseEjectionTime:   durationpb.New(base),
		MaxEjectionPercent: wrapperspb.UInt32(maxPercent),
	}
}

// A host answering 5xx is ejected after consecutive_5xx of them, gets no
// requests while ejected, and is back after base_ejection_time.
func TestOutlierEjection(t *testing.T) {
	bad, good := newStatusApp(t, "bad", 503), newStatusApp(t, "good", 200)
	cfg := lbConfig(svcRoutes("c", nil), []net.Addr{bad.addr, good.addr}, func(c *clusterv3.Cluster) {
		c.OutlierDetection = outlier(3, 10*time.Millisecond, 200*time.Millisecond, 50)
	})
	p, svc := edge(t, cfg, nil)
	c := h1Client(t)
	for range 6 { // round robin: three to each
		get(t, c, svc, "/")
	}
	settle(t, p, "c")
	if n := metric(t, p, "trellis_proxy_outlier_ejections_total", "cluster", "c"); n != 1 {
		t.Fatalf("ejections = %v after 3 consecutive 503s, want 1", n)
	}
	// While it is out (the ejection is the only one: a request to the
	// bad host would not eject it again), requests go to the good host.
	for {
		_, got := get(t, c, svc, "/")
		settle(t, p, "c")
		if metric(t, p, "trellis_proxy_outlier_ejections_active", "cluster", "c") == 0 {
			break
		}
		if got != "good" {
			t.Fatalf("a request went to %s while it was ejected", got)
		}
	}
	// Back in service: round robin reaches it again.
	hits := bad.hits.Load()
	get(t, c, svc, "/")
	get(t, c, svc, "/")
	if bad.hits.Load() == hits {
		t.Error("the host did not come back after base_ejection_time")
	}
	if n := metric(t, p, "trellis_proxy_outlier_ejections_total", "cluster", "c"); n != 1 {
		t.Errorf("ejections = %v, want 1", n)
	}
}

// max_ejection_percent caps the hosts ejected at once: 50% of four.
func TestMaxEjectionPercent(t *testing.T) {
	var eps []net.Addr
	for _, n := range []string{"a", "b", "c", "d"} {
		eps = append(eps, newStatusApp(t, n, 500).addr)
	}
	p, svc := edge(t, lbConfig(svcRoutes("c", nil), eps, func(c *clusterv3.Cluster) {
		c.OutlierDetection = outlier(1, time.Hour, time.Hour, 50)
	}), nil)
	c := h1Client(t)
	for range 12 {
		if code, _ := get(t, c, svc, "/"); code != 500 {
			t.Fatalf("status %d, want the hosts' 500", code)
		}
	}
	settle(t, p, "c")
	if n := metric(t, p, "trellis_proxy_outlier_ejections_active", "cluster", "c"); n != 2 {
		t.Errorf("ejected hosts = %v, want 2 (50%% of 4)", n)
	}
	if n := metric(t, p, "trellis_proxy_outlier_ejections_total", "cluster", "c"); n != 2 {
		t.Errorf("ejections = %v, want 2", n)
	}
}

// max_requests 2: of 5 concurrent slow requests, 3 are refused with 503
// and x-envoy-overloaded, and counted.
func TestCircuitBreakerMaxRequests(t *testing.T) {
	arrived := make(chan string, 5)
	a := newHoldApp(t, "a", arrived)
	p, svc := edge(t, lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(2)}}}
	}), nil)
	c := h1Client(t)
	type result struct {
		code       int
		body       string
		overloaded string
	}
	results := make(chan result, 5)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			resp, body := do(t, c, "GET", urlOf(svc, "/"), "", "X-Hold", "1")
			results <- result{resp.StatusCode, body, resp.Header.Get("X-Envoy-Overloaded")}
		})
	}
	for range 3 {
		r := <-results
		if r.code != 503 || r.body != bodyOverflow || r.overloaded != "true" {
			t.Errorf("refused request: %d %q x-envoy-overloaded %q", r.code, r.body, r.overloaded)
		}
	}
	<-arrived
	<-arrived
	a.free()
	wg.Wait()
	close(results)
	for r := range results {
		if r.code != 200 {
			t.Errorf("admitted request: %d %q", r.code, r.body)
		}
	}
	if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "requests"); n != 3 {
		t.Errorf("overflow{requests} = %v, want 3", n)
	}
}

// Retries count against max_retries, or the retry budget when there is
// one (budget_percent of the active requests, at least
// min_retry_concurrency).
func TestRetryLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		thresholds *clusterv3.CircuitBreakers_Thresholds
		want       string // the body the client gets
	}{
		{"max_retries 0", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(0)}, "bad"},
		{"budget wins over max_retries", &clusterv3.CircuitBreakers_Thresholds{
			MaxRetries:  wrapperspb.UInt32(5),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 0}, MinRetryConcurrency: wrapperspb.UInt32(0)},
		}, "bad"},
		{"budget of the active request", &clusterv3.CircuitBreakers_Thresholds{
			MaxRetries:  wrapperspb.UInt32(0),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 100}, MinRetryConcurrency: wrapperspb.UInt32(0)},
		}, "good"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := newStatusApp(t, "bad", 503), newStatusApp(t, "good", 200)
			rc := svcRoutes("c", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicyOf("5xx", 1) })
			p, svc := edge(t, lbConfig(rc, []net.Addr{bad.addr, good.addr}, func(c *clusterv3.Cluster) {
				c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{tc.thresholds}}
			}), nil)
			if _, body := get(t, h1Client(t), svc, "/"); body != tc.want {
				t.Errorf("got %q, want %q", body, tc.want)
			}
			wantOverflow := 0.0
			if tc.want == "bad" {
				wantOverflow = 1
			}
			if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "retries"); n != wantOverflow {
				t.Errorf("overflow{retries} = %v, want %v", n, wantOverflow)
			}
		})
	}
}

// max_connections: at the limit, a request waits for a connection as a
// pending request while max_pending_requests allows, and gets the
// connection that frees up; beyond, it is refused.
func TestConnectionLimitAndPending(t *testing.T) {
	limits := func(conns, pending uint32) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(conns), MaxPendingRequests: wrapperspb.UInt32(pending),
			}}}
		}
	}
	overloaded := func(t *testing.T, c *http.Client, svc net.Addr) {
		t.Helper()
		resp, body := do(t, c, "GET", urlOf(svc, "/"), "")
		if resp.StatusCode != 503 || body != bodyOverflow || resp.Header.Get("X-Envoy-Overloaded") != "true" {
			t.Fatalf("got %d %q %v, want 503 overflow", resp.StatusCode, body, resp.Header)
		}
	}

	t.Run("no pending", func(t *testing.T) {
		arrived := make(chan string, 1)
		a := newHoldApp(t, "a", arrived)
		p, svc := edge(t, lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, limits(1, 0)), nil)
		c := h1Client(t)
		var wg sync.WaitGroup
		wg.Go(func() { get(t, c, svc, "/", "X-Hold", "1") })
		<-arrived
		overloaded(t, c, svc)
		a.free()
		wg.Wait()
		for kind, want := range map[string]float64{"connections": 1, "pending": 1, "requests": 0} {
			if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", kind); n != want {
				t.Errorf("overflow{%s} = %v, want %v", kind, n, want)
			}
		}
	})

	t.Run("one pending", func(t *testing.T) {
		arrived := make(chan string, 1)
		a := newHoldApp(t, "a", arrived)
		// With a connect timeout this long, only the request's getting
		// a connection ends its dial's wait (and its pending count).
		p, svc := edge(t, lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, func(c *clusterv3.Cluster) {
			limits(1, 1)(c)
			c.ConnectTimeout = durationpb.New(time.Hour)
		}), nil)
		c := h1Client(t)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { get(t, c, svc, "/", "X-Hold", "1") })
		<-arrived
		pending := make(chan int, 1)
		wg.Go(func() {
			code, _ := get(t, c, svc, "/")
			pending <- code
		})
		waitMetric(t, p, 1, "trellis_proxy_upstream_requests_pending", "cluster", "c")
		overloaded(t, c, svc) // the queue is full
		a.free()
		if code := <-pending; code != 200 {
			t.Errorf("the pending request got %d", code)
		}
		waitMetric(t, p, 0, "trellis_proxy_upstream_requests_pending", "cluster", "c")
		if n := a.accepted.Load(); n != 1 {
			t.Errorf("the app accepted %d connections, want 1 (max_connections)", n)
		}
		if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "pending"); n != 1 {
			t.Errorf("overflow{pending} = %v, want 1", n)
		}
	})

	t.Run("a freed slot", func(t *testing.T) {
		// The held request's connection closes (the app ends it): the
		// pending request dials in its slot.
		arrived := make(chan string, 1)
		a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Hold") != "" {
				arrived <- "a"
				<-r.Context().Done()
				return
			}
			w.Write([]byte("a"))
		}))
		hold := routeTo("c", prefixMatch("/hold"))
		hold.GetRoute().Timeout = durationpb.New(300 * time.Millisecond)
		p, svc := edge(t, lbConfig(svcRoutes("c", nil, hold), []net.Addr{a.addr}, limits(1, 1)), nil)
		c := h1Client(t)
		var wg sync.WaitGroup
		defer wg.Wait()
		held := make(chan int, 1)
		wg.Go(func() {
			code, _ := get(t, c, svc, "/hold", "X-Hold", "1")
			held <- code
		})
		<-arrived
		// The held request times out while this one waits; its
		// connection is closed, and this request gets a new one.
		code, body := get(t, c, svc, "/")
		if code != 200 || body != "a" {
			t.Errorf("pending request: %d %q", code, body)
		}
		if code := <-held; code != 504 {
			t.Errorf("held request: %d, want 504", code)
		}
		if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "pending"); n != 0 {
			t.Errorf("overflow{pending} = %v, want 0", n)
		}
	})
}

// An HTTP/2 cluster at max_connections 1: a burst of requests before its
// connection is up waits for it, and every request shares it.
func TestHTTP2BurstSharesTheConnection(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	cfg := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}, "c")
	cfg.Clusters[0].CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(100),
	}}}
	p, svc := edge(t, cfg, nil)
	c := h1Client(t)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if code, body := get(t, c, svc, "/"); code != 200 {
				t.Errorf("got %d %q", code, body)
			}
		})
	}
	wg.Wait()
	if n := a.accepted.Load(); n != 1 {
		t.Errorf("the app accepted %d connections, want 1", n)
	}
	waitMetric(t, p, 0, "trellis_proxy_upstream_requests_pending", "cluster", "c")
}

// The series of a cluster that an Apply removes are deleted.
func TestRemovedClusterSeries(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	cfg := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}, "gone": {a.addr}})
	for _, c := range cfg.Clusters {
		c.OutlierDetection = outlier(5, time.Hour, time.Hour, 10)
	}
	p, _ := edge(t, cfg, nil)
	families := []string{"trellis_proxy_outlier_ejections_total", "trellis_proxy_outlier_ejections_active",
		"trellis_proxy_upstream_requests_pending", "trellis_proxy_upstream_overflow_total",
		"trellis_proxy_upstream_retries_total", "trellis_proxy_upstream_requests_active"}
	series := func(cluster string) []string {
		mfs, err := p.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if hasLabel(m, "cluster", cluster) {
					have = append(have, mf.GetName())
				}
			}
		}
		return have
	}
	for _, f := range families {
		if !strings.Contains(strings.Join(series("gone"), " "), f) {
			t.Errorf("no %s series for cluster gone", f)
		}
	}
	next := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}})
	if err := p.Apply(next); err != nil {
		t.Fatal(err)
	}
	if have := series("gone"); len(have) > 0 {
		t.Errorf("series left for a removed cluster: %v", have)
	}
	if len(series("c")) == 0 {
		t.Error("the remaining cluster lost its series")
	}
}

// A refused Config changes no balancer: neither one compile refuses nor
// one whose listener cannot bind.
func TestRefusedConfigKeepsBalancers(t *testing.T) {
	a, b := newStatusApp(t, "a", 200), newStatusApp(t, "b", 200)
	good := lbConfig(svcRoutes("c", nil), []net.Addr{a.addr, b.addr}, nil)
	p, svc := edge(t, good, nil)
	c := h1Client(t)
	if _, got := get(t, c, svc, "/"); got != "a" {
		t.Fatalf("first request went to %s", got)
	}
	bal := balancerOf(t, p, "c")

	badSetting := lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM })
	other := plainCluster("x", false)
	other.LbPolicy = clusterv3.Cluster_RING_HASH
	other.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MaximumRingSize: wrapperspb.UInt64(1 << 30)}}
	badSetting.Clusters = append(badSetting.Clusters, other)
	badSetting.Endpoints = append(badSetting.Endpoints, loadAssignment("x", a.addr))
	if err := p.Apply(badSetting); err == nil || !strings.Contains(err.Error(), "maximum_ring_size") {
		t.Fatalf("Apply: %v, want an error naming maximum_ring_size", err)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	badBind := lbConfig(svcRoutes("c", nil), []net.Addr{b.addr}, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_MAGLEV })
	l := upstreamListenerL7("other")
	l.Address = sockAddr(busy.Addr())
	badBind.Listeners = append(badBind.Listeners, l)
	badBind.Routes = append(badBind.Routes, routeConfig("other", "c"))
	if err := p.Apply(badBind); err == nil {
		t.Fatal("Apply bound a busy address")
	}

	if got := balancerOf(t, p, "c"); got != bal || got.bc.Policy() != balance.RoundRobin || len(got.bc.Hosts()) != 2 {
		t.Fatalf("balancer changed by refused Configs: policy %v, hosts %v", got.bc.Policy(), got.bc.Hosts())
	}
	if _, ok := (*p.balancers.Load())["x"]; ok {
		t.Error("a refused Config's cluster has a balancer")
	}
	if _, got := get(t, c, svc, "/"); got != "b" {
		t.Errorf("round robin restarted: second request went to %s", got)
	}
}

// The outlier detector's ticker runs while its cluster has outlier
// detection, and ends with the cluster and with Close.
func TestOutlierTickerEnds(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	before := runtime.NumGoroutine()
	with := lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, func(c *clusterv3.Cluster) {
		c.OutlierDetection = outlier(5, 5*time.Millisecond, time.Second, 10)
	})
	p := New(Options{})
	if err := p.Apply(with); err != nil {
		t.Fatal(err)
	}
	b := balancerOf(t, p, "c")
	stopped := b.stopped
	if stopped == nil {
		t.Fatal("no ticker for a cluster with outlier detection")
	}
	if err := p.Apply(lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Error("ticker still running without outlier detection")
	}
	if err := p.Apply(with); err != nil {
		t.Fatal(err)
	}
	if b.stopped == nil {
		t.Fatal("no ticker once outlier detection is back")
	}
	p.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}

// A tcp_proxy connection beyond max_connections is closed, counted as a
// connections overflow.
func TestTCPConnectionLimit(t *testing.T) {
	e := newEcho(t)
	c := plainCluster("c", false)
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}
	cfg := Config{
		Listeners: []*listenerv3.Listener{{
			Name:    "tcp",
			Address: sockAddr(anyPort),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filterOf("envoy.filters.network.tcp_proxy",
				&tcpproxyv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})}}},
		}},
		Clusters:  []*clusterv3.Cluster{c},
		Endpoints: []*endpointv3.ClusterLoadAssignment{loadAssignment("c", e.ln.Addr())},
	}
	p := newProxy(t, cfg)
	ln := addr(t, p, "tcp")
	first := dialTCP(t, ln)
	echoOnce(t, first, "first")
	if got, _ := roundTrip(dialTCP(t, ln), "second"); got != "" {
		t.Errorf("a second connection got %q through", got)
	}
	waitMetric(t, p, 1, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "connections")
	first.Close()
	// Once the first is closed, its slot is free again.
	waitFor(t, "the connection slot", func() bool { return balancerOf(t, p, "c").bc.InUse(balance.Connections) == 0 })
	if got, err := roundTrip(dialTCP(t, ln), "third"); got != "third" {
		t.Errorf("third connection: %q, %v", got, err)
	}
}
