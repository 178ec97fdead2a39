package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The HTTP/1.1 loop of downstream connections (h1server.go): what a
// client sees must be what net/http's server gave it.

// rawClient speaks HTTP/1.x over a plain connection, byte by byte.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, a net.Addr) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) // only bounds a failing test
	return &rawClient{c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		t.Fatal(err)
	}
}

// read reads a response to a method request, and its body.
func (rc *rawClient) read(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed waits for the proxy to close the connection.
func (rc *rawClient) closed(t *testing.T) {
	t.Helper()
	b, err := io.ReadAll(rc.br)
	if err != nil && !isReset(err) {
		t.Fatalf("the connection did not close: %v", err)
	}
	if len(b) > 0 {
		t.Fatalf("read %q, want the connection closed", b)
	}
}

// downConns is the number of open HTTP/1.1 connections that the loop
// serves for the current server of listener name.
func downConns(p *Proxy, name string) int {
	p.mu.Lock()
	l := p.listeners[name]
	p.mu.Unlock()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	s := l.srv
	l.mu.Unlock()
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.down)
}

// within waits for ch, failing after a while.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: timed out", what)
	}
}

// echoEdge is a proxy whose listener "svc" routes to echoApp.
func echoEdge(t *testing.T) (*Proxy, net.Addr) {
	a := echoApp(t)
	return edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
}

// withConnIdle sets the idle_timeout of the downstream connections of
// cfg's listener "svc".
func withConnIdle(t *testing.T, cfg Config, d time.Duration) Config {
	cfg = cloneL7(cfg)
	editHCM(t, &cfg, func(h *hcmv3.HttpConnectionManager) {
		h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(d)}
	})
	return cfg
}

// editHCM changes, in place, the HTTP connection manager of cfg's first
// listener.
func editHCM(t *testing.T, cfg *Config, f func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	fl := cfg.Listeners[0].FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := fl.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	f(h)
	fl.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(h)}
}

// HTTP/1.1 clients are served by the loop, HTTP/2 ones (h2c with prior
// knowledge) by net/http, on the same plaintext listener.
func TestDownFastPathPlaintext(t *testing.T) {
	p, svc := echoEdge(t)
	resp, body := do(t, h2cClient(t), "GET", urlOf(svc, "/h2"), "")
	if resp.ProtoMajor != 2 || body != "GET /h2 " {
		t.Fatalf("h2c: got %s %q", resp.Proto, body)
	}
	if n := downConns(p, "svc"); n != 0 {
		t.Errorf("an h2c connection open: %d HTTP/1.1 loops, want 0", n)
	}
	resp, body = do(t, h1Client(t), "GET", urlOf(svc, "/h1"), "")
	if resp.ProtoMajor != 1 || body != "GET /h1 " {
		t.Fatalf("HTTP/1.1: got %s %q", resp.Proto, body)
	}
	if n := downConns(p, "svc"); n != 1 {
		t.Errorf("an HTTP/1.1 connection open: %d HTTP/1.1 loops, want 1", n)
	}
}

// Over TLS, ALPN h2 goes to net/http, http/1.1 to the loop.
func TestDownFastPathTLS(t *testing.T) {
	a := echoApp(t)
	p := newPair(t, a.addr, false, nil)
	public := "https://" + addr(t, p.db, pubListener).String()
	resp, body := do(t, tlsClient(t, p.webLeaf, "h2", "http/1.1"), "GET", public+"/x", "")
	if resp.ProtoMajor != 2 || body != "GET /x " {
		t.Fatalf("ALPN h2: got %s %q", resp.Proto, body)
	}
	if n := downConns(p.db, pubListener); n != 0 {
		t.Errorf("an h2 connection open: %d HTTP/1.1 loops, want 0", n)
	}
	resp, body = do(t, tlsClient(t, p.webLeaf, "http/1.1"), "POST", public+"/y", "data")
	if resp.ProtoMajor != 1 || body != "POST /y data" {
		t.Fatalf("ALPN http/1.1: got %s %q", resp.Proto, body)
	}
	if n := downConns(p.db, pubListener); n != 1 {
		t.Errorf("an HTTP/1.1 connection open: %d HTTP/1.1 loops, want 1", n)
	}
	if got := resp.Header.Get("X-App-Sidecar-Proto"); got != "HTTP/1.1" {
		t.Errorf("%%PROTOCOL%% = %q, want HTTP/1.1", got)
	}
}

// One connection carries many requests, with and without bodies.
func TestDownKeepAlive(t *testing.T) {
	p, svc := echoEdge(t)
	c := h1Client(t)
	for i := range 50 {
		method, body, want := "GET", "", "GET /"+itoa(i)+" "
		if i%2 == 1 {
			method, body, want = "POST", strings.Repeat("b", i*100), "POST /"+itoa(i)+" "+strings.Repeat("b", i*100)
		}
		if resp, got := do(t, c, method, urlOf(svc, "/"+itoa(i)), body); resp.StatusCode != 200 || got != want {
			t.Fatalf("request %d: got %d %q, want 200 %q", i, resp.StatusCode, got, want)
		}
	}
	if n := metric(t, p, "trellis_proxy_connections_total", "listener", "svc"); n != 1 {
		t.Errorf("%v downstream connections, want 1", n)
	}
}

// Pipelined requests are answered in order, bodies included.
func TestDownPipelining(t *testing.T) {
	_, svc := echoEdge(t)
	rc := dialRaw(t, svc)
	rc.send(t, "GET /1 HTTP/1.1\r\nHost: svc\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /3 HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"HEAD /4 HTTP/1.1\r\nHost: svc\r\n\r\n"+
		"GET /5 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
	for _, want := range []struct{ method, body string }{
		{"GET", "GET /1 "}, {"POST", "POST /2 hello"}, {"POST", "POST /3 abc"}, {"HEAD", ""}, {"GET", "GET /5 "},
	} {
		resp, body := rc.read(t, want.method)
		if resp.StatusCode != 200 || body != want.body {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want.body)
		}
	}
	rc.closed(t)
}

// A chunked request body reaches the app; a response of unknown length
// is chunked, with its trailers.
func TestDownChunked(t *testing.T) {
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(body[:2])
		w.(http.Flusher).Flush()
		w.Write(body[2:])
		w.Header().Set("X-Sum", strconv.Itoa(len(body)))
	}))
	_, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	rc := dialRaw(t, svc)
	rc.send(t, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	resp, body := rc.read(t, "POST")
	if resp.StatusCode != 200 || body != "hello world" {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "hello world")
	}
	if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) || resp.ContentLength != -1 {
		t.Errorf("framing %v, length %d: want chunked", resp.TransferEncoding, resp.ContentLength)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "11" {
		t.Errorf("trailer X-Sum = %q, want 11", got)
	}
}

// Expect: 100-continue is answered when the body is first read, then
// the body goes through; an Expect the proxy does not know is refused.
func TestDown100Continue(t *testing.T) {
	_, svc := echoEdge(t)
	rc := dialRaw(t, svc)
	rc.send(t, "POST /e HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ := rc.read(t, "POST")
	if resp.StatusCode != 100 {
		t.Fatalf("got %d before the body, want 100", resp.StatusCode)
	}
	rc.send(t, "hello")
	if resp, body := rc.read(t, "POST"); resp.StatusCode != 200 || body != "POST /e hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	// The connection goes on.
	rc.send(t, "GET /next HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, body := rc.read(t, "GET"); resp.StatusCode != 200 || body != "GET /next " {
		t.Fatalf("next request: got %d %q", resp.StatusCode, body)
	}
}

// A response that does not get to the body (here, no route) closes the
// connection of a client waiting for 100 Continue, which then never
// sends its body.
func TestDown100ContinueRefused(t *testing.T) {
	a := echoApp(t)
	rc := routeConfig("svc", "c")
	rc.VirtualHosts[0].Routes = rc.VirtualHosts[0].Routes[:0]
	_, svc := edge(t, edgeConfig(rc, map[string][]net.Addr{"c": {a.addr}}), nil)
	c := dialRaw(t, svc)
	c.send(t, "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ := c.read(t, "POST")
	if resp.StatusCode != 404 || !resp.Close {
		t.Fatalf("got %d (close %v), want 404 closing the connection", resp.StatusCode, resp.Close)
	}
	c.closed(t)
}

// HEAD responses keep the Content-Length the app gave and have no body.
func TestDownHEAD(t *testing.T) {
	_, svc := echoEdge(t)
	rc := dialRaw(t, svc)
	rc.send(t, "HEAD /h HTTP/1.1\r\nHost: svc\r\n\r\nGET /g HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, body := rc.read(t, "HEAD")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("HEAD /h ")) {
		t.Fatalf("HEAD: got %d %q, length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := rc.read(t, "GET"); body != "GET /g " {
		t.Fatalf("GET after HEAD: got %d %q", resp.StatusCode, body)
	}
}

// streamApp answers a body of unknown length.
func streamApp(t *testing.T) *app {
	return newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "stream")
		w.(http.Flusher).Flush()
		io.WriteString(w, "ed")
	}))
}

// HTTP/1.0: the connection closes after the response unless the client
// asked to keep it, and a body of unknown length ends with it.
func TestDownHTTP10(t *testing.T) {
	_, svc := echoEdge(t)
	rc := dialRaw(t, svc)
	rc.send(t, "GET /x HTTP/1.0\r\n\r\n")
	resp, body := rc.read(t, "GET")
	if resp.Proto != "HTTP/1.0" || body != "GET /x " {
		t.Fatalf("got %s %q", resp.Proto, body)
	}
	rc.closed(t)

	rc = dialRaw(t, svc)
	for _, path := range []string{"/a", "/b"} {
		rc.send(t, "GET "+path+" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := rc.read(t, "GET")
		if body != "GET "+path+" " || resp.Header.Get("Connection") != "keep-alive" || resp.Close {
			t.Fatalf("keep-alive: got %q, Connection %q", body, resp.Header.Get("Connection"))
		}
	}

	s := streamApp(t)
	_, svc = edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {s.addr}}), nil)
	rc = dialRaw(t, svc)
	rc.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, body = rc.read(t, "GET")
	if body != "streamed" || resp.ContentLength != -1 || len(resp.TransferEncoding) > 0 || !resp.Close {
		t.Fatalf("unknown length: got %q, length %d, %v", body, resp.ContentLength, resp.TransferEncoding)
	}
	rc.closed(t)
}

// Requests that cannot be read get net/http's server's answers, and the
// connection closes.
func TestDownBadRequests(t *testing.T) {
	refSrv := refServer(t) // net/http's, with its default limits
	_, svc := echoEdge(t)
	huge := strings.Repeat("x", 70<<10)
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"garbage", "GARBAGE\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad header", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400},
		{"HTTP/2 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"two transfer codings", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"bad length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", 400},
		{"empty length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"control byte in target", "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bad header value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400},
		{"fold before any field", "GET / HTTP/1.1\r\n X: a\r\nHost: a\r\n\r\n", 400},
		{"expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417},
		{"header too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + huge + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, svc)
			rc.send(t, tc.req)
			resp, body := rc.read(t, "GET")
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			rc.closed(t)
			if tc.name == "header too large" {
				return // net/http's default limit is 1 MiB, the proxy's Envoy's 60 KiB
			}
			ref := dialRaw(t, refSrv)
			ref.send(t, tc.req)
			want, wantBody := ref.read(t, "GET")
			if resp.Status != want.Status || body != wantBody {
				t.Errorf("got %q %q, net/http says %q %q", resp.Status, body, want.Status, wantBody)
			}
		})
	}
	// Request lines and fields that end at the edge of the reader's
	// buffer are read whole.
	for _, n := range []int{4081, 4082, 4090, 4091} {
		resp, _ := do(t, h1Client(t), "GET", urlOf(svc, "/"+strings.Repeat("a", n)), "", "X-Long", strings.Repeat("b", n))
		if resp.StatusCode != 200 {
			t.Errorf("a path and a field of %d bytes: %s", n, resp.Status)
		}
	}
	// A header a little under the limit goes through.
	big := strings.Repeat("x", 50<<10)
	if resp, _ := do(t, h1Client(t), "GET", urlOf(svc, "/"), "", "X-Big", big); resp.StatusCode != 200 {
		t.Errorf("a 50 KiB header: %s", resp.Status)
	}
}

// A client that goes away while its request waits on the upstream ends
// the upstream request, with a body or without.
func TestDownGoneCancelsUpstream(t *testing.T) {
	for name, req := range map[string]string{
		"GET":  "GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST": "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\nbody",
	} {
		t.Run(name, func(t *testing.T) {
			started, gone := make(chan struct{}, 1), make(chan struct{}, 1)
			a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.ReadAll(r.Body)
				started <- struct{}{}
				<-r.Context().Done()
				gone <- struct{}{}
			}))
			_, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
			rc := dialRaw(t, svc)
			rc.send(t, req)
			within(t, started, "the request reaching the app")
			rc.c.Close()
			within(t, gone, "the upstream request ending")
		})
	}
}

// A client that sends its next request while the previous one waits on
// the upstream does not cancel it: the byte read ahead is kept.
func TestDownReadAheadKept(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, r.URL.Path)
	}))
	p, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	rc := dialRaw(t, svc)
	rc.send(t, "GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
	within(t, started, "the request reaching the app")
	rc.send(t, "G")
	// The watch reads the byte once it runs.
	waitFor(t, "the read ahead", func() bool {
		var c *downConn
		p.mu.Lock()
		l := p.listeners["svc"]
		p.mu.Unlock()
		l.mu.Lock()
		s := l.srv
		l.mu.Unlock()
		s.mu.Lock()
		for dc := range s.down {
			c = dc
		}
		s.mu.Unlock()
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.hasByte
	})
	rc.send(t, "ET /next HTTP/1.1\r\nHost: svc\r\n\r\n")
	close(release)
	for _, want := range []string{"/slow", "/next"} {
		if resp, body := rc.read(t, "GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// A config change that replaces the listener's server, or removes the
// listener, lets the requests in flight finish (then closes their
// connections) and closes the idle connections at once.
func TestDownDrain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, cfg Config) Config
	}{
		{"server settings", func(t *testing.T, cfg Config) Config { return withConnIdle(t, cfg, 30*time.Minute) }},
		{"listener removed", func(t *testing.T, cfg Config) Config {
			cfg = cloneL7(cfg)
			cfg.Listeners = nil
			return cfg
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var once sync.Once
			t.Cleanup(func() { once.Do(func() { close(release) }) })
			started := make(chan struct{}, 1)
			a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					started <- struct{}{}
					<-release
				}
				io.WriteString(w, "done "+r.URL.Path)
			}))
			cfg := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}})
			p, svc := edge(t, cfg, nil)
			idle := dialRaw(t, svc)
			idle.send(t, "GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
			if resp, body := idle.read(t, "GET"); body != "done /a" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			busy := dialRaw(t, svc)
			busy.send(t, "GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
			within(t, started, "the request reaching the app")

			if err := p.Apply(tc.change(t, cfg)); err != nil {
				t.Fatal(err)
			}
			idle.closed(t)
			if p.ListenerAddr("svc") != nil {
				if resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/b"), ""); body != "done /b" {
					t.Fatalf("a new connection: got %d %q", resp.StatusCode, body)
				}
			}
			once.Do(func() { close(release) })
			resp, body := busy.read(t, "GET")
			if body != "done /slow" || !resp.Close {
				t.Fatalf("the request in flight: got %d %q (close %v), want its response closing the connection",
					resp.StatusCode, body, resp.Close)
			}
			busy.closed(t)
		})
	}
}

// The listener's idle timeout closes connections that carry no request,
// whether they had some before or never did.
func TestDownIdleTimeout(t *testing.T) {
	a := echoApp(t)
	cfg := withConnIdle(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), 250*time.Millisecond)
	_, svc := edge(t, cfg, nil)
	used, unused := dialRaw(t, svc), dialRaw(t, svc)
	used.send(t, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, body := used.read(t, "GET"); body != "GET / " {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	used.closed(t)
	unused.closed(t)
}

// A response the upstream breaks off closes the connection without
// ending the chunked body: the client sees it cut short.
func TestDownAbort(t *testing.T) {
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	_, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	rc := dialRaw(t, svc)
	rc.send(t, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "partial" {
		t.Fatalf("got %q, %v: want %q cut short", b, err, "partial")
	}
}

// panickingPicker panics on its first pick.
type panickingPicker struct {
	picker
	done atomic.Bool
}

func (p *panickingPicker) pick(req pickRequest) *host {
	if !p.done.Swap(true) {
		panic("test: picker")
	}
	return p.picker.pick(req)
}

// A panic serving a request closes its connection and nothing else.
func TestDownHandlerPanic(t *testing.T) {
	a := echoApp(t)
	balance := func(cl *cluster) (picker, guard) { return &panickingPicker{picker: cl.picker}, cl.guard }
	_, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), balance)
	rc := dialRaw(t, svc)
	rc.send(t, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	rc.closed(t)
	if resp, body := do(t, h1Client(t), "GET", urlOf(svc, "/after"), ""); body != "GET /after " {
		t.Fatalf("after the panic: got %d %q", resp.StatusCode, body)
	}
}

// A request body and its response stream at once (EnableFullDuplex,
// Flush): each line comes back before the next is sent.
func TestDownFullDuplex(t *testing.T) {
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(200)
		rc.Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			io.WriteString(w, "echo "+sc.Text()+"\n")
			rc.Flush()
		}
	}))
	_, svc := edge(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), nil)
	rc := dialRaw(t, svc)
	rc.send(t, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(resp.Body)
	for _, msg := range []string{"one", "two", "three"} {
		rc.send(t, strconv.FormatInt(int64(len(msg)+1), 16)+"\r\n"+msg+"\n\r\n")
		got, err := lines.ReadString('\n')
		if err != nil || got != "echo "+msg+"\n" {
			t.Fatalf("got %q, %v, want the echo of %q", got, err, msg)
		}
	}
	rc.send(t, "0\r\n\r\n")
	if rest, err := io.ReadAll(lines); err != nil || len(rest) > 0 {
		t.Fatalf("after the request: %q, %v", rest, err)
	}
}

// Responses are framed as net/http's server frames them: for each
// handler and request, the proxy's response writer and net/http's
// server give the same status, framing, headers (but Date's value),
// body and trailers.
func TestDownResponseFraming(t *testing.T) {
	big := strings.Repeat("z", 3000)
	for _, tc := range []struct {
		name    string
		req     string // request line and header fields, without the final CRLF
		method  string
		handler func(w http.ResponseWriter)
	}{
		{"small body", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) { io.WriteString(w, "hello") }},
		{"small body in pieces", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			io.WriteString(w, strings.Repeat("a", 1000))
			io.WriteString(w, strings.Repeat("b", 1000))
		}},
		{"large body", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) { io.WriteString(w, big) }},
		{"large body in pieces", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			io.WriteString(w, big[:1500])
			io.WriteString(w, big[1500:])
		}},
		{"content length", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "text/x")
			io.WriteString(w, "hello")
		}},
		{"invalid content length", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "five")
			io.WriteString(w, "hello")
		}},
		{"flushed", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		}},
		{"status only", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) { w.WriteHeader(503) }},
		{"unknown status", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) { w.WriteHeader(599) }},
		{"no content", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.WriteHeader(204)
			io.WriteString(w, "ignored")
		}},
		{"not modified", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/x")
			w.Header().Set("Content-Length", "10")
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(304)
		}},
		{"HEAD with a body written", "HEAD / HTTP/1.1\r\nHost: a", "HEAD", func(w http.ResponseWriter) { io.WriteString(w, "hello") }},
		{"HEAD without", "HEAD / HTTP/1.1\r\nHost: a", "HEAD", func(w http.ResponseWriter) {}},
		{"HEAD with a length", "HEAD / HTTP/1.1\r\nHost: a", "HEAD", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "42")
		}},
		{"sniffed", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) { io.WriteString(w, "<html><body>x</body></html>") }},
		{"untyped", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>")
		}},
		{"trailer prefix", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+"X-T", "v")
		}},
		{"declared trailer", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "body")
			w.Header().Set("X-T", "v")
		}},
		{"client closes", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close", "GET", func(w http.ResponseWriter) { io.WriteString(w, "x") }},
		{"handler closes", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "x")
		}},
		{"HTTP/1.0", "GET / HTTP/1.0", "GET", func(w http.ResponseWriter) { io.WriteString(w, "x") }},
		{"HTTP/1.0 unknown length", "GET / HTTP/1.0", "GET", func(w http.ResponseWriter) { io.WriteString(w, big) }},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive", "GET", func(w http.ResponseWriter) { io.WriteString(w, "x") }},
		{"HTTP/1.0 keep-alive unknown length", "GET / HTTP/1.0\r\nConnection: keep-alive", "GET", func(w http.ResponseWriter) {
			io.WriteString(w, big)
		}},
		{"line breaks in a value", "GET / HTTP/1.1\r\nHost: a", "GET", func(w http.ResponseWriter) {
			w.Header().Set("X-Evil", "a\r\nX-Injected: 1")
			io.WriteString(w, "x")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.req + "\r\n\r\n"
			want := framingRef(t, raw, tc.handler)
			got := framingDown(t, raw, tc.handler)
			w, wantBody := parseFraming(t, want, tc.method)
			g, gotBody := parseFraming(t, got, tc.method)
			if g.Status != w.Status || g.Proto != w.Proto || g.ContentLength != w.ContentLength ||
				!slices.Equal(g.TransferEncoding, w.TransferEncoding) || g.Close != w.Close || gotBody != wantBody {
				t.Errorf("got %q %s length %d %v close %v body %q\nnet/http: %q %s length %d %v close %v body %q",
					g.Status, g.Proto, g.ContentLength, g.TransferEncoding, g.Close, gotBody,
					w.Status, w.Proto, w.ContentLength, w.TransferEncoding, w.Close, wantBody)
			}
			if (g.Header.Get("Date") == "") != (w.Header.Get("Date") == "") {
				t.Errorf("Date %q, net/http's %q", g.Header.Get("Date"), w.Header.Get("Date"))
			}
			g.Header.Del("Date")
			w.Header.Del("Date")
			if !headersEqual(g.Header, w.Header) || !headersEqual(g.Trailer, w.Trailer) {
				t.Errorf("header %v trailer %v\nnet/http: header %v trailer %v", g.Header, g.Trailer, w.Header, w.Trailer)
			}
		})
	}
}

// refServer is a plain net/http server, serving empty 200s. (newApp's
// also speaks h2c, and waits for the whole HTTP/2 preface before
// telling a short request from it.)
func refServer(t *testing.T) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return ln.Addr()
}

// framingRef is net/http's server's response to raw, served by h.
func framingRef(t *testing.T, raw string, h func(http.ResponseWriter)) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { h(w) })}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	defer func() {
		srv.Close()
		wg.Wait()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	// One response, read whole: with its framing, or to the close.
	var out bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &out))
	req, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	return out.Bytes()[:out.Len()-br.Buffered()]
}

// framingDown is the proxy's response writer's response to raw, served
// by h.
func framingDown(t *testing.T, raw string, h func(http.ResponseWriter)) []byte {
	t.Helper()
	var out bytes.Buffer
	c := &downConn{p: &Proxy{log: slog.New(slog.DiscardHandler)}, bw: bufio.NewWriter(&out)}
	c.res.c = c
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	w := &c.res
	w.reset(r)
	h(w)
	w.finish()
	return out.Bytes()
}

func parseFraming(t *testing.T, b []byte, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("parsing %q: %v", b, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("parsing the body of %q: %v", b, err)
	}
	return resp, string(body)
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if !slices.Equal(vs, b[k]) {
			return false
		}
	}
	return true
}

// BenchmarkDownLocalReplyConc16 measures the HTTP/1.1 loop alone: the
// proxy answers every request itself (a cluster without endpoints), and
// the figures compare it with the app's net/http server answering the
// same requests (negative: the loop is the cheaper).
func BenchmarkDownLocalReplyConc16(b *testing.B) {
	a := benchApp(b)
	p := New(Options{})
	b.Cleanup(func() { p.Close() })
	if err := p.Apply(edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": nil})); err != nil {
		b.Fatal(err)
	}
	load{conc: 16}.compare(b, a, p.ListenerAddr("svc"))
}
