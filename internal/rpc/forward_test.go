package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestForwardHTTPRoundTrip(t *testing.T) {
	checkGoroutines(t)
	type seen struct {
		method, path, rawPath, query, host, requestURI string
		header                                         http.Header
		body                                           string
		contentLength                                  int64
		dc                                             string
		forwarded                                      bool
		remote                                         string
	}
	got := make(chan seen, 1)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		dc, ok := ForwardedDatacenter(r)
		got <- seen{
			method: r.Method, path: r.URL.Path, rawPath: r.URL.RawPath, query: r.URL.RawQuery,
			host: r.Host, requestURI: r.RequestURI, header: r.Header, body: string(body),
			contentLength: r.ContentLength, dc: dc, forwarded: ok, remote: r.RemoteAddr,
		}
		w.Header().Set("X-Consul-Index", "42")
		w.Header()["X-Multi"] = []string{"a", "b"}
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and ")
		io.WriteString(w, "stout")
		w.Header().Set("X-Too-Late", "ignored") // after WriteHeader, as in net/http
	}))
	client := newClient(t, ClientConfig{})

	in := httptest.NewRequest("PUT", "http://agent.local:8500/v1/kv/a%2Fb/c?cas=5&dc=dc2&flags=7", strings.NewReader("value bytes \x00\xff"))
	in.Header.Set("X-Consul-Token", "secret")
	in.Header["X-Multi"] = []string{"1", "2"}
	in.Header.Set("Connection", "keep-alive, X-Hop")
	in.Header.Set("X-Hop", "dropped")
	req, err := RequestFromHTTP(in, 1024)
	if err != nil {
		t.Fatal(err)
	}
	req.Datacenter = "dc2"

	resp, err := client.ForwardHTTP(t.Context(), m.Addr().String(), req)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	want := seen{
		method: "PUT", path: "/v1/kv/a/b/c", rawPath: "/v1/kv/a%2Fb/c", query: "cas=5&dc=dc2&flags=7",
		host: "agent.local:8500", requestURI: "/v1/kv/a%2Fb/c?cas=5&dc=dc2&flags=7",
		header:        http.Header{"X-Consul-Token": {"secret"}, "X-Multi": {"1", "2"}},
		body:          "value bytes \x00\xff",
		contentLength: int64(len("value bytes \x00\xff")), dc: "dc2", forwarded: true,
	}
	if s.remote == "" {
		t.Error("handler saw no RemoteAddr")
	}
	s.remote = ""
	if !reflect.DeepEqual(s, want) {
		t.Errorf("handler saw\n%+v\nwant\n%+v", s, want)
	}

	if resp.Status != http.StatusTeapot || string(resp.Body) != "short and stout" {
		t.Errorf("response %d %q, want 418 %q", resp.Status, resp.Body, "short and stout")
	}
	wantHeader := map[string][]string{"X-Consul-Index": {"42"}, "X-Multi": {"a", "b"}, "Content-Length": {"15"}}
	if !reflect.DeepEqual(resp.Header, wantHeader) {
		t.Errorf("response header %v, want %v", resp.Header, wantHeader)
	}

	rec := httptest.NewRecorder()
	if err := resp.Write(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusTeapot || rec.Body.String() != "short and stout" || rec.Header().Get("X-Consul-Index") != "42" ||
		!reflect.DeepEqual(rec.Header()["X-Multi"], []string{"a", "b"}) {
		t.Errorf("written response %d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}

func TestForwardHTTPEmptyBodyAndDefaults(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody || r.ContentLength != 0 {
			t.Errorf("body %v, length %d; want http.NoBody, 0", r.Body, r.ContentLength)
		}
		if _, ok := ForwardedDatacenter(r); !ok {
			t.Error("ForwardedDatacenter: not forwarded")
		}
	}))
	client := newClient(t, ClientConfig{})
	resp, err := client.ForwardHTTP(t.Context(), m.Addr().String(), &HTTPRequest{Method: "GET", Path: "/v1/status/leader"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || len(resp.Body) != 0 {
		t.Errorf("response %d %q, want 200 and no body", resp.Status, resp.Body)
	}
	if _, ok := ForwardedDatacenter(httptest.NewRequest("GET", "/", nil)); ok {
		t.Error("ForwardedDatacenter: a local request reported forwarded")
	}
}

func TestForwardHTTPPaths(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path+" "+r.URL.EscapedPath()+" "+r.URL.RawQuery+" "+r.Host)
	}))
	client := newClient(t, ClientConfig{})
	for _, tc := range []struct {
		target string // as received by the agent
		want   string // path, escaped path, query and host seen by the server
	}{
		{"/v1/kv/plain", "/v1/kv/plain /v1/kv/plain  example.com"},
		{"/v1/kv/a%2Fb?raw", "/v1/kv/a/b /v1/kv/a%2Fb raw example.com"},
		// Printed and parsed again as a URL, "//v1" became a host; fixed by setting
		// the request's URL directly.
		{"//v1//double?x=%2F", "//v1//double //v1//double x=%2F example.com"},
		{"/v1/kv/sp%20ace%3F", "/v1/kv/sp ace? /v1/kv/sp%20ace%3F  example.com"},
		{"/v1/kv/%C3%BC", "/v1/kv/\u00fc /v1/kv/%C3%BC  example.com"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			req, err := RequestFromHTTP(httptest.NewRequest("GET", tc.target, nil), 0)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.ForwardHTTP(t.Context(), m.Addr().String(), req)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Body) != tc.want {
				t.Errorf("server saw %q, want %q", resp.Body, tc.want)
			}
		})
	}
}

func TestForwardHTTPCancel(t *testing.T) {
	checkGoroutines(t)
	started := make(chan struct{})
	returned := make(chan struct{})
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A blocking query that never sees a change.
		close(started)
		<-r.Context().Done()
		close(returned)
	}))
	client := newClient(t, ClientConfig{})

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := client.ForwardHTTP(ctx, m.Addr().String(), &HTTPRequest{Method: "GET", Path: "/v1/kv/k", RawQuery: "index=10&wait=10m"})
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Errorf("ForwardHTTP after cancel: %v, want codes.Canceled", err)
	}
	<-returned // the server-side handler saw the cancellation
}

func TestClientReusesConnections(t *testing.T) {
	checkGoroutines(t)
	m1 := startMux(t, MuxConfig{})
	startServer(t, m1, okHandler())
	m2 := startMux(t, MuxConfig{})
	startServer(t, m2, okHandler())

	var mu sync.Mutex
	dials := map[string]int{}
	var d net.Dialer
	client := newClient(t, ClientConfig{Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		dials[addr]++
		mu.Unlock()
		return d.DialContext(ctx, "tcp", addr)
	}})

	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 3 {
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr := m1.Addr()
				if i%2 == 1 {
					addr = m2.Addr()
				}
				if err := forwardOK(t.Context(), client, addr, "/v1/x"); err != nil {
					t.Error(err)
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	if failed.Load() > 0 {
		return
	}
	if n := client.numConns(); n != 2 {
		t.Errorf("%d pooled connections, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{m1.Addr().String(): 1, m2.Addr().String(): 1}
	if !reflect.DeepEqual(dials, want) {
		t.Errorf("dials %v, want one per server %v", dials, want)
	}
}

func TestForwardHTTPDeadAddressFailsFast(t *testing.T) {
	checkGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	m := startMux(t, MuxConfig{})
	startServer(t, m, okHandler())
	client := newClient(t, ClientConfig{})

	// The context is a safety net only: the call must fail on its own,
	// long before, so that the caller has time to try another server.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for range 2 { // the first call connects, the second meets the failed connection
		start := time.Now()
		_, err := client.ForwardHTTP(ctx, dead, &HTTPRequest{Method: "GET", Path: "/v1/x"})
		if status.Code(err) != codes.Unavailable || !Unreachable(err) {
			t.Fatalf("ForwardHTTP to a dead address: %v, want codes.Unavailable and Unreachable", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("ForwardHTTP to a dead address took %v", d)
		}
	}
	if err := forwardOK(ctx, client, m.Addr(), "/v1/x"); err != nil {
		t.Fatalf("another server after the dead one: %v", err)
	}
}

func TestForwardHTTPHandlerPanic(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	client := newClient(t, ClientConfig{})
	for _, tc := range []struct {
		path string
		code codes.Code
	}{
		{"/panic", codes.Internal},
		{"/abort", codes.Aborted},
	} {
		_, err := client.ForwardHTTP(t.Context(), m.Addr().String(), &HTTPRequest{Method: "GET", Path: tc.path})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.path, err, tc.code)
		}
	}
	if err := forwardOK(t.Context(), client, m.Addr(), "/after"); err != nil {
		t.Errorf("after panics: %v", err)
	}
}

func TestForwardHTTPInvalidRequest(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %s %s", r.Method, r.URL)
	}))
	client := newClient(t, ClientConfig{})
	for _, req := range []*HTTPRequest{
		{Method: "GET", Path: ""},
		{Method: "GET", Path: "v1/no/slash"},
		{Method: "BAD METHOD", Path: "/v1/x"},
	} {
		_, err := client.ForwardHTTP(t.Context(), m.Addr().String(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%q %q: %v, want codes.InvalidArgument", req.Method, req.Path, err)
		}
	}
}

func TestForwardHTTPLargeBody(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body) // echo
	}))
	client := newClient(t, ClientConfig{})
	// Over gRPC's default 4 MiB message limit.
	body := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16)
	resp, err := client.ForwardHTTP(t.Context(), m.Addr().String(), &HTTPRequest{Method: "PUT", Path: "/v1/kv/big", Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Body, body) {
		t.Errorf("echoed %d bytes, want the %d sent", len(resp.Body), len(body))
	}
}

func TestClientClosed(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, okHandler())
	client := NewClient(ClientConfig{})
	if err := forwardOK(t.Context(), client, m.Addr(), "/v1/x"); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ForwardHTTP(t.Context(), m.Addr().String(), &HTTPRequest{Method: "GET", Path: "/v1/x"}); !errors.Is(err, ErrClientClosed) {
		t.Errorf("ForwardHTTP after Close: %v, want ErrClientClosed", err)
	}
}

func TestRequestFromHTTPBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		max     int64
		wantErr bool
	}{
		{"under", "123456789", 10, false},
		{"at", "1234567890", 10, false},
		{"over", "12345678901", 10, true},
		{"no limit given", "12345678901", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := RequestFromHTTP(httptest.NewRequest("PUT", "/v1/kv/k", strings.NewReader(tc.body)), tc.max)
			if tc.wantErr {
				if !errors.Is(err, ErrBodyTooLarge) {
					t.Fatalf("err %v, want ErrBodyTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(req.Body) != tc.body {
				t.Errorf("body %q, want %q", req.Body, tc.body)
			}
		})
	}
}

func TestHTTPResponseWrite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		resp       HTTPResponse
		wantCode   int
		wantHeader http.Header
		wantBody   string
		wantErr    bool
	}{
		{
			name:       "headers and body",
			resp:       HTTPResponse{Status: 404, Header: map[string][]string{"X-A": {"1", "2"}, "Transfer-Encoding": {"chunked"}}, Body: []byte("nope")},
			wantCode:   404,
			wantHeader: http.Header{"X-A": {"1", "2"}},
			wantBody:   "nope",
		},
		{
			name:       "no body",
			resp:       HTTPResponse{Status: 204},
			wantCode:   204,
			wantHeader: http.Header{},
		},
		{
			name:       "invalid status",
			resp:       HTTPResponse{Status: 0, Body: []byte("x")},
			wantCode:   http.StatusBadGateway,
			wantHeader: http.Header{},
			wantErr:    true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := tc.resp.Write(rec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Write: %v, want error %v", err, tc.wantErr)
			}
			if rec.Code != tc.wantCode || rec.Body.String() != tc.wantBody || !reflect.DeepEqual(rec.Header(), tc.wantHeader) {
				t.Errorf("got %d %v %q, want %d %v %q", rec.Code, rec.Header(), rec.Body.String(), tc.wantCode, tc.wantHeader, tc.wantBody)
			}
		})
	}
}

// A call cut off after it was sent is Unavailable to gRPC but not
// Unreachable: the server may have served it, so it must not be repeated
// elsewhere blindly.
func TestUnreachableOnlyBeforeSending(t *testing.T) {
	cut := status.Error(codes.Unavailable, "error reading from server: EOF")
	if Unreachable(cut) {
		t.Error("a call cut mid-flight counted as unreachable")
	}
	if Unreachable(status.Error(codes.Internal, "connection refused")) {
		t.Error("a non-Unavailable error counted as unreachable")
	}
}

// Review finding: a joined error that holds one dial failure and one cut
// call, or a wrapper quoting "connection refused" in a path, counted as
// never sent, so the write could be sent twice.
func TestUnreachableLooksAtTheStatusOnly(t *testing.T) {
	dial := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	cut := status.Error(codes.Unavailable, "error reading from server: EOF")
	if !Unreachable(fmt.Errorf("forward PUT /v1/kv/x: %w", dial)) {
		t.Error("a wrapped dial failure is not unreachable")
	}
	if Unreachable(fmt.Errorf("forward PUT /v1/kv/connection refused: %w", cut)) {
		t.Error("a cut call whose path says 'connection refused' counted as unreachable")
	}
	if NeverSent(errors.Join(dial, cut)) {
		t.Error("a plain error counted as never sent")
	}
	if !NeverSent(NotSentError{Err: dial}) {
		t.Error("NotSentError is not NeverSent")
	}
}
