package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// The intentions of an http service decide each request by its
// permissions (first match wins, else the mesh's default deny): path
// exact and prefix, methods, headers. A denied request gets db's
// sidecar's 403 and never reaches db; an allowed one on the same
// connection does; the sidecar counts the denials. A grpc service's
// denied call fails with PERMISSION_DENIED.
func TestL7IntentionsDecideEachRequest(t *testing.T) {
	a := StartAgent(t)
	a.SetMeshDefaultPolicy("deny")
	a.PutConfigEntry(map[string]any{"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
	a.PutConfigEntry(map[string]any{"Kind": "service-defaults", "Name": "billing", "Protocol": "grpc"})
	a.PutConfigEntry(map[string]any{"Kind": "service-intentions", "Name": "db", "Sources": []any{
		map[string]any{"Name": "web", "Permissions": []any{
			perm("deny", map[string]any{"PathPrefix": "/admin"}),
			perm("deny", map[string]any{"PathPrefix": "/api/", "Header": []any{map[string]any{"Name": "x-debug", "Present": true}}}),
			perm("allow", map[string]any{"PathExact": "/hello"}),
			perm("allow", map[string]any{"PathPrefix": "/api/", "Methods": []string{"GET", "HEAD"}}),
			perm("allow", map[string]any{"PathPrefix": "/write", "Header": []any{map[string]any{"Name": "x-role", "Exact": "writer"}}}),
		}},
	}})
	a.PutConfigEntry(map[string]any{"Kind": "service-intentions", "Name": "billing", "Sources": []any{
		map[string]any{"Name": "web", "Permissions": []any{
			perm("allow", map[string]any{"PathExact": "/grpc.testing.TestService/UnaryCall"}),
		}},
	}})

	app := StartHTTPApp(t, "db")
	billing := startGRPCApp(t)
	db := a.Register(ServiceOptions{Name: "db", Port: app.Port()})
	bill := a.Register(ServiceOptions{Name: "billing", Port: billing.port()})
	web := a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db", "billing"}})
	dbProxy := a.StartSidecar(db)
	billProxy := a.StartSidecar(bill)
	a.StartSidecar(web)

	client := newClient(t)
	eventually(t, "web reaches db's /hello", func() error {
		r, err := send(client, "GET", "http://"+web.Upstreams["db"]+"/hello")
		if err != nil {
			return err
		}
		if r.code != http.StatusOK || r.body != "db" {
			return fmt.Errorf("GET /hello: %v", r)
		}
		return nil
	})

	// http: every request on one connection, decided on its own.
	deniedBefore := dbProxy.Stats().Sum(statHTTPDenied, "listener", publicLn)
	conn := dialHTTP(t, web.Upstreams["db"])
	cases := []struct {
		method, target string
		hdr            []string
		allowed        bool
	}{
		{"GET", "/hello", nil, true},
		{"GET", "/hello/there", nil, false}, // PathExact
		{"POST", "/hello", nil, true},       // no method rule
		{"GET", "/admin", nil, false},       // the deny comes first
		{"GET", "/admin/users", nil, false},
		{"GET", "/api/items", nil, true},
		{"DELETE", "/api/items", nil, false}, // not among the Methods
		{"HEAD", "/api/items", nil, true},
		{"GET", "/api/items", []string{"x-debug", "1"}, false}, // deny by header first
		{"POST", "/write/doc", []string{"x-role", "writer"}, true},
		{"POST", "/write/doc", []string{"x-role", "reader"}, false},
		{"POST", "/write/doc", nil, false},
		{"GET", "/elsewhere", nil, false},                 // no permission: the default
		{"GET", "/api/items?admin=1", nil, true},          // paths match without the query
		{"GET", "/hello?status=403", nil, true},           // the app's own 403 ...
		{"GET", "/hello?status=503", nil, true},           // ... and 503 pass unchanged
		{"PUT", "/admin?x=/hello", nil, false},            // a query naming /hello changes nothing
		{"GET", "/hello", []string{"x-debug", "1"}, true}, // that deny is for /api/ only
	}
	var wantSeen []string
	denied := 0
	for _, tc := range cases {
		before := app.Requests()
		r, err := conn.do(tc.method, tc.target, tc.hdr...)
		if err != nil {
			t.Fatalf("%s %s %v: %v", tc.method, tc.target, tc.hdr, err)
		}
		reached := app.Requests() - before
		if !tc.allowed {
			denied++
			if r.code != http.StatusForbidden || r.body != rbacDenied("db") || reached != 0 {
				t.Errorf("%s %s %v: got %v (the app saw %d requests), want the sidecar's 403 %q and nothing sent to the app",
					tc.method, tc.target, tc.hdr, r, reached, rbacDenied("db"))
			}
			continue
		}
		wantCode := http.StatusOK
		if _, s, ok := strings.Cut(tc.target, "?status="); ok {
			wantCode, _ = strconv.Atoi(s)
		}
		if r.code != wantCode || (tc.method != "HEAD" && r.body != "db") || reached != 1 {
			t.Errorf("%s %s %v: got %v (the app saw %d requests), want the app's %d \"db\"", tc.method, tc.target, tc.hdr, r, reached, wantCode)
		}
		path, _, _ := strings.Cut(tc.target, "?")
		wantSeen = append(wantSeen, tc.method+" "+path)
	}
	if seen := app.Seen(); !slices.Equal(seen[len(seen)-len(wantSeen):], wantSeen) {
		t.Errorf("the app saw %q, want the allowed requests %q", seen[len(seen)-len(wantSeen):], wantSeen)
	}
	dbProxy.WaitStat(statHTTPDenied, deniedBefore+float64(denied), "listener", publicLn)
	if n := dbProxy.Stats().Sum(statDenied, "listener", publicLn); n != 0 {
		t.Errorf("db's sidecar refused %v connections: an http service's intentions decide requests, not connections", n)
	}

	// grpc: a denied call is PERMISSION_DENIED, the next one on the same
	// connection passes.
	cc, err := grpc.NewClient("passthrough:///"+web.Upstreams["billing"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	eventually(t, "web reaches billing's UnaryCall", func() error {
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	})
	_, err = c.EmptyCall(ctx, &testgrpc.Empty{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != rbacDenied("billing") {
		t.Fatalf("EmptyCall: got %v, want PERMISSION_DENIED %q", err, rbacDenied("billing"))
	}
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall after a denied call on the same connection: %v", err)
	}
	if got := billing.methods(); slices.Contains(got, "/grpc.testing.TestService/EmptyCall") {
		t.Fatalf("the denied EmptyCall reached billing: it saw %q", got)
	}
	billProxy.WaitStat(statHTTPDenied, 1, "listener", publicLn)
}

// perm is an L7 permission of service-intentions.
func perm(action string, http map[string]any) map[string]any {
	return map[string]any{"Action": action, "HTTP": http}
}

// grpcApp is a gRPC application serving grpc.testing.TestService (echo
// UnaryCall; EmptyCall and the rest unimplemented), recording the
// methods called.
type grpcApp struct {
	ln net.Listener

	mu   sync.Mutex
	seen []string // guarded by mu
}

type echoService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// startGRPCApp serves a grpcApp on a free loopback port until the test
// ends.
func startGRPCApp(t testing.TB) *grpcApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcApp{ln: ln}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		g.mu.Lock()
		g.seen = append(g.seen, info.FullMethod)
		g.mu.Unlock()
		return h(ctx, req)
	}))
	testgrpc.RegisterTestServiceServer(s, echoService{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-served
	})
	return g
}

func (g *grpcApp) port() int { return g.ln.Addr().(*net.TCPAddr).Port }

// methods lists the methods called, in order.
func (g *grpcApp) methods() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.seen)
}
