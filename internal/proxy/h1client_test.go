package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// The HTTP/1.1 client (h1client.go), mostly driven directly: a proxy runs
// the cluster "c" of test upstreams, and the tests send their requests
// with the cluster's transport, as an exchange does.

// h1Edge runs a proxy with the HTTP/1.1 cluster "c" of eps (changed by
// mutate) and returns it with the cluster's transport.
func h1Edge(t *testing.T, eps []net.Addr, mutate func(*clusterv3.Cluster)) (*Proxy, *h1Transport) {
	t.Helper()
	p, _ := edge(t, lbConfig(svcRoutes("c", nil), eps, mutate), nil)
	return p, h1TransportOf(t, p, "c")
}

func h1TransportOf(t *testing.T, p *Proxy, cluster string) *h1Transport {
	t.Helper()
	cl := p.cur.Load().clusters[cluster]
	if cl == nil {
		t.Fatalf("no cluster %q", cluster)
	}
	tr, ok := cl.pool.tr.(*h1Transport)
	if !ok {
		t.Fatalf("cluster %q is carried by %T, want *h1Transport", cluster, cl.pool.tr)
	}
	return tr
}

// idleConns counts tr's idle connections.
func (t *h1Transport) idleConns() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, h := range t.hosts {
		n += len(h.idle)
	}
	return n
}

// waitIdle waits until tr has n idle connections: a connection goes back
// to the pool once its response was read (or, for a streamed request
// body, written) to its end, which the test may see later.
func waitIdle(t *testing.T, tr *h1Transport, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d idle connections", n), func() bool { return tr.idleConns() == n })
}

// openConns is how many connections of cluster "c" the circuit breaker
// counts: each one dialed and not yet closed.
func openConns(t *testing.T, p *Proxy) int64 {
	return balancerOf(t, p, "c").bc.InUse(balance.Connections)
}

func waitOpenConns(t *testing.T, p *Proxy, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d open upstream connections", n), func() bool { return openConns(t, p) == n })
}

// h1Req is a request as an exchange makes it: to addr, with body of
// length n (-1: unknown).
func h1Req(ctx context.Context, method string, addr net.Addr, path string, body io.Reader, n int64) *http.Request {
	req := &http.Request{
		Method:        method,
		URL:           &url.URL{Scheme: "http", Host: addr.String(), Path: path},
		Header:        http.Header{"User-Agent": noUserAgent},
		ContentLength: n,
	}
	if body != nil {
		req.Body = io.NopCloser(body)
	}
	return req.WithContext(ctx)
}

// send sends req with tr and reads the whole response.
func send(t *testing.T, tr *h1Transport, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// noLeaks fails the test if goroutines it started outlive it: called
// first, its check runs after every other cleanup.
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			<-tick.C
		}
	})
}

// rawApp is an upstream that answers by hand: serve is called with each
// request read (its body unread) on connection conn (numbered from 1),
// writes the answer on c and says whether to read another request.
type rawApp struct {
	ln       net.Listener
	accepted atomic.Int64
	ended    atomic.Int64 // connections that ended
	requests atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newRawApp(t *testing.T, serve func(conn int, c net.Conn, req *http.Request) bool) *rawApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newRawAppOn(t, ln, serve)
}

// newRawAppOn is a rawApp on ln (a TLS listener, say).
func newRawAppOn(t *testing.T, ln net.Listener, serve func(conn int, c net.Conn, req *http.Request) bool) *rawApp {
	a := &rawApp{ln: ln}
	a.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(a.accepted.Add(1))
			a.mu.Lock()
			a.conns = append(a.conns, c)
			a.mu.Unlock()
			a.wg.Go(func() {
				defer a.ended.Add(1)
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					a.requests.Add(1)
					if !serve(n, c, req) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		a.mu.Lock()
		for _, c := range a.conns {
			c.Close()
		}
		a.mu.Unlock()
		a.wg.Wait()
	})
	return a
}

func (a *rawApp) addr() net.Addr { return a.ln.Addr() }

// answer writes a response with body to c, after reading req's body.
func answer(c net.Conn, req *http.Request, status string, body string, hdr ...string) {
	io.Copy(io.Discard, req.Body)
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\nContent-Length: %d\r\n", status, len(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n" + body)
	io.WriteString(c, b.String())
}

// Requests of every body kind go one after the other on one connection,
// framed as their length says, with the request's Host and headers, and
// no User-Agent when the exchange says none.
func TestH1KeepAlive(t *testing.T) {
	noLeaks(t)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Length", itoa(int(r.ContentLength)))
		w.Header().Set("X-Chunked", fmt.Sprint(len(r.TransferEncoding) > 0))
		w.Header()["X-User-Agent"] = r.Header["User-Agent"]
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
		w.Write(body)
	}))
	p, tr := h1Edge(t, []net.Addr{a.addr}, nil)
	big := strings.Repeat("b", maxInlineBody+1)
	for _, tc := range []struct {
		name, method, body string
		n                  int64
		wantLength         string
		wantChunked        bool
	}{
		{"GET", "GET", "", 0, "0", false},
		{"POST without a body", "POST", "", 0, "0", false},
		{"inline body", "POST", "small", 5, "5", false},
		{"streamed body of known length", "PUT", big, int64(len(big)), itoa(len(big)), false},
		{"body of unknown length", "POST", "chunks", -1, "-1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := h1Req(testCtx(t), tc.method, a.addr, "/a b/c", body, tc.n)
			req.URL.RawQuery = "q=1"
			req.Host = "web.example"
			req.Header.Set("X-Custom", "v")
			resp, got := send(t, tr, req)
			if resp.StatusCode != 200 || got != tc.body {
				t.Fatalf("got %d %q, want 200 and the body back", resp.StatusCode, got)
			}
			for k, want := range map[string]string{
				"X-Host": "web.example", "X-Length": tc.wantLength, "X-Chunked": fmt.Sprint(tc.wantChunked),
				"X-Path": "/a%20b/c?q=1", "X-Custom": "v",
			} {
				if v := resp.Header.Get(k); v != want {
					t.Errorf("%s: %q, want %q", k, v, want)
				}
			}
			if ua, ok := resp.Header["X-User-Agent"]; ok {
				t.Errorf("the app got a User-Agent %q", ua)
			}
			waitIdle(t, tr, 1)
		})
	}
	if n := a.accepted.Load(); n != 1 {
		t.Errorf("the app accepted %d connections, want 1", n)
	}
	if n := openConns(t, p); n != 1 {
		t.Errorf("%d connections counted open, want 1", n)
	}
}

// whoApp answers the address its request came from: the proxy's end of
// the connection. A request with X-Hold waits, after saying so on
// arrived, until release is closed.
type whoApp struct {
	*app
	arrived chan struct{}
	release chan struct{}
}

func newWhoApp(t *testing.T) *whoApp {
	w := &whoApp{arrived: make(chan struct{}, 3), release: make(chan struct{})}
	w.app = newApp(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Hold") != "" {
			w.arrived <- struct{}{}
			select {
			case <-w.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(rw, r.RemoteAddr)
	}))
	return w
}

// openThree opens three connections to w with three concurrent held
// requests, and lets them end: three idle connections.
func openThree(t *testing.T, tr *h1Transport, w *whoApp) {
	t.Helper()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			req := h1Req(testCtx(t), "GET", w.addr, "/", nil, 0)
			req.Header.Set("X-Hold", "1")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	for range 3 {
		<-w.arrived
	}
	close(w.release)
	wg.Wait()
	waitIdle(t, tr, 3)
}

// Idle connections are reused last in, first out: the longest idle ones
// stay idle, for the idle timeout to close.
func TestH1LIFO(t *testing.T) {
	w := newWhoApp(t)
	p, tr := h1Edge(t, []net.Addr{w.addr}, nil)
	openThree(t, tr, w)
	for i := range 3 {
		tr.mu.Lock()
		hs := tr.hosts[w.addr.String()]
		top := hs.idle[len(hs.idle)-1].raw.LocalAddr().String()
		tr.mu.Unlock()
		resp, body := send(t, tr, h1Req(testCtx(t), "GET", w.addr, "/", nil, 0))
		if resp.StatusCode != 200 || body != top {
			t.Errorf("request %d went on %s, want %s (the last returned)", i, body, top)
		}
		waitIdle(t, tr, 3)
	}
	if n := w.accepted.Load(); n != 3 {
		t.Errorf("the app accepted %d connections, want 3", n)
	}
	if n := openConns(t, p); n != 3 {
		t.Errorf("%d open connections, want 3", n)
	}
}

// withIdleTimeout sets the cluster's common_http_protocol_options
// idle_timeout.
func withIdleTimeout(d time.Duration) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(&httpv3.HttpProtocolOptions{
			CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(d)},
		})}
	}
}

// The cluster's idle timeout closes idle connections, and the circuit
// breaker's count follows.
func TestH1IdleTimeout(t *testing.T) {
	noLeaks(t)
	w := newWhoApp(t)
	p, tr := h1Edge(t, []net.Addr{w.addr}, withIdleTimeout(20*time.Millisecond))
	openThree(t, tr, w)
	waitOpenConns(t, p, 0)
	if n := tr.idleConns(); n != 0 {
		t.Errorf("%d idle connections after the idle timeout", n)
	}
	tr.mu.Lock()
	hosts := len(tr.hosts)
	tr.mu.Unlock()
	if hosts != 0 {
		t.Errorf("%d hosts kept with nothing idle", hosts)
	}
	// A new request dials again.
	if resp, _ := send(t, tr, h1Req(testCtx(t), "GET", w.addr, "/", nil, 0)); resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	if n := w.accepted.Load(); n != 4 {
		t.Errorf("the app accepted %d connections, want 4", n)
	}
}

// A request on a reused connection that the upstream closed before
// answering is sent again on a new one, if it may be: an idempotent
// request, not a POST that may have been acted on (as net/http judges).
func TestH1StaleConnectionRetry(t *testing.T) {
	for _, tc := range []struct {
		method    string
		wantRetry bool
	}{{"GET", true}, {"DELETE", true}, {"POST", false}} {
		t.Run(tc.method, func(t *testing.T) {
			noLeaks(t)
			// The first connection answers one request, then closes on
			// the next, as an app whose keep-alive timeout ran out just
			// as the request came.
			app := newRawApp(t, func(conn int, c net.Conn, req *http.Request) bool {
				if conn == 1 && req.Header.Get("X-N") == "2" {
					io.Copy(io.Discard, req.Body)
					return false
				}
				answer(c, req, "200 OK", fmt.Sprintf("conn %d", conn))
				return true
			})
			p, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
			req := h1Req(testCtx(t), tc.method, app.addr(), "/", strings.NewReader("x"), 1)
			req.Header.Set("X-N", "1")
			if _, body := send(t, tr, req); body != "conn 1" {
				t.Fatalf("first request: %q", body)
			}
			waitIdle(t, tr, 1)
			req = h1Req(testCtx(t), tc.method, app.addr(), "/", strings.NewReader("x"), 1)
			req.Header.Set("X-N", "2")
			resp, err := tr.RoundTrip(req)
			if !tc.wantRetry {
				var se *staleConnError
				if err == nil || !errors.As(err, &se) {
					t.Fatalf("got %v, want a stale connection error", err)
				}
				if n := app.requests.Load(); n != 2 {
					t.Errorf("the app got %d requests, want 2 (no retry)", n)
				}
				waitOpenConns(t, p, 0)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "conn 2" {
				t.Errorf("the retry got %q, want the second connection's answer", body)
			}
			waitOpenConns(t, p, 1)
		})
	}
}

// A request ended by its context before the response head (the per-try
// or route timeout, the downstream gone) or during its body closes the
// connection at once, and the error wraps the context's cause.
func TestH1Cancellation(t *testing.T) {
	noLeaks(t)
	arrived := make(chan struct{}, 1)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/midway" {
			w.Write([]byte("part"))
			http.NewResponseController(w).Flush()
		}
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	p, tr := h1Edge(t, []net.Addr{a.addr}, nil)

	t.Run("before the response head", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(testCtx(t))
		go func() {
			<-arrived
			cancel(errPerTryTimeout)
		}()
		_, err := tr.RoundTrip(h1Req(ctx, "GET", a.addr, "/", nil, 0))
		if !errors.Is(err, context.Canceled) || !errors.Is(err, errPerTryTimeout) {
			t.Fatalf("got %v, want one wrapping context.Canceled and the per-try timeout", err)
		}
		waitOpenConns(t, p, 0)
	})
	t.Run("during the response body", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(testCtx(t))
		resp, err := tr.RoundTrip(h1Req(ctx, "GET", a.addr, "/midway", nil, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "part" {
			t.Fatalf("read %q, %v", buf, err)
		}
		<-arrived
		cancel(errRouteTimeout)
		_, err = io.ReadAll(resp.Body)
		if !errors.Is(err, errRouteTimeout) {
			t.Fatalf("reading on: %v, want one wrapping the route timeout", err)
		}
		waitOpenConns(t, p, 0)
	})
	t.Run("already over", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		cancel()
		if _, err := tr.RoundTrip(h1Req(ctx, "GET", a.addr, "/", nil, 0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
	if n := a.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2", n)
	}
}

// A request body of unknown length is streamed, chunked, while the
// response comes back: the response head arrives before the body has
// ended. Trailers go both ways.
func TestH1FullDuplex(t *testing.T) {
	noLeaks(t)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		br := bufio.NewReader(r.Body)
		line, _ := br.ReadString('\n')
		w.Header().Set("Trailer", "X-Got")
		w.Header().Set("X-Chunked", fmt.Sprint(r.TransferEncoding))
		w.Write([]byte("ack " + line))
		http.NewResponseController(w).Flush()
		rest, _ := io.ReadAll(br)
		w.Write(rest)
		w.Header().Set("X-Got", r.Trailer.Get("X-Sum"))
	}))
	p, tr := h1Edge(t, []net.Addr{a.addr}, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	req := h1Req(testCtx(t), "POST", a.addr, "/", pr, -1)
	req.Trailer = http.Header{"X-Sum": nil}
	go io.WriteString(pw, "first\n")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v := resp.Header.Get("X-Chunked"); v != "[chunked]" {
		t.Errorf("the app got transfer encoding %s, want [chunked]", v)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "ack first\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	// The body goes on after the response started.
	io.WriteString(pw, "second")
	req.Trailer.Set("X-Sum", "42")
	pw.Close()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second" {
		t.Fatalf("read %q, %v", rest, err)
	}
	if v := resp.Trailer.Get("X-Got"); v != "42" {
		t.Errorf("the app got the request trailer %q, want 42 (response trailer %v)", v, resp.Trailer)
	}
	waitIdle(t, tr, 1)
	if n := openConns(t, p); n != 1 {
		t.Errorf("%d open connections, want 1", n)
	}
}

// Interim responses (100 Continue, 103 Early Hints) are skipped.
func TestH1InterimResponses(t *testing.T) {
	app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
		answer(c, req, "201 Created", "done")
		return true
	})
	_, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
	resp, body := send(t, tr, h1Req(testCtx(t), "POST", app.addr(), "/", strings.NewReader("x"), 1))
	if resp.StatusCode != 201 || body != "done" || resp.Header.Get("Link") != "" {
		t.Fatalf("got %d %q %v, want the final response", resp.StatusCode, body, resp.Header)
	}
}

// A response head longer than Envoy's max_response_headers_kb default is
// refused, and its connection closed.
func TestH1ResponseHeadLimit(t *testing.T) {
	app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
		answer(c, req, "200 OK", "ok", "X-Big", strings.Repeat("x", 64<<10))
		return true
	})
	p, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
	if _, err := tr.RoundTrip(h1Req(testCtx(t), "GET", app.addr(), "/", nil, 0)); !errors.Is(err, errResponseHeadTooLarge) {
		t.Fatalf("got %v, want %v", err, errResponseHeadTooLarge)
	}
	waitOpenConns(t, p, 0)
}

// A response to HEAD has no body, whatever its Content-Length says: the
// connection carries the next request.
func TestH1Head(t *testing.T) {
	app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
		if req.Method == "HEAD" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			return true
		}
		answer(c, req, "200 OK", "get")
		return true
	})
	_, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
	resp, body := send(t, tr, h1Req(testCtx(t), "HEAD", app.addr(), "/", nil, 0))
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 1000 || resp.Header.Get("Content-Length") != "1000" {
		t.Fatalf("HEAD: %d %q length %d %v", resp.StatusCode, body, resp.ContentLength, resp.Header)
	}
	if _, body := send(t, tr, h1Req(testCtx(t), "GET", app.addr(), "/", nil, 0)); body != "get" {
		t.Fatalf("GET: %q", body)
	}
	if n := app.accepted.Load(); n != 1 {
		t.Errorf("the app accepted %d connections, want 1", n)
	}
}

// A response with Connection: close (or one whose body ends with the
// connection) is the connection's last: the proxy closes it.
func TestH1ConnectionClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp string
	}{
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, tc.resp)
				return true // the proxy must close it
			})
			p, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
			for range 2 {
				if _, body := send(t, tr, h1Req(testCtx(t), "GET", app.addr(), "/", nil, 0)); body != "ok" {
					t.Fatalf("got %q", body)
				}
			}
			if n := app.accepted.Load(); n != 2 {
				t.Errorf("the app accepted %d connections, want 2", n)
			}
			waitFor(t, "the proxy to close both connections", func() bool { return app.ended.Load() == 2 })
			waitOpenConns(t, p, 0)
		})
	}
}

// A response body closed before its end closes the connection.
func TestH1EarlyClose(t *testing.T) {
	noLeaks(t)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			w.Write([]byte("small"))
			return
		}
		chunk := []byte(strings.Repeat("x", 32<<10))
		for range 64 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	p, tr := h1Edge(t, []net.Addr{a.addr}, nil)
	resp, err := tr.RoundTrip(h1Req(testCtx(t), "GET", a.addr, "/", nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Error("a read after Close succeeded")
	}
	waitOpenConns(t, p, 0)
	if n := tr.idleConns(); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
	if _, body := send(t, tr, h1Req(testCtx(t), "GET", a.addr, "/small", nil, 0)); body != "small" {
		t.Fatalf("got %q", body)
	}
	if n := a.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2", n)
	}
}

// Dial failures reach the exchange as the *dialError they are: connect
// failure, or overflow at max_connections.
func TestH1DialErrors(t *testing.T) {
	dead := deadAddr(t)
	_, tr := h1Edge(t, []net.Addr{dead}, nil)
	_, err := tr.RoundTrip(h1Req(testCtx(t), "GET", dead, "/", nil, 0))
	var de *dialError
	if !errors.As(err, &de) || de.overflow {
		t.Errorf("got %v, want a connect failure", err)
	}

	a := newStatusApp(t, "a", 200)
	p, _ := edge(t, lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, nil), func(cl *cluster) (picker, guard) {
		return cl.picker, &countingGuard{refuseConnections: true}
	})
	_, err = h1TransportOf(t, p, "c").RoundTrip(h1Req(testCtx(t), "GET", a.addr, "/", nil, 0))
	if !errors.As(err, &de) || !de.overflow {
		t.Errorf("got %v, want an overflow", err)
	}
}

// Headers net/http would refuse to send are refused, and nothing is
// sent.
func TestH1RefusesBadHeaders(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	_, tr := h1Edge(t, []net.Addr{a.addr}, nil)
	for name, mutate := range map[string]func(*http.Request){
		"value with a newline": func(r *http.Request) { r.Header.Set("X-Bad", "a\r\nX-Injected: 1") },
		"name with a space":    func(r *http.Request) { r.Header["X Bad"] = []string{"v"} },
		"host with a newline":  func(r *http.Request) { r.Host = "a\nb" },
	} {
		req := h1Req(testCtx(t), "GET", a.addr, "/", nil, 0)
		mutate(req)
		if _, err := tr.RoundTrip(req); err == nil {
			t.Errorf("%s: sent", name)
		}
	}
	if n := a.hits.Load(); n != 0 {
		t.Errorf("the app got %d requests", n)
	}
}

// http1Explicit is HttpProtocolOptions with explicit HTTP/1.1, as the
// generator renders a protocol http upstream between sidecars.
func http1Explicit() map[string]*anypb.Any {
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}},
	})}
}

// The clusters that speak only HTTP/1.1 are carried by the proxy's own
// client, the others by net/http's Transport; the balancer tests'
// clusters (max_connections and pending requests among them) are of the
// first kind.
func TestH1CarriesHTTP1Clusters(t *testing.T) {
	a := newStatusApp(t, "a", 200)
	plain := func(mutate func(*clusterv3.Cluster)) *clusterv3.Cluster {
		c := plainCluster("c", false)
		if mutate != nil {
			mutate(c)
		}
		return c
	}
	tlsCluster := func(opts map[string]*anypb.Any) *clusterv3.Cluster {
		c := meshCluster("c")
		c.Name, c.EdsClusterConfig.ServiceName = "c", ""
		c.TypedExtensionProtocolOptions = opts
		return c
	}
	for _, tc := range []struct {
		name string
		c    *clusterv3.Cluster
		h1   bool
	}{
		{"HTTP/1.1", plain(nil), true},
		{"HTTP/1.1 with an idle timeout", plain(withIdleTimeout(time.Minute)), true},
		{"auto_config without TLS", plain(func(c *clusterv3.Cluster) { c.TypedExtensionProtocolOptions = autoConfig() }), true},
		{"HTTP/1.1 over TLS", tlsCluster(http1Explicit()), true},
		{"h2c", plainCluster("c", true), false},
		{"auto_config over TLS", tlsCluster(autoConfig()), false},
		{"HTTP/2 over TLS", tlsCluster(http2Explicit()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newCA(t, td)
			cfg := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}})
			cfg.Clusters[0] = tc.c
			cfg.Secrets = secretsOf(ca.leaf(t, td, "web"), ca.root.CertPEM)
			p, _ := edge(t, cfg, nil)
			tr := p.cur.Load().clusters["c"].pool.tr
			if _, ok := tr.(*h1Transport); ok != tc.h1 {
				t.Errorf("carried by %T", tr)
			}
		})
	}
	cfg := lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, nil)
	p, svc := edge(t, cfg, nil)
	tr := h1TransportOf(t, p, "c")
	if code, _ := get(t, h1Client(t), svc, "/"); code != 200 {
		t.Fatalf("got %d", code)
	}
	waitIdle(t, tr, 1) // the request went through it
}

// Between sidecars over mTLS, HTTP/1.1 only (explicit http_protocol_options,
// although the TLS context offers h2 too): requests share one connection.
func TestH1OverMTLS(t *testing.T) {
	a := echoApp(t)
	pr := newPair(t, a.addr, false, nil)
	cfg := cloneL7(pr.webCfg)
	for _, c := range cfg.Clusters {
		if c.Name == clusterName("db") {
			c.TypedExtensionProtocolOptions = http1Explicit()
		}
	}
	if err := pr.web.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	tr := h1TransportOf(t, pr.web, clusterName("db"))
	c := h1Client(t)
	for i := range 3 {
		resp, body := do(t, c, "POST", urlOf(pr.upstream, "/x"), "payload"+itoa(i))
		if resp.StatusCode != 200 || body != "POST /x payload"+itoa(i) {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-App-Sidecar-Proto"); got != "HTTP/1.1" {
			t.Errorf("web spoke %q to db, want HTTP/1.1", got)
		}
		waitIdle(t, tr, 1)
	}
	if n := metric(t, pr.db, "trellis_proxy_connections_total", "listener", pubListener); n != 1 {
		t.Errorf("db's public listener accepted %v connections, want 1", n)
	}
}

// Close ends a request whose body is still streaming upstream, its body
// writer included.
func TestH1CloseEndsStreamingRequest(t *testing.T) {
	noLeaks(t)
	got := make(chan struct{})
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(200)
		rc.Flush()
		r.Body.Read(make([]byte, 1))
		close(got)
		io.Copy(io.Discard, r.Body)
	}))
	p := New(Options{})
	if err := p.Apply(lbConfig(svcRoutes("c", nil), []net.Addr{a.addr}, nil)); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest("POST", urlOf(p.ListenerAddr("svc"), "/"), pr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	go io.WriteString(pw, "x")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-got
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the response ended cleanly after Close")
	}
}
