package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The L7 features of one proxy: an upstream listener "svc" whose route
// configuration "svc" leads to plaintext clusters of test backends.

// edgeConfig is the listener "svc", its route configuration rc and the
// clusters (HTTP/1.1, or HTTP/2 for names in h2) with their endpoints.
func edgeConfig(rc *routev3.RouteConfiguration, clusters map[string][]net.Addr, h2 ...string) Config {
	cfg := Config{Listeners: []*listenerv3.Listener{upstreamListenerL7("svc")}, Routes: []*routev3.RouteConfiguration{rc}}
	for name, eps := range clusters {
		isH2 := false
		for _, n := range h2 {
			isH2 = isH2 || n == name
		}
		cfg.Clusters = append(cfg.Clusters, plainCluster(name, isH2))
		cfg.Endpoints = append(cfg.Endpoints, loadAssignment(name, eps...))
	}
	return cfg
}

// edge runs cfg on a new proxy, with balance (if not nil) as its seam,
// and returns the address of its listener "svc".
func edge(t *testing.T, cfg Config, balance func(*cluster) (picker, guard)) (*Proxy, net.Addr) {
	t.Helper()
	p := New(Options{})
	p.balance = balance
	t.Cleanup(func() { p.Close() })
	if err := p.Apply(cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return p, addr(t, p, "svc")
}

// svcRoutes is the route configuration "svc": routes, then a catch-all
// to cluster with action changes.
func svcRoutes(cluster string, action func(*routev3.RouteAction), routes ...*routev3.Route) *routev3.RouteConfiguration {
	rc := routeConfig("svc", cluster, routes...)
	if action != nil {
		rs := rc.VirtualHosts[0].Routes
		action(rs[len(rs)-1].GetRoute())
	}
	return rc
}

// statusApp answers code with its name as body, reading the request body
// first, and counts its requests.
type statusApp struct {
	*app
	hits atomic.Int64
	body atomic.Value // string: the last request body
}

func newStatusApp(t *testing.T, name string, code int) *statusApp {
	s := &statusApp{}
	s.app = newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		s.body.Store(string(b))
		w.WriteHeader(code)
		io.WriteString(w, name)
	}))
	return s
}

// blockingApp holds every request until its client gives up.
func blockingApp(t *testing.T) *app {
	return newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
}

func TestRetries(t *testing.T) {
	big := strings.Repeat("x", maxReplayBody+1)
	for _, tc := range []struct {
		name        string
		retryOn     string
		n           uint32
		codes       []uint32
		first       int    // status of the first host; 0: nothing listens
		body        string // request body
		wantStatus  int
		wantBody    string
		wantRetries float64
	}{
		{"5xx, on another host", "5xx", 1, nil, 503, "", 200, "good", 1},
		{"connect failure", "connect-failure", 1, nil, 0, "", 200, "good", 1},
		{"gateway error", "gateway-error", 1, nil, 502, "", 200, "good", 1},
		{"body replayed", "5xx", 1, nil, 500, "the request body", 200, "good", 1},
		{"body too large to replay", "5xx", 1, nil, 500, big, 500, "first", 0},
		{"not on 4xx", "5xx", 1, nil, 404, "", 404, "first", 0},
		{"retriable status code", "retriable-status-codes", 1, []uint32{409}, 409, "", 200, "good", 1},
		{"status code not listed", "retriable-status-codes", 1, []uint32{409}, 500, "", 500, "first", 0},
		{"no retries", "5xx", 0, nil, 503, "", 503, "first", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := newStatusApp(t, "good", 200)
			var first net.Addr
			var firstApp *statusApp
			if tc.first == 0 {
				first = deadAddr(t)
			} else {
				firstApp = newStatusApp(t, "first", tc.first)
				first = firstApp.addr
			}
			rc := svcRoutes("c", func(a *routev3.RouteAction) {
				a.RetryPolicy = retryPolicyOf(tc.retryOn, tc.n)
				a.RetryPolicy.RetriableStatusCodes = tc.codes
			})
			p, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {first, good.addr}}), nil)
			method := "GET"
			if tc.body != "" {
				method = "POST"
			}
			resp, body := do(t, h1Client(t), method, urlOf(svc, "/"), tc.body)
			if resp.StatusCode != tc.wantStatus || body != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if firstApp != nil && firstApp.hits.Load() != 1 {
				t.Errorf("the first host got %d requests, want 1", firstApp.hits.Load())
			}
			if tc.wantBody == "good" && tc.body != "" && good.body.Load() != tc.body {
				t.Errorf("the retry sent body %q, want %q", good.body.Load(), tc.body)
			}
			if n := metric(t, p, "trellis_proxy_upstream_retries_total", "cluster", "c"); n != tc.wantRetries {
				t.Errorf("retries = %v, want %v", n, tc.wantRetries)
			}
		})
	}
}

// With every host failing, a request is tried 1 + num_retries times and
// gets the last response.
func TestRetriesExhausted(t *testing.T) {
	var apps []*statusApp
	var eps []net.Addr
	for _, name := range []string{"a", "b", "c", "d"} {
		a := newStatusApp(t, name, 503)
		apps = append(apps, a)
		eps = append(eps, a.addr)
	}
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicyOf("5xx", 2) })
	p, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": eps}), nil)
	resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
	if resp.StatusCode != 503 || body != "c" {
		t.Fatalf("got %d %q, want the third host's 503", resp.StatusCode, body)
	}
	for i, a := range apps {
		want := int64(1)
		if i == 3 {
			want = 0
		}
		if a.hits.Load() != want {
			t.Errorf("host %d got %d requests, want %d", i, a.hits.Load(), want)
		}
	}
	if n := metric(t, p, "trellis_proxy_upstream_retries_total", "cluster", "c"); n != 2 {
		t.Errorf("retries = %v, want 2", n)
	}
}

func TestShouldRetry(t *testing.T) {
	grpcResp := func(code string) *http.Response {
		return &http.Response{StatusCode: 200, Header: http.Header{"Grpc-Status": {code}}}
	}
	for _, tc := range []struct {
		on   string
		o    outcome
		resp *http.Response
		want bool
	}{
		{"5xx", outcome{status: 500}, nil, true},
		{"5xx", outcome{failure: failReset}, nil, true},
		{"5xx", outcome{failure: failTimeout}, nil, true},
		{"5xx", outcome{failure: failOverflow}, nil, false},
		{"5xx", outcome{failure: failCanceled}, nil, false},
		{"gateway-error", outcome{status: 500}, nil, false},
		{"gateway-error", outcome{status: 504}, nil, true},
		{"reset", outcome{failure: failReset}, nil, true},
		{"reset", outcome{status: 503}, nil, false},
		{"connect-failure", outcome{failure: failReset}, nil, false},
		{"connect-failure", outcome{failure: failConnect}, nil, true},
		{"unavailable", outcome{status: 200}, grpcResp("14"), true},
		{"unavailable", outcome{status: 200}, grpcResp("13"), false},
		{"internal,cancelled", outcome{status: 200}, grpcResp("13"), true},
		{"cancelled", outcome{status: 200}, grpcResp("1"), true},
		{"deadline-exceeded", outcome{status: 200}, grpcResp("4"), true},
		{"resource-exhausted", outcome{status: 200}, grpcResp("8"), true},
		{"resource-exhausted", outcome{status: 200}, grpcResp("0"), false},
	} {
		p, err := compileRetryPolicy(&routev3.RetryPolicy{RetryOn: tc.on})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.shouldRetry(tc.o, tc.resp, nil); got != tc.want {
			t.Errorf("retry_on %q, %+v: %v, want %v", tc.on, tc.o, got, tc.want)
		}
	}
	if _, err := compileRetryPolicy(&routev3.RetryPolicy{RetryOn: "5xx,bogus"}); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Errorf("retry_on bogus: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	p, err := compileRetryPolicy(&routev3.RetryPolicy{RetryOn: "5xx"})
	if err != nil {
		t.Fatal(err)
	}
	if p.base != 25*time.Millisecond || p.max != 250*time.Millisecond || p.numRetries != 1 {
		t.Fatalf("defaults: base %v, max %v, retries %d; want 25ms, 250ms, 1", p.base, p.max, p.numRetries)
	}
	for n := 1; n < 10; n++ {
		limit := min(p.base<<(n-1), p.max)
		for range 50 {
			if d := p.backoff(n); d < 0 || d >= limit {
				t.Fatalf("backoff(%d) = %v, want in [0, %v)", n, d, limit)
			}
		}
	}
}

func TestRequestTimeout(t *testing.T) {
	slow := blockingApp(t)
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.Timeout = durationpb.New(20 * time.Millisecond) })
	p, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {slow.addr}}), nil)
	resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
	if resp.StatusCode != 504 || body != bodyTimeout {
		t.Fatalf("got %d %q, want 504 %q", resp.StatusCode, body, bodyTimeout)
	}
	waitMetric(t, p, 1, "trellis_proxy_http_responses_total", "code", "504")
	waitMetric(t, p, 0, "trellis_proxy_upstream_requests_active", "cluster", "c")
}

// The route timeout starts when the request has been received in full:
// a request body that takes longer than the timeout to arrive is fine.
func TestTimeoutStartsAtEndOfRequest(t *testing.T) {
	got := make(chan string, 1)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		line, _ := br.ReadString('\n')
		got <- line
		rest, _ := io.ReadAll(br)
		io.WriteString(w, line+string(rest))
	}))
	const timeout = 20 * time.Millisecond
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.Timeout = durationpb.New(timeout) })
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", urlOf(svc, "/"), pr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := h1Client(t).Do(req)
		if err != nil {
			errc <- err
			return
		}
		done <- resp
	}()
	io.WriteString(pw, "first\n")
	if line := <-got; line != "first\n" {
		t.Fatalf("the app read %q", line)
	}
	// Let the timeout pass while the body is still being sent: this
	// waits for time to pass, it synchronises nothing.
	<-time.After(5 * timeout)
	io.WriteString(pw, "second")
	pw.Close()
	select {
	case resp := <-done:
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "first\nsecond" {
			t.Fatalf("got %d %q, want 200 and the body back", resp.StatusCode, b)
		}
	case err := <-errc:
		t.Fatal(err)
	}
}

func TestGRPCTimeout(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	g := grpcAppWith(t, func() { <-block })
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.Timeout = durationpb.New(20 * time.Millisecond) })
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {g}}, "c"), nil)
	_, err := grpcClient(t, svc).UnaryCall(testCtx(t), &testgrpc.SimpleRequest{})
	if s := status.Convert(err); s.Code() != codes.DeadlineExceeded || s.Message() != bodyTimeout {
		t.Fatalf("got %v, want DeadlineExceeded %q", err, bodyTimeout)
	}
}

func TestPerTryTimeoutRetried(t *testing.T) {
	slow, good := blockingApp(t), newStatusApp(t, "good", 200)
	rc := svcRoutes("c", func(a *routev3.RouteAction) {
		a.RetryPolicy = retryPolicyOf("5xx", 1)
		a.RetryPolicy.PerTryTimeout = durationpb.New(20 * time.Millisecond)
	})
	p, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {slow.addr, good.addr}}), nil)
	resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
	if resp.StatusCode != 200 || body != "good" {
		t.Fatalf("got %d %q, want the second host's 200", resp.StatusCode, body)
	}
	if n := metric(t, p, "trellis_proxy_upstream_retries_total"); n != 1 {
		t.Errorf("retries = %v, want 1", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	slow := blockingApp(t)
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.IdleTimeout = durationpb.New(20 * time.Millisecond) })
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {slow.addr}}), nil)
	resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
	if resp.StatusCode != 408 || body != bodyStreamTimeout {
		t.Fatalf("got %d %q, want 408 %q", resp.StatusCode, body, bodyStreamTimeout)
	}
}

// A request whose short body stalls (read in full before it is sent
// upstream) still ends at the idle timeout, and its connection closes.
func TestIdleTimeoutStalledBody(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.IdleTimeout = durationpb.New(20 * time.Millisecond) })
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)
	c, err := net.Dial("tcp", svc.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails rather than blocks
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: c\r\nContent-Length: 100\r\n\r\nonly part of it")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || string(b) != bodyStreamTimeout {
		t.Fatalf("got %d %q, want 408 %q", resp.StatusCode, b, bodyStreamTimeout)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the reply: %v, want the connection closed", err)
	}
}

// Requests reuse the upstream connections, across Applies that leave the
// cluster's transport settings alone.
func TestPooling(t *testing.T) {
	a, b := newStatusApp(t, "a", 200), newStatusApp(t, "b", 200)
	rc := svcRoutes("c", nil)
	p, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)
	c := h1Client(t)
	for range 10 {
		if resp, _ := do(t, c, "GET", urlOf(svc, "/"), ""); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
	}
	if err := p.Apply(edgeConfig(rc, map[string][]net.Addr{"c": {a.addr, b.addr}})); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if resp, _ := do(t, c, "GET", urlOf(svc, "/"), ""); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
	}
	if a.hits.Load() != 15 || b.hits.Load() != 5 {
		t.Errorf("hits %d and %d, want 15 and 5", a.hits.Load(), b.hits.Load())
	}
	if n, m := a.accepted.Load(), b.accepted.Load(); n != 1 || m != 1 {
		t.Errorf("upstream connections: %d and %d, want 1 and 1", n, m)
	}
}

func TestHeadersAndRewrite(t *testing.T) {
	seen := make(chan *http.Request, 1)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-App", "app")
		io.WriteString(w, "ok")
	}))
	add := func(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
	}
	api := routeTo("c", prefixMatch("/api/"))
	api.GetRoute().PrefixRewrite = "/v2/"
	api.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		add("x-set", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-appended", "route", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-if-absent", "route", corev3.HeaderValueOption_ADD_IF_ABSENT),
		add("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-percent", "100%%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	api.RequestHeadersToRemove = []string{"x-secret"}
	api.ResponseHeadersToAdd = []*corev3.HeaderValueOption{add("x-resp", "yes", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	api.ResponseHeadersToRemove = []string{"x-internal"}
	rc := svcRoutes("c", nil, api)
	rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{add("x-vhost", "vh", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)

	resp, _ := do(t, h1Client(t), "GET", urlOf(svc, "/api/items?x=1"), "",
		"X-Set", "client", "X-Appended", "client", "X-If-Absent", "client", "X-Secret", "s", "Connection", "X-Hop", "X-Hop", "h")
	r := <-seen
	for _, c := range []struct{ got, want string }{
		{r.URL.RequestURI(), "/v2/items?x=1"},
		{strings.Join(r.Header.Values("X-Set"), ","), "route"},
		{strings.Join(r.Header.Values("X-Appended"), ","), "client,route"},
		{r.Header.Get("X-If-Absent"), "client"},
		{r.Header.Get("X-Client"), "127.0.0.1"},
		{r.Header.Get("X-Percent"), "100%"},
		{r.Header.Get("X-Vhost"), "vh"},
		{r.Header.Get("X-Secret"), ""},
		{r.Header.Get("X-Hop"), ""},
		{r.Header.Get("User-Agent"), "Go-http-client/1.1"},
		{resp.Header.Get("X-Resp"), "yes"},
		{resp.Header.Get("X-Internal"), ""},
		{resp.Header.Get("X-App"), "app"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// Other routes are untouched.
	do(t, h1Client(t), "GET", urlOf(svc, "/other"), "")
	if r := <-seen; r.URL.Path != "/other" || r.Header.Get("X-Set") != "" || r.Header.Get("X-Vhost") != "vh" {
		t.Errorf("catch-all route: path %q, x-set %q, x-vhost %q", r.URL.Path, r.Header.Get("X-Set"), r.Header.Get("X-Vhost"))
	}
}

func TestRouting(t *testing.T) {
	tag := func(name string) net.Addr { return newStatusApp(t, name, 200).addr }
	match := func(m *routev3.RouteMatch, cluster string) *routev3.Route { return routeTo(cluster, m) }
	hdr := func(name string, sm *routev3.HeaderMatcher) *routev3.RouteMatch {
		sm.Name = name
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{sm}}
	}
	rc := &routev3.RouteConfiguration{Name: "svc", VirtualHosts: []*routev3.VirtualHost{
		{Name: "api", Domains: []string{"api.example.com"}, Routes: []*routev3.Route{match(prefixMatch("/"), "api")}},
		{Name: "wild", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{match(prefixMatch("/"), "wild")}},
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{
			match(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, "exact"),
			match(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/[0-9]+"}}}, "regex"),
			match(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/CASE"}, CaseSensitive: wrapperspb.Bool(false)}, "case"),
			match(hdr("x-canary", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}), "canary"),
			match(hdr(":method", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("DELETE")}}), "delete"),
			match(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/q"}, QueryParameters: []*routev3.QueryParameterMatcher{{
				Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("2")},
			}}}, "query"),
			match(hdr("x-env", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: prefix("prod")}, InvertMatch: true}), "not-prod"),
			match(prefixMatch("/known"), "default"),
		}},
	}}
	names := []string{"api", "wild", "exact", "regex", "case", "canary", "delete", "query", "not-prod", "default"}
	clusters := map[string][]net.Addr{}
	for _, n := range names {
		clusters[n] = []net.Addr{tag(n)}
	}
	_, svc := edge(t, edgeConfig(rc, clusters), nil)
	c := h1Client(t)
	for _, tc := range []struct {
		method, host, path string
		hdr                []string
		want               string // cluster, or "404"
	}{
		{"GET", "api.example.com", "/x", nil, "api"},
		{"GET", "API.example.com", "/x", nil, "api"},
		{"GET", "web.example.com", "/x", nil, "wild"},
		{"GET", "example.com", "/known", []string{"X-Env", "prod-1"}, "default"},
		{"GET", "svc", "/exact", nil, "exact"},
		{"GET", "svc", "/exact?q=1", nil, "exact"},
		{"GET", "svc", "/exact/more", []string{"X-Env", "prod"}, "404"},
		{"GET", "svc", "/re/42", nil, "regex"},
		{"GET", "svc", "/re/x", []string{"X-Env", "prod"}, "404"},
		{"GET", "svc", "/case/x", nil, "case"},
		{"GET", "svc", "/x", []string{"X-Canary", ""}, "canary"},
		{"DELETE", "svc", "/x", nil, "delete"},
		{"GET", "svc", "/q?v=2", nil, "query"},
		{"GET", "svc", "/q?v=3", []string{"X-Env", "prod"}, "404"},
		{"GET", "svc", "/x", []string{"X-Env", "staging"}, "not-prod"},
		{"GET", "svc", "/x", nil, "404"}, // a missing header fails even an inverted match
	} {
		req, _ := http.NewRequest(tc.method, urlOf(svc, tc.path), nil)
		req.Host = tc.host
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			req.Header.Set(tc.hdr[i], tc.hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b)
		if resp.StatusCode == 404 {
			got = "404"
		}
		if got != tc.want {
			t.Errorf("%s %s%s %v: routed to %q, want %q", tc.method, tc.host, tc.path, tc.hdr, got, tc.want)
		}
	}
}

// recordingPicker records the hash keys it is given.
type recordingPicker struct {
	picker
	mu   sync.Mutex
	keys []pickRequest
}

func (r *recordingPicker) pick(req pickRequest) *host {
	r.mu.Lock()
	r.keys = append(r.keys, req)
	r.mu.Unlock()
	return r.picker.pick(req)
}

func (r *recordingPicker) last() pickRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[len(r.keys)-1]
}

func TestHashPolicies(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	rec := &recordingPicker{}
	balance := func(cl *cluster) (picker, guard) {
		rec.picker = cl.picker
		return rec, admitAll{}
	}
	rc := svcRoutes("c", func(r *routev3.RouteAction) {
		r.HashPolicy = []*routev3.RouteAction_HashPolicy{
			{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}, Terminal: true},
			{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "user"}}, Terminal: true},
			{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: durationpb.New(time.Hour), Path: "/"}}},
		}
	})
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), balance)
	c := h1Client(t)
	key := func(path string, hdr ...string) (pickRequest, *http.Response) {
		resp, _ := do(t, c, "GET", urlOf(svc, path), "", hdr...)
		return rec.last(), resp
	}
	alice1, _ := key("/", "X-User", "alice")
	alice2, _ := key("/other", "X-User", "alice")
	bob, _ := key("/", "X-User", "bob")
	if !alice1.hasHash || alice1.hash != alice2.hash || alice1.hash == bob.hash {
		t.Errorf("header keys: alice %v/%v, bob %v", alice1, alice2, bob)
	}
	q1, _ := key("/?user=carol")
	q2, _ := key("/x?user=carol")
	if !q1.hasHash || q1.hash != q2.hash || q1.hash == alice1.hash {
		t.Errorf("query keys: %v %v", q1, q2)
	}
	// No header nor parameter: the cookie policy makes a cookie, and the
	// request that sends it back hashes the same.
	gen, resp := key("/")
	cookie := resp.Header.Get("Set-Cookie")
	if !gen.hasHash || !strings.HasPrefix(cookie, `session="`) || !strings.HasSuffix(cookie, `"; Max-Age=3600; Path=/; HttpOnly`) {
		t.Fatalf("generated cookie %q, key %v", cookie, gen)
	}
	value := strings.TrimSuffix(strings.TrimPrefix(cookie, `session="`), `"; Max-Age=3600; Path=/; HttpOnly`)
	back, resp := key("/", "Cookie", "session="+value)
	if back.hash != gen.hash || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("cookie sent back: key %v, want %v; set-cookie %q", back, gen, resp.Header.Get("Set-Cookie"))
	}
}

func TestHashFolding(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://svc/?q=1", nil)
	r.Header.Set("A", "1")
	r.Header.Set("B", "2")
	hp := func(name string, terminal bool) hashPolicy {
		return hashPolicy{kind: hashHeader, name: name, terminal: terminal}
	}
	q := &lazyQuery{r: r}
	a, _, _ := requestHash([]hashPolicy{hp("A", false)}, r, q, "")
	ab, _, _ := requestHash([]hashPolicy{hp("A", false), hp("B", false)}, r, q, "")
	aTerm, _, _ := requestHash([]hashPolicy{hp("A", true), hp("B", false)}, r, q, "")
	missingThenA, _, _ := requestHash([]hashPolicy{hp("Missing", true), hp("A", false)}, r, q, "")
	aa, _, _ := requestHash([]hashPolicy{hp("A", false), hp("A", false)}, r, q, "")
	_, none, _ := requestHash([]hashPolicy{hp("Missing", false)}, r, q, "")
	ip, ok, _ := requestHash([]hashPolicy{{kind: hashSourceIP}}, r, q, "10.0.0.1")
	switch {
	case ab == a:
		t.Error("a second policy did not change the key")
	case aTerm != a:
		t.Error("a terminal policy with a value did not stop the evaluation")
	case missingThenA != a:
		t.Error("a terminal policy without a value stopped the evaluation")
	case aa == 0:
		t.Error("two identical policies cancelled each other out")
	case none:
		t.Error("a key without any value")
	case !ok || ip == 0:
		t.Error("no source IP key")
	}
}

// countingGuard admits what its limits allow and counts every call.
type countingGuard struct {
	refuseRequests, refuseRetries, refuseConnections bool

	mu                     sync.Mutex
	requests, requestsDone int
	retries, retriesDone   int
	conns, connsClosed     int
	started, ended         int
	outcomes               []outcome
}

func (g *countingGuard) admitRequest() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuseRequests {
		return false
	}
	g.requests++
	return true
}
func (g *countingGuard) requestDone() { g.mu.Lock(); g.requestsDone++; g.mu.Unlock() }
func (g *countingGuard) admitRetry() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuseRetries {
		return false
	}
	g.retries++
	return true
}
func (g *countingGuard) retryDone() { g.mu.Lock(); g.retriesDone++; g.mu.Unlock() }
func (g *countingGuard) admitConnection(*host) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuseConnections {
		return false
	}
	g.conns++
	return true
}
func (g *countingGuard) connectionClosed(*host) { g.mu.Lock(); g.connsClosed++; g.mu.Unlock() }
func (g *countingGuard) attemptStarted(*host)   { g.mu.Lock(); g.started++; g.mu.Unlock() }
func (g *countingGuard) attemptEnded(_ *host, o outcome) {
	g.mu.Lock()
	g.ended++
	g.outcomes = append(g.outcomes, o)
	g.mu.Unlock()
}

func TestGuardSeam(t *testing.T) {
	bad, good := newStatusApp(t, "bad", 503), newStatusApp(t, "good", 200)
	rc := svcRoutes("c", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicyOf("5xx", 1) })
	cfg := edgeConfig(rc, map[string][]net.Addr{"c": {bad.addr, good.addr}})

	t.Run("accounting", func(t *testing.T) {
		g := &countingGuard{}
		p, svc := edge(t, cfg, func(cl *cluster) (picker, guard) { return cl.picker, g })
		c := h1Client(t)
		for range 4 {
			if resp, _ := do(t, c, "GET", urlOf(svc, "/"), ""); resp.StatusCode != 200 {
				t.Fatal(resp.Status)
			}
		}
		c.CloseIdleConnections()
		p.Close() // closes the pooled connections
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.requests != 4 || g.requestsDone != 4 {
			t.Errorf("requests %d admitted, %d done; want 4, 4", g.requests, g.requestsDone)
		}
		// Round robin lands on the bad host first each time (the retry
		// took the good host's turn).
		if g.retries != 4 || g.retriesDone != 4 {
			t.Errorf("retries %d admitted, %d done; want 4, 4", g.retries, g.retriesDone)
		}
		if g.started != 8 || g.ended != 8 {
			t.Errorf("attempts %d started, %d ended; want 8, 8", g.started, g.ended)
		}
		if g.conns != 2 || g.connsClosed != 2 {
			t.Errorf("connections %d admitted, %d closed; want 2, 2 (one per host, reused)", g.conns, g.connsClosed)
		}
		var n503, n200 int
		for _, o := range g.outcomes {
			switch {
			case o.status == 503 && o.gatewayError():
				n503++
			case o.status == 200 && !o.gatewayError():
				n200++
			}
		}
		if n503 != 4 || n200 != 4 {
			t.Errorf("outcomes %v, want four 503s and four 200s", g.outcomes)
		}
	})
	t.Run("request overflow", func(t *testing.T) {
		p, svc := edge(t, cfg, func(cl *cluster) (picker, guard) { return cl.picker, &countingGuard{refuseRequests: true} })
		resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
		if resp.StatusCode != 503 || body != bodyOverflow || resp.Header.Get("X-Envoy-Overloaded") != "true" {
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
		if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "requests"); n != 1 {
			t.Errorf("overflow = %v, want 1", n)
		}
	})
	t.Run("retry overflow", func(t *testing.T) {
		p, svc := edge(t, cfg, func(cl *cluster) (picker, guard) { return cl.picker, &countingGuard{refuseRetries: true} })
		if resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), ""); resp.StatusCode != 503 || body != "bad" {
			t.Fatalf("got %d %q, want the first host's 503", resp.StatusCode, body)
		}
		if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "retries"); n != 1 {
			t.Errorf("overflow = %v, want 1", n)
		}
	})
	t.Run("connection overflow", func(t *testing.T) {
		p, svc := edge(t, cfg, func(cl *cluster) (picker, guard) { return cl.picker, &countingGuard{refuseConnections: true} })
		resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
		if resp.StatusCode != 503 || body != bodyOverflow || resp.Header.Get("X-Envoy-Overloaded") != "true" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if n := metric(t, p, "trellis_proxy_upstream_overflow_total", "cluster", "c", "kind", "connections"); n != 1 {
			t.Errorf("overflow = %v, want 1", n)
		}
	})
}

// resetApp closes every connection without answering.
func resetApp(t *testing.T) net.Addr {
	return newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})).addr
}

func TestLocalReplies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		eps      func(*testing.T) []net.Addr
		want     int
		wantBody string
		grpc     codes.Code
	}{
		{"no endpoints", func(*testing.T) []net.Addr { return nil }, 503, bodyNoHealthy, codes.Unavailable},
		{"connect failure", func(t *testing.T) []net.Addr { return []net.Addr{deadAddr(t)} }, 503, bodyConnectFailure, codes.Unavailable},
		{"reset", func(t *testing.T) []net.Addr { return []net.Addr{resetApp(t)} }, 503, bodyReset, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": tc.eps(t)}), nil)
			resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/"), "")
			if resp.StatusCode != tc.want || body != tc.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.want, tc.wantBody)
			}
			_, err := grpcClient(t, svc).EmptyCall(testCtx(t), &testgrpc.Empty{})
			if s := status.Convert(err); s.Code() != tc.grpc || s.Message() != tc.wantBody {
				t.Errorf("gRPC: %v, want %s %q", err, tc.grpc, tc.wantBody)
			}
			if n := metric(t, p, "trellis_proxy_http_responses_total", "code", "200"); n != 1 {
				t.Errorf("responses 200 = %v, want 1 (the gRPC local reply)", n)
			}
		})
	}
	t.Run("no route", func(t *testing.T) {
		a := newStatusApp(t, "a", 200)
		rc := &routev3.RouteConfiguration{Name: "svc", VirtualHosts: []*routev3.VirtualHost{{
			Name: "svc", Domains: []string{"*"}, Routes: []*routev3.Route{routeTo("c", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/only"}})},
		}}}
		_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)
		if resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/other"), ""); resp.StatusCode != 404 || body != "" {
			t.Errorf("got %d %q, want 404 without a body", resp.StatusCode, body)
		}
		_, err := grpcClient(t, svc).EmptyCall(testCtx(t), &testgrpc.Empty{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("gRPC: %v, want Unimplemented", err)
		}
	})
}

func TestL7Metrics(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	p, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	c := h1Client(t)
	for range 3 {
		do(t, c, "GET", urlOf(svc, "/"), "")
	}
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"trellis_proxy_http_requests_total", []string{"listener", "svc"}, 3},
		{"trellis_proxy_http_responses_total", []string{"listener", "svc", "code", "200"}, 3},
		{"trellis_proxy_http_request_duration_seconds", []string{"listener", "svc"}, 3},
		{"trellis_proxy_http_requests_denied_total", []string{"listener", "svc"}, 0},
		{"trellis_proxy_upstream_requests_active", []string{"cluster", "c"}, 0},
		{"trellis_proxy_upstream_retries_total", []string{"cluster", "c"}, 0},
		{"trellis_proxy_connections_total", []string{"listener", "svc"}, 1},
		{"trellis_proxy_connections_active", []string{"listener", "svc"}, 1},
	} {
		waitMetric(t, p, m.want, m.name, m.labels...)
	}
	if rx := metric(t, p, "trellis_proxy_bytes_total", "direction", "rx"); rx == 0 {
		t.Error("no bytes received counted")
	}
	c.CloseIdleConnections()
	waitMetric(t, p, 0, "trellis_proxy_connections_active", "listener", "svc")
	waitMetric(t, p, 1, "trellis_proxy_connection_duration_seconds", "listener", "svc")
}

// An upstream request in flight is active until its response ends.
func TestUpstreamRequestsActive(t *testing.T) {
	release := make(chan struct{})
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		<-release
	}))
	p, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	resp, err := h1Client(t).Get(urlOf(svc, "/"))
	if err != nil {
		t.Fatal(err)
	}
	waitMetric(t, p, 1, "trellis_proxy_upstream_requests_active", "cluster", "c")
	close(release)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitMetric(t, p, 0, "trellis_proxy_upstream_requests_active", "cluster", "c")
}

func TestL7BadConfigRefused(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	good := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}})
	p, svc := edge(t, good, nil)
	mutateHCM := func(c *Config, f func(*hcmv3.HttpConnectionManager)) { editHCM(t, c, f) }
	action := func(c *Config) *routev3.RouteAction { return c.Routes[0].VirtualHosts[0].Routes[0].GetRoute() }
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"route to an unknown cluster", func(c *Config) {
			action(c).ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nope"}
		}, `no cluster "nope"`},
		{"weighted clusters", func(c *Config) {
			action(c).ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{}}
		}, "weighted_clusters"},
		{"missing route configuration", func(c *Config) { c.Routes = nil }, `no route configuration "svc"`},
		{"route configuration twice", func(c *Config) { c.Routes = append(c.Routes, c.Routes[0]) }, "defined twice"},
		{"unknown retry_on", func(c *Config) { action(c).RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,sometimes"} }, `"sometimes"`},
		{"unknown header command", func(c *Config) {
			c.Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "%HOSTNAME%"}}}
		}, "%HOSTNAME%"},
		{"host header", func(c *Config) { c.Routes[0].RequestHeadersToRemove = []string{":authority"} }, `":authority"`},
		{"CONNECT upgrade", func(c *Config) {
			mutateHCM(c, func(h *hcmv3.HttpConnectionManager) {
				h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}, {UpgradeType: "CONNECT"}}
			})
		}, "upgrade_configs[1]: upgrade_type CONNECT is not supported"},
		{"upgrade without a type", func(c *Config) {
			mutateHCM(c, func(h *hcmv3.HttpConnectionManager) {
				h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{}}
			})
		}, "upgrade_configs[0]: upgrade_type is empty"},
		{"upgrade filters", func(c *Config) {
			mutateHCM(c, func(h *hcmv3.HttpConnectionManager) {
				h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Filters: h.HttpFilters}}
			})
		}, "upgrade_configs[0]"},
		{"unknown http filter", func(c *Config) {
			mutateHCM(c, func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "x", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(durationpb.New(time.Second))}}}, h.HttpFilters...)
			})
		}, "unsupported config"},
		{"router not last", func(c *Config) {
			mutateHCM(c, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = append(h.HttpFilters, h.HttpFilters[0]) })
		}, "the router must be the last filter"},
		{"direct response", func(c *Config) {
			c.Routes[0].VirtualHosts[0].Routes[0].Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}
		}, "direct_response"},
		{"lb policy", func(c *Config) { c.Clusters[0].LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }, "lb_policy"},
		{"health checks", func(c *Config) { c.Clusters[0].HealthChecks = []*corev3.HealthCheck{{}} }, "health_checks"},
		{"endpoint twice", func(c *Config) {
			eps := c.Endpoints[0].Endpoints[0]
			eps.LbEndpoints = append(eps.LbEndpoints, eps.LbEndpoints[0])
		}, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cloneL7(good)
			tc.mutate(&cfg)
			err := p.Apply(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Apply: %v, want an error with %q", err, tc.wantErr)
			}
			if resp, _ := do(t, h1Client(t), "GET", urlOf(svc, "/"), ""); resp.StatusCode != 200 {
				t.Fatalf("after a refused Apply: %s", resp.Status)
			}
		})
	}
}

// Cluster settings of load balancing and resiliency are parsed with
// Envoy's defaults (balancer_test.go shows them applied).
func TestClusterSettingsParsed(t *testing.T) {
	c := plainCluster("c", false)
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(64)}}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(7),
		RetryBudget:    &clusterv3.CircuitBreakers_Thresholds_RetryBudget{},
	}}}
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(3), BaseEjectionTime: durationpb.New(time.Second)}
	st := &state{clusters: map[string]*cluster{}}
	cl, err := st.compileCluster(c, map[string]*endpointv3.ClusterLoadAssignment{"c": loadAssignment("c", anyPort)})
	if err != nil {
		t.Fatal(err)
	}
	if cl.lb.policy != clusterv3.Cluster_RING_HASH || cl.lb.minRingSize != 64 || cl.lb.maxRingSize != 8<<20 {
		t.Errorf("lb = %+v", cl.lb)
	}
	want := circuitLimits{maxConnections: 7, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3,
		retryBudget: true, budgetPercent: 20, minRetryConcurrency: 3}
	if cl.limits != want {
		t.Errorf("limits = %+v, want %+v", cl.limits, want)
	}
	if o := cl.outlier; !o.enabled || o.consecutive5xx != 3 || o.consecutiveGatewayFailure != 5 || o.enforcingConsecutive5xx != 100 ||
		o.baseEjectionTime != time.Second || o.interval != 10*time.Second || o.maxEjectionPercent != 10 || o.maxEjectionTime != 300*time.Second {
		t.Errorf("outlier = %+v", o)
	}
}

func cloneL7(c Config) Config {
	out := cloneConfig(c)
	for _, r := range c.Routes {
		out.Routes = append(out.Routes, proto.Clone(r).(*routev3.RouteConfiguration))
	}
	return out
}

// Close ends HTTP connections and requests in flight, upstream and
// downstream, and every goroutine of the proxy.
func TestCloseEndsHTTP(t *testing.T) {
	before := runtime.NumGoroutine()
	started := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		started <- struct{}{}
		<-r.Context().Done()
	})}
	var appWG sync.WaitGroup
	appWG.Go(func() { appSrv.Serve(ln) })

	p := New(Options{})
	if err := p.Apply(edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {ln.Addr()}})); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr}).Get(urlOf(p.ListenerAddr("svc"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the response in flight ended cleanly after Close")
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	appSrv.Close()
	appWG.Wait()

	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}
