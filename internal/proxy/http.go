package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The downstream side of HTTP listeners. The proxy accepts, runs the TLS
// handshake and the network RBAC itself (conn.go), then tells the
// protocol apart: ALPN over TLS; over plaintext, HTTP/2 with prior
// knowledge when the client opens with the HTTP/2 preface. HTTP/1.1
// connections are served by the proxy's own loop on the goroutine that
// accepted them (h1server.go), HTTP/2 ones by the listener's
// http.Server. Each request then reads the current Config: RBAC and
// routes changed by an Apply apply to the next request of an open
// connection.

// maxRequestHeaderBytes bounds a request's header, as Envoy's
// max_request_headers_kb (60 KiB).
const maxRequestHeaderBytes = 60 << 10

// httpServer serves a listener's connections for one serverKey: its
// http.Server, fed by connQueue, those that speak HTTP/2, and its
// HTTP/1.1 loops the others.
type httpServer struct {
	key serverKey // httpSpec.serverKey it was made for
	hs  *http.Server
	ln  *connQueue
	h   *httpHandler

	mu       sync.Mutex
	draining bool                   // guarded by mu
	down     map[*downConn]struct{} // guarded by mu: the HTTP/1.1 connections
}

// addDown registers c as one of s's HTTP/1.1 connections; false if s is
// draining, and c must not be served.
func (s *httpServer) addDown(c *downConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.down[c] = struct{}{}
	return true
}

func (s *httpServer) removeDown(c *downConn) {
	s.mu.Lock()
	delete(s.down, c)
	s.mu.Unlock()
}

// drainDown makes s's HTTP/1.1 connections take no new request: idle
// ones close now, busy ones after their response.
func (s *httpServer) drainDown() {
	s.mu.Lock()
	s.draining = true
	conns := make([]*downConn, 0, len(s.down))
	for c := range s.down {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
}

// connQueue is the net.Listener of an httpServer: the connections the
// proxy hands over.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// push hands c to the server; false if it is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

type connKey struct{}

// httpConn is a downstream connection of an HTTP listener, under TLS if
// any: it counts the bytes on the wire and, once closed, leaves the
// proxy's set and ends its connection metrics. It carries what the
// requests on it need to know of the peer.
type httpConn struct {
	net.Conn // the accepted TCP connection, tracked
	p        *Proxy
	m        *listenerMetrics
	start    time.Time
	once     sync.Once

	ids      []string // the peer's URI SANs
	sourceIP string
	rbac     atomic.Pointer[principalCache]
}

func (c *httpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.m.rx.Add(float64(n))
	}
	return n, err
}

func (c *httpConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.m.tx.Add(float64(n))
	}
	return n, err
}

func (c *httpConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.p.forget(c.Conn)
		c.m.duration.Observe(time.Since(c.start).Seconds())
		c.m.active.Dec()
	})
	return err
}

// principals is what e's principals make of the peer, worked out once per
// connection and engine.
func (c *httpConn) principals(e *rbacEngine) []bool {
	if pc := c.rbac.Load(); pc != nil && pc.e == e {
		return pc.who
	}
	who := e.peerMatches(c.ids)
	c.rbac.Store(&principalCache{e: e, who: who})
	return who
}

// serveHTTPConn admits c (TLS, network RBAC) and serves it: HTTP/1.1 on
// this goroutine, until the connection ends, HTTP/2 by l's http.Server.
// It returns false if it did neither, and c is still the caller's.
func (p *Proxy) serveHTTPConn(l *liveListener, spec *listenerSpec, c net.Conn, start time.Time) bool {
	hc := &httpConn{Conn: c, p: p, m: spec.m, start: start}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		hc.sourceIP = a.IP.String()
	}
	down, ids, ok := p.admit(spec, hc)
	if !ok {
		return false
	}
	hc.ids = ids
	h := spec.http
	if !h.protocols.HTTP1() {
		return p.handOver(l, h, down)
	}
	var cs *tls.ConnectionState
	if tc, ok := down.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if st.NegotiatedProtocol == "h2" {
			return p.handOver(l, h, down)
		}
		cs = &st
	}
	dc := newDownConn(p, hc, down, cs)
	if cs == nil && h.protocols.UnencryptedHTTP2() {
		h2, err := dc.sniffPreface(h.idleConn)
		if err != nil {
			dc.release()
			return false
		}
		if h2 {
			// net/http reads the preface again, from the replay.
			pc := &prefacedConn{Conn: down, pre: dc.release()}
			return p.handOver(l, h, pc)
		}
	}
	srv := p.httpServerFor(l, h)
	if srv == nil || !srv.addDown(dc) {
		dc.release()
		return false
	}
	dc.serve(srv)
	return true
}

// handOver gives c to l's http.Server for h.
func (p *Proxy) handOver(l *liveListener, h *httpSpec, c net.Conn) bool {
	srv := p.httpServerFor(l, h)
	return srv != nil && srv.ln.push(c)
}

// httpServerFor returns l's server for h, making it if l has none or one
// for other settings (which it drains); nil once the proxy is closing.
func (p *Proxy) httpServerFor(l *liveListener, h *httpSpec) *httpServer {
	key := h.serverKey()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.srv != nil && l.srv.key == key {
		return l.srv
	}
	if p.isClosed() {
		return nil
	}
	if l.srv != nil {
		p.drain(l.srv)
	}
	protos := h.protocols
	s := &httpServer{
		key:  key,
		ln:   &connQueue{addr: l.ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})},
		h:    &httpHandler{p: p, name: l.name},
		down: map[*downConn]struct{}{},
	}
	s.hs = &http.Server{
		Handler:        s.h,
		Protocols:      &protos,
		IdleTimeout:    h.idleConn,
		MaxHeaderBytes: maxRequestHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 1024,
			// HTTP/2's default frame size, as Envoy's, rather than
			// net/http's 1 MiB: a Go client sizes its per-request write
			// buffer by the peer's setting (up to 512 KiB for a body of
			// unknown length, gRPC streams included) and the server's
			// read buffer grows to the largest frame received. 16 KiB
			// frames keep both small and still fill a TLS record.
			MaxReadFrameSize: 16 << 10,
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, httpConnOf(c))
		},
		ConnState: func(_ net.Conn, cs http.ConnState) {
			// Serve's goroutine, which wg counts, reports StateNew: the
			// connection is counted before Serve can end.
			switch cs {
			case http.StateNew:
				p.wg.Add(1)
			case http.StateClosed, http.StateHijacked:
				p.wg.Done()
			}
		},
	}
	l.srv = s
	p.wg.Go(func() { s.hs.Serve(s.ln) })
	return s
}

func httpConnOf(c net.Conn) *httpConn {
	switch tc := c.(type) {
	case *tls.Conn:
		c = tc.NetConn()
	case *prefacedConn:
		c = tc.Conn
	}
	hc, _ := c.(*httpConn)
	return hc
}

// prefacedConn is a plaintext connection whose first bytes were read to
// tell HTTP/2 from HTTP/1.1: it returns them first.
type prefacedConn struct {
	net.Conn // the *httpConn
	pre      []byte
}

func (c *prefacedConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// drain shuts s down gracefully: no new connections, idle ones closed,
// HTTP/2 ones sent GOAWAY, active ones left to finish their requests,
// unless Close comes first. net/http's part runs in the background.
func (p *Proxy) drain(s *httpServer) {
	s.ln.Close()
	s.drainDown()
	p.wg.Go(func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-p.done:
				cancel()
			case <-stop:
			}
		}()
		if s.hs.Shutdown(ctx) != nil {
			s.hs.Close()
		}
		close(stop)
		<-stopped
	})
}

// httpHandler serves the requests of one listener.
type httpHandler struct {
	p    *Proxy
	name string
}

// ServeHTTP serves the requests net/http's server reads (HTTP/2).
func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hc, _ := r.Context().Value(connKey{}).(*httpConn)
	if h.serve(w, r, hc) {
		// Reset the stream (HTTP/2) or close the connection (HTTP/1.1).
		panic(http.ErrAbortHandler)
	}
}

// serve serves r, which came on hc (nil if unknown). abort means that
// the response broke after its headers were sent: the caller must reset
// the stream (HTTP/2) or close the connection without ending the
// response (HTTP/1.1), so that the client sees it cut short.
func (h *httpHandler) serve(w http.ResponseWriter, r *http.Request, hc *httpConn) (abort bool) {
	p := h.p
	if !p.handlers.enter() {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		return false
	}
	defer p.handlers.leave()
	st := p.cur.Load()
	spec := st.listeners[h.name]
	if spec == nil || spec.http == nil {
		// The listener is gone, or no longer HTTP: this connection is
		// one of its last.
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		return false
	}
	x := &exchange{p: p, w: w, r: r, st: st, spec: spec, hs: spec.http, hc: hc}
	x.query.r = r
	return x.run()
}
