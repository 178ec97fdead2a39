package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The HTTP/1.1 client's pool (h1client.go): which connection a request
// gets, and which connections may carry another request. The transports
// here dial through a dialGate, so that a test can hold a dial as long
// as it needs.

// dialGate dials upstream connections as the proxy does, tracked (Close
// closes them), TLS ones over the tracked connection if conf is set; bare
// makes TLS ones over the TCP connection itself, as another dialer would.
// The dials whose numbers (from 1) it was made with wait, once started
// (reported on started), until released or their context ends.
type dialGate struct {
	p       *Proxy
	conf    *tls.Config
	bare    bool
	n       atomic.Int64
	held    map[int64]chan struct{}
	once    map[int64]*sync.Once
	started chan int64
}

func newDialGate(t *testing.T, p *Proxy, conf *tls.Config, held ...int64) *dialGate {
	g := &dialGate{p: p, conf: conf, held: map[int64]chan struct{}{}, once: map[int64]*sync.Once{}, started: make(chan int64, len(held))}
	for _, n := range held {
		g.held[n] = make(chan struct{})
		g.once[n] = new(sync.Once)
	}
	t.Cleanup(func() { // a test that failed midway lets its dials end
		for n := range g.held {
			g.release(n)
		}
	})
	return g
}

func (g *dialGate) dial(ctx context.Context, addr string) (net.Conn, error) {
	n := g.n.Add(1)
	if ch, ok := g.held[n]; ok {
		g.started <- n
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, &dialError{err: ctx.Err()}
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &dialError{err: err}
	}
	if !g.bare {
		tc := &trackedConn{Conn: c, p: g.p}
		if !g.p.track(tc) {
			return nil, &dialError{err: errClosed}
		}
		c = tc
	}
	if g.conf == nil {
		return c, nil
	}
	tc := tls.Client(c, g.conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &dialError{err: err}
	}
	return tc, nil
}

func (g *dialGate) release(n int64) { g.once[n].Do(func() { close(g.held[n]) }) }

// waitStarted waits for the held dial n to start.
func (g *dialGate) waitStarted(t *testing.T, n int64) {
	t.Helper()
	if got := <-g.started; got != n {
		t.Fatalf("dial %d started, want %d", got, n)
	}
}

// gatedTransport is an HTTP/1.1 transport of a proxy of its own, which
// dials through a dialGate (TLS if conf is set) that holds the dials
// numbered held; its connections are closed at the end of the test. The
// gate's cleanup, registered after, runs first: a held dial does not
// hold up Close.
func gatedTransport(t *testing.T, conf *tls.Config, held ...int64) (*h1Transport, *dialGate) {
	p := New(Options{})
	t.Cleanup(func() { p.Close() })
	gate := newDialGate(t, p, conf, held...)
	tr := newH1Transport(p, 0, gate.dial)
	t.Cleanup(tr.CloseIdleConnections)
	return tr, gate
}

// sendResult is a response body read in full, or the error that ended it.
type sendResult struct {
	body string
	err  error
}

// goSend sends req with tr on a goroutine of its own, and reads the
// whole response.
func goSend(tr *h1Transport, req *http.Request) <-chan sendResult {
	ch := make(chan sendResult, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			ch <- sendResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- sendResult{string(b), err}
	}()
	return ch
}

// smuggled is a response an upstream sends after another, unasked: the
// next request on the connection would take it for its own.
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nSMUGGLED"

// readLarge reads body to its end, n bytes, with reads as long as what
// is left, as a copy with a large buffer does: past what the response's
// reader holds, the end of the body is read straight from the
// connection, and nothing after it.
func readLarge(t *testing.T, body io.ReadCloser, n int) {
	t.Helper()
	defer body.Close()
	if _, err := io.ReadFull(body, make([]byte, n)); err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if k, err := body.Read(make([]byte, 1)); k != 0 || err != io.EOF {
		t.Fatalf("after the body: %d, %v, want its end", k, err)
	}
}

// wantSecond checks that resp is the upstream's answer to its request,
// not the smuggled one.
func wantSecond(t *testing.T, resp *http.Response, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "second" || resp.Header.Get("X-Smuggled") != "" {
		t.Fatalf("the second request got %q %v, want the answer to it", b, resp.Header)
	}
}

// Bytes an upstream sends after a response in the same TLS record (more
// than its Content-Length says, a body on a HEAD response) are decrypted
// with the response's end and held in the TLS layer, where neither the
// response's reader nor the peek at the socket sees them: the connection
// closes, rather than let the next request take them for its response.
// So it does for TLS over the proxy's own connections and over another.
// (A fixed bug: a pooled connection served a request a response its
// upstream had sent after another's.)
func TestH1TLSBytesAfterResponse(t *testing.T) {
	body := strings.Repeat("a", 10000)
	// A response head as long as the response's read buffer: its end is
	// the end of the reader's first read.
	head := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Pad: \r\n\r\n"
	head = strings.Replace(head, "X-Pad: ", "X-Pad: "+strings.Repeat("p", readBufSize-len(head)), 1)
	for _, tc := range []struct {
		name   string
		method string
		first  string // the response, sent with smuggled in one record
		n      int    // the first response's body length
	}{
		{"more than its Content-Length", "GET", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), len(body)},
		{"a body on a HEAD response", "HEAD", head, 0},
	} {
		for _, bare := range []bool{false, true} {
			name := tc.name
			if bare {
				name += ", TLS over another connection"
			}
			t.Run(name, func(t *testing.T) { tlsBytesAfterResponse(t, tc.method, tc.first, tc.n, bare) })
		}
	}
}

// tlsBytesAfterResponse sends a request whose response (first, with a
// body of n bytes) comes with smuggled, then another request, on a TLS
// connection over the proxy's own (or, if bare, another).
func tlsBytesAfterResponse(t *testing.T, method, first string, n int, bare bool) {
	noLeaks(t)
	ca := newCA(t, td)
	leaf := ca.leaf(t, td, "c")
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Records of up to 16 KiB from the first byte: one write, one
	// record.
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, DynamicRecordSizingDisabled: true})
	app := newRawAppOn(t, ln, func(_ int, c net.Conn, req *http.Request) bool {
		if req.URL.Path == "/first" {
			io.WriteString(c, first+smuggled)
		} else {
			answer(c, req, "200 OK", "second")
		}
		return true
	})
	// The upstream's identity is not what is tested.
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	tr, gate := gatedTransport(t, conf)
	gate.bare = bare
	resp, err := tr.RoundTrip(h1Req(testCtx(t), method, app.addr(), "/first", nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	readLarge(t, resp.Body, n)
	resp, err = tr.RoundTrip(h1Req(testCtx(t), "GET", app.addr(), "/second", nil, 0))
	wantSecond(t, resp, err)
	if n := app.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2", n)
	}
	waitFor(t, "the first connection to close", func() bool { return app.ended.Load() == 1 })
}

// Bytes an upstream sends after a response, left in the socket (the end
// of the body was read straight from it), keep the connection from the
// request waiting for one, as they keep an idle one from reuse.
func TestH1BytesAfterResponseNotHandedOver(t *testing.T) {
	noLeaks(t)
	body := strings.Repeat("a", 10000)
	app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
		if req.URL.Path == "/first" {
			// One write: the whole of it has arrived with the head.
			io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s", len(body), body, smuggled))
		} else {
			answer(c, req, "200 OK", "second")
		}
		return true
	})
	tr, gate := gatedTransport(t, nil, 2)
	first, err := tr.RoundTrip(h1Req(testCtx(t), "GET", app.addr(), "/first", nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	second := goSend(tr, h1Req(testCtx(t), "GET", app.addr(), "/second", nil, 0))
	gate.waitStarted(t, 2) // the second request waits for a connection
	readLarge(t, first.Body, len(body))
	gate.release(2)
	if r := <-second; r.err != nil || r.body != "second" {
		t.Fatalf("the second request got %q, %v, want the answer to it", r.body, r.err)
	}
	if n := app.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2", n)
	}
}

// A request waiting for its connection to be dialed takes a connection
// handed back meanwhile, without waiting for the dial's end; the dial's
// connection goes to the pool. (A fixed bug: the request waited for its
// dial, up to the connect timeout, with a connection free.)
func TestH1HandOverDoesNotWaitForDial(t *testing.T) {
	noLeaks(t)
	arrived, free := make(chan struct{}), make(chan struct{})
	app := newRawApp(t, func(conn int, c net.Conn, req *http.Request) bool {
		if req.URL.Path == "/held" {
			close(arrived)
			<-free
		}
		answer(c, req, "200 OK", fmt.Sprintf("%s on conn %d", req.URL.Path, conn))
		return true
	})
	tr, gate := gatedTransport(t, nil, 2)
	held := goSend(tr, h1Req(testCtx(t), "GET", app.addr(), "/held", nil, 0))
	<-arrived
	waiting := goSend(tr, h1Req(testCtx(t), "GET", app.addr(), "/b", nil, 0))
	gate.waitStarted(t, 2)
	close(free)
	if r := <-held; r.err != nil || r.body != "/held on conn 1" {
		t.Fatalf("the held request got %q, %v", r.body, r.err)
	}
	// The dial is still held: only the connection handed back can serve
	// this request (before the fix, the request's context ended its wait
	// for the dial, and the request).
	if r := <-waiting; r.err != nil || r.body != "/b on conn 1" {
		t.Fatalf("the waiting request got %q, %v, want it served on the connection handed back", r.body, r.err)
	}
	gate.release(2)
	waitIdle(t, tr, 2)
	if n := app.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2", n)
	}
}

// The retry of a request whose reused connection turned out stale goes
// on a new connection, even if another is handed back while it is
// dialed: that one may be stale too, and the request gets no other try.
func TestH1RetryTakesNewConnection(t *testing.T) {
	noLeaks(t)
	var (
		arrived, free = make(chan struct{}), make(chan struct{})
		mu            sync.Mutex
		served        = map[int]int{} // requests by connection
	)
	// Connections 1 and 2 answer their first request (/held once
	// freed), and close on their second without answering, as an app
	// whose keep-alive timeout ran out just then.
	app := newRawApp(t, func(conn int, c net.Conn, req *http.Request) bool {
		mu.Lock()
		served[conn]++
		n := served[conn]
		mu.Unlock()
		if conn <= 2 && n == 2 {
			return false
		}
		if req.URL.Path == "/held" {
			close(arrived)
			<-free
		}
		answer(c, req, "200 OK", fmt.Sprintf("conn %d", conn))
		return true
	})
	tr, gate := gatedTransport(t, nil, 3)
	held := goSend(tr, h1Req(testCtx(t), "GET", app.addr(), "/held", nil, 0))
	<-arrived
	if _, body := send(t, tr, h1Req(testCtx(t), "GET", app.addr(), "/", nil, 0)); body != "conn 2" {
		t.Fatalf("got %q", body)
	}
	// Sent on connection 2, which closes: retried on a new one.
	retried := goSend(tr, h1Req(testCtx(t), "GET", app.addr(), "/", nil, 0))
	gate.waitStarted(t, 3) // the retry's dial
	close(free)
	if r := <-held; r.err != nil || r.body != "conn 1" {
		t.Fatalf("the held request got %q, %v", r.body, r.err)
	}
	gate.release(3)
	r := <-retried
	if r.err != nil || r.body != "conn 3" {
		var se *staleConnError
		t.Fatalf("the retry got %q, %v (stale: %v), want the new connection's answer", r.body, r.err, errors.As(r.err, &se))
	}
	waitIdle(t, tr, 2) // connections 1 and 3
}

// endlessBody is a request body that never ends.
type endlessBody struct{}

func (endlessBody) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// A response that ends before its request body was written in full
// ends the request: the body's writer stops and the connection closes,
// although the upstream neither reads the rest of the body nor closes.
// (A fixed bug: the writer and its connection stayed until the proxy
// closed.)
func TestH1ResponseEndsUnwrittenBody(t *testing.T) {
	noLeaks(t)
	// Made first, its cleanup runs after the app's: without the fix, the
	// app's closing the connection is what ends the writer.
	tr, _ := gatedTransport(t, nil)
	drain := make(chan struct{})
	app := newRawApp(t, func(_ int, c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-drain
		io.Copy(io.Discard, c) // to the end of the connection, if it ends
		return false
	})
	t.Cleanup(func() {
		select {
		case <-drain:
		default:
			close(drain)
		}
	})
	resp, body := send(t, tr, h1Req(testCtx(t), "POST", app.addr(), "/", endlessBody{}, -1))
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	// Read now, the connection ends only if the writer stopped.
	close(drain)
	waitFor(t, "the connection to close", func() bool { return app.ended.Load() == 1 })
	if n := tr.idleConns(); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
}
