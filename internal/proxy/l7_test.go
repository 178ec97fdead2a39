package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/connect/ca"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// pair is web's and db's sidecars for an http service: a client of web's
// upstream listener "db" → web → (mTLS, ALPN) → db's public listener →
// db's app.
type pair struct {
	ca       *testCA
	roots    []string
	db, web  *Proxy
	dbLeaf   *proxycfg.Leaf
	webLeaf  *proxycfg.Leaf
	dbCfg    Config
	webCfg   Config
	upstream net.Addr // web's upstream listener for db
}

// sidecarProtocolHeader is added by db's sidecar to the requests it
// forwards: the protocol web spoke to it.
const sidecarProtocolHeader = "X-Sidecar-Protocol"

func newPair(t *testing.T, app net.Addr, h2App bool, rules *rbacv3.RBAC) *pair {
	t.Helper()
	p := &pair{ca: newCA(t, td)}
	p.roots = []string{p.ca.root.CertPEM}
	p.dbLeaf, p.webLeaf = p.ca.leaf(t, td, "db"), p.ca.leaf(t, td, "web")
	if rules == nil {
		rules = httpRBACAllowAll()
	}
	p.dbCfg = inboundConfig("db", p.dbLeaf, p.roots, app, h2App, rules)
	rt := routeTo(localApp, prefixMatch("/"))
	rt.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: sidecarProtocolHeader, Value: "%PROTOCOL%"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	p.dbCfg.Listeners[0] = publicListenerL7("db", rules, rt)
	p.db = newProxy(t, p.dbCfg)
	p.webCfg = outboundTo(inboundConfig("web", p.webLeaf, p.roots, deadAddr(t), false, nil), "db", addr(t, p.db, pubListener))
	p.web = newProxy(t, p.webCfg)
	p.upstream = addr(t, p.web, "db")
	return p
}

// echoApp answers with what it received: the protocol, path, method and
// body, and the sidecar's protocol header.
func echoApp(t *testing.T) *app {
	return newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-App-Proto", r.Proto)
		w.Header().Set("X-App-Sidecar-Proto", r.Header.Get(sidecarProtocolHeader))
		w.Header().Set("X-App-Path", r.URL.RequestURI())
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
}

func do(t *testing.T, c *http.Client, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestHTTPThroughPair(t *testing.T) {
	for _, tc := range []struct {
		name      string
		client    func(*testing.T) *http.Client
		h2App     bool
		wantProto string // what the app saw
	}{
		{"HTTP/1.1 client, HTTP/1.1 app", h1Client, false, "HTTP/1.1"},
		{"h2c client, h2c app", h2cClient, true, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := echoApp(t)
			p := newPair(t, a.addr, tc.h2App, nil)
			c := tc.client(t)
			resp, body := do(t, c, "POST", urlOf(p.upstream, "/a/b?q=1"), "payload")
			if resp.StatusCode != 200 || body != "POST /a/b payload" {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "POST /a/b payload")
			}
			if got := resp.Header.Get("X-App-Proto"); got != tc.wantProto {
				t.Errorf("the app spoke %s, want %s", got, tc.wantProto)
			}
			if got := resp.Header.Get("X-App-Sidecar-Proto"); got != "HTTP/2" {
				t.Errorf("web spoke %q to db, want HTTP/2 (ALPN h2 between sidecars)", got)
			}
			if got := resp.Header.Get("X-App-Path"); got != "/a/b?q=1" {
				t.Errorf("the app got %q, want /a/b?q=1", got)
			}
		})
	}
}

// A client offering only http/1.1 gets it from the public listener: ALPN
// is negotiated, not imposed.
func TestPublicListenerALPN(t *testing.T) {
	a := echoApp(t)
	p := newPair(t, a.addr, false, nil)
	for _, alpn := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}} {
		c := tlsClient(t, p.webLeaf, alpn...)
		resp, body := do(t, c, "GET", "https://"+addr(t, p.db, pubListener).String()+"/x", "")
		if resp.StatusCode != 200 || body != "GET /x " {
			t.Fatalf("ALPN %v: got %d %q", alpn, resp.StatusCode, body)
		}
		if want := map[string]int{"h2": 2, "http/1.1": 1}[alpn[0]]; resp.ProtoMajor != want {
			t.Errorf("ALPN %v: spoke %s", alpn, resp.Proto)
		}
		if want := map[string]string{"h2": "HTTP/2", "http/1.1": "HTTP/1.1"}[alpn[0]]; resp.Header.Get("X-App-Sidecar-Proto") != want {
			t.Errorf("ALPN %v: db saw %s, want %s", alpn, resp.Header.Get("X-App-Sidecar-Proto"), want)
		}
	}
}

// testService is a gRPC test service: UnaryCall and FullDuplexCall echo
// their payloads, and answer the status a request asks for.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	onUnary func() // if set, runs before UnaryCall answers
}

func (ts testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if ts.onUnary != nil {
		ts.onUnary()
	}
	if s := req.GetResponseStatus(); s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if s := req.GetResponseStatus(); s.GetCode() != 0 {
			return status.Error(codes.Code(s.GetCode()), s.GetMessage())
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func grpcApp(t *testing.T) net.Addr { return grpcAppWith(t, nil) }

func grpcAppWith(t *testing.T, onUnary func()) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, testService{onUnary: onUnary})
	var wg sync.WaitGroup
	wg.Go(func() { s.Serve(ln) })
	t.Cleanup(func() {
		s.Stop()
		wg.Wait()
	})
	return ln.Addr()
}

func grpcClient(t *testing.T, a net.Addr) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+a.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func payload(s string) *testgrpc.Payload { return &testgrpc.Payload{Body: []byte(s)} }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoStream sends msg on s and waits for its echo: each message crosses
// both sidecars both ways before the next is sent, so nothing may wait
// in a buffer.
func echoStream(t *testing.T, s testgrpc.TestService_FullDuplexCallClient, msg string) {
	t.Helper()
	if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(msg)}); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	got, err := s.Recv()
	if err != nil || string(got.GetPayload().GetBody()) != msg {
		t.Fatalf("recv = %q, %v; want %q", got.GetPayload().GetBody(), err, msg)
	}
}

func TestGRPCThroughPair(t *testing.T) {
	p := newPair(t, grpcApp(t), true, nil)
	c := grpcClient(t, p.upstream)
	ctx := testCtx(t)

	t.Run("unary", func(t *testing.T) {
		resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload("ping")})
		if err != nil || string(resp.GetPayload().GetBody()) != "ping" {
			t.Fatalf("UnaryCall = %v, %v", resp, err)
		}
		_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
		if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
			t.Errorf("UnaryCall error = %v, want NotFound \"no such thing\"", err)
		}
	})
	t.Run("bidi stream", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			echoStream(t, s, fmt.Sprintf("message %d", i))
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF (status OK in the trailers)", err)
		}
	})
	t.Run("bidi stream ending in an error status", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		echoStream(t, s, "first")
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Aborted), Message: "stop"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); status.Code(err) != codes.Aborted || status.Convert(err).Message() != "stop" {
			t.Fatalf("Recv = %v, want Aborted \"stop\" from the trailers", err)
		}
	})
}

// rbacAllow is an ALLOW engine: each policy lets web do what its
// permission says.
func rbacAllow(perms map[string]*rbacv3.Permission) *rbacv3.RBAC {
	web := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: regexM("^spiffe://[^/]+/ns/[^/]+/dc/[^/]+/svc/web$"),
	}}}
	r := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	for name, p := range perms {
		r.Policies[name] = &rbacv3.Policy{Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{web}}
	}
	return r
}

func pathPerm(m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

func headerPerm(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m},
	}}}
}

func andPerm(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func notPerm(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

func TestRBACPerRequest(t *testing.T) {
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/public/app-forbids" {
			http.Error(w, "the app says no", http.StatusForbidden)
			return
		}
		io.WriteString(w, "ok")
	}))
	rules := rbacAllow(map[string]*rbacv3.Permission{
		"get public": andPerm(pathPerm(prefix("/public/")), headerPerm(":method", exact("GET"))),
		"admin":      andPerm(headerPerm("x-role", exact("admin")), notPerm(pathPerm(exact("/never")))),
	})
	p := newPair(t, a.addr, false, rules)
	c := h1Client(t)
	denied := 0
	for _, tc := range []struct {
		method, path string
		hdr          []string
		want         int
	}{
		{"GET", "/public/x", nil, 200},
		{"GET", "/public/x?with=query", nil, 200},
		{"POST", "/public/x", nil, 403},
		{"GET", "/private", nil, 403},
		{"GET", "/private", []string{"X-Role", "admin"}, 200},
		{"GET", "/private", []string{"X-Role", "user"}, 403},
		{"GET", "/never", []string{"X-Role", "admin"}, 403},
		{"GET", "/public/app-forbids", nil, 403},
	} {
		resp, body := do(t, c, tc.method, urlOf(p.upstream, tc.path), "", tc.hdr...)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %v: status %d, want %d", tc.method, tc.path, tc.hdr, resp.StatusCode, tc.want)
			continue
		}
		switch {
		case tc.want == 200 && body != "ok":
			t.Errorf("%s %s: body %q, want the app's", tc.method, tc.path, body)
		case tc.want == 403 && tc.path == "/public/app-forbids":
			if body != "the app says no\n" {
				t.Errorf("the app's own 403 was rewritten: %q", body)
			}
		case tc.want == 403:
			denied++
			if body != denyBody("db") || resp.Header.Get("Content-Type") != "text/plain" {
				t.Errorf("%s %s: denial %q (%s), want %q", tc.method, tc.path, body, resp.Header.Get("Content-Type"), denyBody("db"))
			}
		}
	}
	if n := metric(t, p.db, "trellis_proxy_http_requests_denied_total", "listener", pubListener); n != float64(denied) {
		t.Errorf("denied requests = %v, want %d", n, denied)
	}
	if n := metric(t, p.db, "trellis_proxy_connections_denied_total"); n != 0 {
		t.Errorf("denied connections = %v, want 0: HTTP RBAC decides per request", n)
	}
}

// Intentions that change apply to the next request of an open
// connection.
func TestRBACChangeAppliesToOpenConnection(t *testing.T) {
	a := echoApp(t)
	p := newPair(t, a.addr, false, nil)
	c := h1Client(t)
	if resp, _ := do(t, c, "GET", urlOf(p.upstream, "/x"), ""); resp.StatusCode != 200 {
		t.Fatalf("status %d before the change", resp.StatusCode)
	}
	cfg := p.dbCfg
	cfg.Listeners = append(cfg.Listeners[:0:0], publicListenerL7("db", rbacAllow(nil), nil))
	if err := p.db.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if resp, body := do(t, c, "GET", urlOf(p.upstream, "/x"), ""); resp.StatusCode != 403 || body != denyBody("db") {
		t.Fatalf("after denying: %d %q", resp.StatusCode, body)
	}
	if n := metric(t, p.db, "trellis_proxy_connections_total", "listener", pubListener); n != 1 {
		t.Errorf("db accepted %v connections, want 1: the open one served both", n)
	}
}

func TestGRPCDenied(t *testing.T) {
	rules := rbacAllow(map[string]*rbacv3.Permission{
		"unary only": pathPerm(exact("/grpc.testing.TestService/UnaryCall")),
	})
	p := newPair(t, grpcApp(t), true, rules)
	c := grpcClient(t, p.upstream)
	ctx := testCtx(t)
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("allowed call: %v", err)
	}
	_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != denyBody("db") {
		t.Fatalf("denied call = %v, want PermissionDenied %q", err, denyBody("db"))
	}
	s, err := c.FullDuplexCall(ctx)
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied stream = %v, want PermissionDenied", err)
	}
	// A gRPC local reply is HTTP 200, as Envoy's.
	if n := metric(t, p.db, "trellis_proxy_http_responses_total", "code", "200"); n != 3 {
		t.Errorf("responses 200 = %v, want 3", n)
	}
}

// Rotating the leaves of both sidecars keeps an open stream going, and
// the next handshake presents the new leaf.
func TestLeafRotationMidStream(t *testing.T) {
	p := newPair(t, grpcApp(t), true, nil)
	c := grpcClient(t, p.upstream)
	ctx := testCtx(t)
	s, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	echoStream(t, s, "before")

	newDB, newWeb := p.ca.leaf(t, td, "db"), p.ca.leaf(t, td, "web")
	dbCfg, webCfg := p.dbCfg, p.webCfg
	dbCfg.Secrets, webCfg.Secrets = secretsOf(newDB, p.roots...), secretsOf(newWeb, p.roots...)
	if err := p.db.Apply(dbCfg); err != nil {
		t.Fatal(err)
	}
	if err := p.web.Apply(webCfg); err != nil {
		t.Fatal(err)
	}
	echoStream(t, s, "after rotation")

	want, err := ca.ParseCert(newDB.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	tc := dialPublic(t, addr(t, p.db, pubListener), newWeb, p.ca.pool())
	if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(want) {
		t.Errorf("next handshake presented serial %s, want the rotated leaf's %s", got.SerialNumber, want.SerialNumber)
	}
	tc.Close()
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("call after rotation: %v", err)
	}
	echoStream(t, s, "still there")
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
}

// Requests between the sidecars share one HTTP/2 connection.
func TestPairMultiplexes(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			arrived.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))
	p := newPair(t, a.addr, true, nil)
	c := h1Client(t)
	if resp, _ := do(t, c, "GET", urlOf(p.upstream, "/warm"), ""); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	const n = 20
	arrived.Add(n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := c.Get(urlOf(p.upstream, "/wait"))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = errors.New(resp.Status)
				}
			}
			errs <- err
		})
	}
	arrived.Wait() // all n are in flight at once
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := metric(t, p.db, "trellis_proxy_connections_total", "listener", pubListener); got != 1 {
		t.Errorf("web opened %v connections to db, want 1 (HTTP/2 multiplexing)", got)
	}
	if got := a.accepted.Load(); got != 1 {
		t.Errorf("db opened %d connections to its h2c app, want 1", got)
	}
}
