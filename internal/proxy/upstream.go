package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Upstream connections. A tcp_proxy connection dials its own; HTTP
// requests share a cluster's pool, which keeps connections per endpoint:
// for a cluster that speaks only HTTP/1.1 (explicitly, or by auto_config
// without TLS), the proxy's own HTTP/1.1 client (h1client.go); for one
// that may speak HTTP/2, an http.Transport, whose HTTP/2 connections
// multiplex requests (h2c with prior knowledge to a plaintext host that
// speaks HTTP/2, h2 when ALPN agrees on it over TLS). A pool outlives the
// Config that made it while its cluster's transport settings are
// unchanged, so that endpoint, route and secret updates keep the
// connections; a dial reads the certificates of the Config current at
// that moment, so rotated secrets apply to new connections and
// established ones carry on.

// upstreamProtocol is what a cluster speaks over HTTP.
type upstreamProtocol uint8

const (
	protoHTTP1 upstreamProtocol = iota // HTTP/1.1
	protoHTTP2                         // HTTP/2: h2c prior knowledge without TLS
	protoAuto                          // by ALPN over TLS (h2 or http/1.1); HTTP/1.1 without
)

// defaultUpstreamIdle is Envoy's idle_timeout of upstream HTTP
// connections (common_http_protocol_options) when unset.
const defaultUpstreamIdle = time.Hour

// pool carries a cluster's HTTP requests.
type pool struct {
	key     string // the transport settings it was made for
	cluster string
	scheme  string // of the request URLs: "https" dials TLS
	tr      roundTripper
}

// roundTripper is what a pool sends requests with: an *h1Transport or an
// *http.Transport.
type roundTripper interface {
	RoundTrip(*http.Request) (*http.Response, error)
	// CloseIdleConnections closes the idle connections, and makes those
	// in use close once their request is done.
	CloseIdleConnections()
}

// newPool makes cl's pool.
func (p *Proxy) newPool(cl *cluster) *pool {
	pl := &pool{key: cl.poolKey, cluster: cl.name, scheme: "http"}
	if cl.tls != nil {
		pl.scheme = "https"
	}
	if cl.proto == protoHTTP1 || cl.proto == protoAuto && cl.tls == nil {
		timeout, u := cl.connectTimeout, h1Only(cl.tls)
		pl.tr = newH1Transport(p, cl.idleTimeout, func(ctx context.Context, addr string) (net.Conn, error) {
			return p.dialPooled(ctx, pl.cluster, addr, timeout, u)
		})
		return pl
	}
	var protos http.Protocols
	switch {
	case cl.proto == protoHTTP2 && cl.tls == nil:
		protos.SetUnencryptedHTTP2(true)
	case cl.proto == protoHTTP2:
		protos.SetHTTP2(true)
	case cl.proto == protoAuto && cl.tls != nil:
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	timeout, u := cl.connectTimeout, cl.tls
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		return p.dialPooled(ctx, pl.cluster, addr, timeout, u)
	}
	tr := &http.Transport{
		Protocols:           &protos,
		MaxIdleConnsPerHost: 1 << 12,
		IdleConnTimeout:     cl.idleTimeout,
		DisableCompression:  true,
	}
	if u != nil {
		tr.DialTLSContext = dial
	} else {
		tr.DialContext = dial
	}
	pl.tr = tr
	return pl
}

// h1Only is u offering only HTTP/1.1 by ALPN, for a cluster that speaks
// only that: an upstream that chose h2 would get HTTP/1.1 nonetheless.
func h1Only(u *upstreamTLS) *upstreamTLS {
	if u == nil || !slices.Contains(u.alpn, "h2") {
		return u
	}
	v := *u
	v.alpn = slices.DeleteFunc(slices.Clone(u.alpn), func(p string) bool { return p == "h2" })
	if len(v.alpn) == 0 {
		v.alpn = []string{"http/1.1"}
	}
	return &v
}

// dialError is a failed attempt to open an upstream connection.
type dialError struct {
	err      error
	overflow bool // the guard refused it
}

func (e *dialError) Error() string { return "proxy: upstream connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

var errOverflow = errors.New("connection limit reached")

// dialPooled opens a connection for cluster's pool, asking the current
// Config's cluster (if it still has one of that name) for admission. At
// max_connections, a guard that can make the dial wait as a pending
// request (connWaiter, see balancer.go) does; an error says the request
// gets no connection from this dial: net/http delivers it to the request
// only if that is still waiting for one.
func (p *Proxy) dialPooled(ctx context.Context, cluster, addr string, timeout time.Duration, u *upstreamTLS) (net.Conn, error) {
	st := p.cur.Load()
	cl := st.clusters[cluster]
	var h *host
	if cl != nil {
		h = cl.hostByAddr[addr]
	}
	var onClose func()
	if h != nil {
		g := cl.guard
		if !g.admitConnection(h) {
			cl.m.overflowConnections.Inc()
			w, ok := g.(connWaiter)
			if !ok {
				return nil, &dialError{err: errOverflow, overflow: true}
			}
			if err := w.awaitConnection(ctx, timeout); err != nil {
				if errors.Is(err, errPendingOverflow) {
					cl.m.overflowPendingRequests.Inc()
				}
				return nil, &dialError{err: fmt.Errorf("%w: %w", errOverflow, err), overflow: true}
			}
		}
		onClose = func() { g.connectionClosed(h) }
	}
	c, _, err := p.connect(ctx, st, addr, timeout, u, onClose)
	if err != nil {
		// A dial the request gave up on (ended, timed out) is not the
		// host's failure.
		if cl != nil && !errors.Is(err, errClosed) && ctx.Err() == nil {
			cl.m.connectErrors.Inc()
		}
		return nil, &dialError{err: err}
	}
	return c, nil
}

// connect dials addr within timeout, with TLS if u is set, cancelled by
// Close. The TCP connection under the one returned (raw) is tracked, so
// that Close closes it; onClose, if set, runs once it is closed, whether
// or not connect succeeded.
func (p *Proxy) connect(ctx context.Context, st *state, addr string, timeout time.Duration, u *upstreamTLS, onClose func()) (conn net.Conn, raw *trackedConn, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Close cancels the dial. The watcher is joined before connect
	// returns: connect also runs on net/http's goroutines, which the
	// proxy's WaitGroup does not count.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-p.done:
			cancel()
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if onClose != nil {
			onClose()
		}
		return nil, nil, err
	}
	tc := &trackedConn{Conn: c, p: p, onClose: onClose}
	if !p.track(tc) {
		return nil, nil, errClosed
	}
	if u == nil {
		return tc, tc, nil
	}
	cfg, err := clientTLS(st, u)
	if err != nil {
		tc.Close()
		return nil, nil, err
	}
	tlc := tls.Client(tc, cfg)
	if err := tlc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, nil, fmt.Errorf("%s: %w", addr, err)
	}
	return tlc, tc, nil
}

var errClosed = errors.New("proxy closed")

// trackedConn is an upstream TCP connection that leaves the proxy's set
// when closed.
type trackedConn struct {
	net.Conn
	p       *Proxy
	once    sync.Once
	onClose func()
	// probing makes Read fail at once (errProbe) without reading: set
	// by the connection's reader around a read of the TLS layer above
	// that must not reach the socket (see h1Conn.tlsPending).
	probing bool
}

func (c *trackedConn) Read(b []byte) (int, error) {
	if c.probing {
		return 0, errProbe
	}
	return c.Conn.Read(b)
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.p.forget(c)
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// CloseWrite half-closes the connection, as tcp_proxy passes on.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("proxy: connection cannot half-close")
}
