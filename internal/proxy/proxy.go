// Package proxy is Trellis's sidecar data plane: it runs the listeners,
// routes and clusters an xDS configuration describes (the subset
// xds/generate emits) and carries the traffic.
//
// A listener is either a tcp_proxy (L4: bytes both ways to a cluster's
// host) or an HTTP connection manager (L7, http.go): HTTP/1.1 and
// HTTP/2 (ALPN over TLS, prior knowledge in plaintext), per-request RBAC,
// routing by virtual host and route, retries, timeouts and header
// rewrites, to clusters whose connections are pooled (upstream.go).
// Each cluster's balancer (balancer.go, over package balance) picks its
// hosts among the healthy endpoints by the cluster's lb_policy, and
// applies its circuit breakers and outlier detection; localities and
// priorities are ignored.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Config is one complete, consistent xDS configuration of the proxy, as
// its xDS client last received and ACKed it.
type Config struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
	// Routes are the route configurations that HTTP listeners name
	// through RDS.
	Routes []*routev3.RouteConfiguration
}

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
}

// Proxy runs a Config.
type Proxy struct {
	log     *slog.Logger
	metrics *metrics

	// cur is the applied configuration that new connections, requests
	// and handshakes use; nil before the first Apply.
	cur atomic.Pointer[state]

	applyMu sync.Mutex       // serialises Apply and Close
	pools   map[string]*pool // guarded by applyMu; by cluster name
	// balancers are the clusters' balancers by name, kept across
	// Configs; replaced whole by Apply (with applyMu held), read by the
	// metrics collector.
	balancers atomic.Pointer[map[string]*balancer]

	mu        sync.Mutex
	closed    bool                     // guarded by mu
	listeners map[string]*liveListener // guarded by mu
	conns     map[net.Conn]struct{}    // guarded by mu
	done      chan struct{}            // closed by Close

	// wg counts the proxy's goroutines and the HTTP connections of its
	// servers; handlers counts the HTTP handlers running (net/http starts
	// those of HTTP/2 streams on its own).
	wg       sync.WaitGroup
	handlers gate

	// balance, if set before the first Apply, replaces the picker and
	// guard of each cluster of each Config (tests): it is called with
	// the cluster's balancer as both, with applyMu held, once the Config
	// can no longer be refused.
	balance func(*cluster) (picker, guard)
}

// liveListener is a bound listener; its spec is swapped when a new Config
// changes the listener but not its address, so the socket stays open.
type liveListener struct {
	name string
	ln   net.Listener
	spec atomic.Pointer[listenerSpec]

	mu  sync.Mutex
	srv *httpServer // guarded by mu; made for the first HTTP connection
}

// New returns a proxy running no configuration yet.
func New(opts Options) *Proxy {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		log:       log,
		pools:     map[string]*pool{},
		listeners: map[string]*liveListener{},
		conns:     map[net.Conn]struct{}{},
		done:      make(chan struct{}),
		handlers:  gate{drain: make(chan struct{})},
	}
	p.balancers.Store(&map[string]*balancer{})
	p.metrics = newMetrics(p)
	return p
}

// Apply replaces the running configuration with cfg: listeners are
// opened, changed or closed, and new connections and requests use the
// new routes, clusters, endpoints and certificates, while established
// connections and requests in flight carry on. A cfg that cannot be
// applied is an error and changes nothing (the xDS client NACKs it),
// the clusters' balancing state included.
//
// A listener whose address is unchanged keeps its socket and takes its
// new filters for new connections (and, for HTTP, for the next requests
// of its open connections); one whose address changed is bound anew and
// its old socket closed. Connections accepted by a changed or removed
// listener are left to finish (HTTP ones are drained: idle connections
// closed, HTTP/2 ones sent GOAWAY). A cluster whose transport settings
// (TLS, protocol, connect timeout) are unchanged keeps its pooled
// connections, and every cluster that keeps its name keeps its
// balancer: round-robin position, requests in flight, circuit-breaker
// counts, outlier ejections.
func (p *Proxy) Apply(cfg Config) (err error) {
	defer func() {
		if err != nil {
			p.metrics.applyError.Inc()
		} else {
			p.metrics.applyOK.Inc()
		}
	}()
	st, err := compile(cfg)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.New("proxy: closed")
	}
	old := p.listeners
	p.mu.Unlock()

	// Bind what needs binding before changing anything, so that a busy
	// address refuses the whole Config.
	fresh := map[string]net.Listener{}
	for name, spec := range st.listeners {
		if l, ok := old[name]; ok && l.spec.Load().addr == spec.addr {
			continue
		}
		ln, err := net.Listen("tcp", spec.addr)
		if err != nil {
			for _, ln := range fresh {
				ln.Close()
			}
			return fmt.Errorf("proxy: listener %q: %w", name, err)
		}
		fresh[name] = ln
	}

	// Nothing can fail from here on.
	p.metrics.resolve(st)
	p.commitBalancers(st)
	if p.balance != nil {
		for _, cl := range st.clusters {
			cl.picker, cl.guard = p.balance(cl)
		}
	}
	pools := map[string]*pool{}
	for name, cl := range st.clusters {
		if pl := p.pools[name]; pl != nil && pl.key == cl.poolKey {
			cl.pool = pl
		} else {
			cl.pool = p.newPool(cl)
		}
		pools[name] = cl.pool
	}
	retired := p.pools
	p.pools = pools

	p.cur.Store(st)
	next := map[string]*liveListener{}
	var start, stop []*liveListener
	for name, spec := range st.listeners {
		if ln, ok := fresh[name]; ok {
			l := &liveListener{name: name, ln: ln}
			l.spec.Store(spec)
			next[name] = l
			start = append(start, l)
			if o, ok := old[name]; ok {
				stop = append(stop, o)
			}
			continue
		}
		l := old[name]
		l.spec.Store(spec)
		next[name] = l
		l.mu.Lock()
		if l.srv != nil && (spec.http == nil || l.srv.key != spec.http.serverKey()) {
			p.drain(l.srv)
			l.srv = nil
		}
		l.mu.Unlock()
	}
	for name, l := range old {
		if _, ok := st.listeners[name]; !ok {
			stop = append(stop, l)
			p.metrics.forgetListener(name)
		}
	}
	p.mu.Lock()
	p.listeners = next
	p.mu.Unlock()
	for _, l := range stop {
		l.ln.Close()
		l.mu.Lock()
		if l.srv != nil {
			p.drain(l.srv)
			l.srv = nil
		}
		l.mu.Unlock()
	}
	for _, l := range start {
		p.wg.Go(func() { p.accept(l) })
	}
	for name, pl := range retired {
		if pools[name] != pl {
			pl.tr.CloseIdleConnections()
		}
	}
	return nil
}

// Ready reports whether a configuration has been applied.
func (p *Proxy) Ready() bool { return p.cur.Load() != nil }

// ListenerAddr is the address listener name is bound to (the port the
// system chose for port 0), or nil if no such listener runs.
func (p *Proxy) ListenerAddr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[name]; ok {
		return l.ln.Addr()
	}
	return nil
}

// Close closes every listener and connection, upstream and downstream,
// and waits for the proxy's goroutines and HTTP handlers to end. The
// proxy cannot be used again.
func (p *Proxy) Close() error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	listeners := p.listeners
	p.listeners = map[string]*liveListener{}
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, l := range listeners {
		l.ln.Close()
		l.mu.Lock()
		if l.srv != nil {
			l.srv.hs.Close()
		}
		l.mu.Unlock()
	}
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
	p.handlers.closeAndWait()
	for _, pl := range p.pools {
		pl.tr.CloseIdleConnections()
	}
	return nil
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// track registers c so that Close closes it; false (and c closed) if the
// proxy is closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	return true
}

// untrack closes c and forgets it.
func (p *Proxy) untrack(c net.Conn) {
	c.Close()
	p.forget(c)
}

// forget removes c from the set Close closes.
func (p *Proxy) forget(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) accept(l *liveListener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		if !p.track(c) {
			return
		}
		spec := l.spec.Load()
		spec.m.conns.Inc()
		spec.m.active.Inc()
		start := time.Now()
		p.wg.Go(func() {
			if spec.http != nil {
				if p.serveHTTPConn(l, spec, c, start) {
					return // net/http has the connection now
				}
			} else {
				p.serve(spec, c)
			}
			p.untrack(c)
			spec.m.duration.Observe(time.Since(start).Seconds())
			spec.m.active.Dec()
		})
	}
}

// gate counts running handlers until it is closed, then refuses new ones
// and lets closeAndWait return once the last has left.
type gate struct {
	n     atomic.Int64
	once  sync.Once
	drain chan struct{}
}

// gateClosed is added to the count by closeAndWait: a negative count
// means closed.
const gateClosed = -1 << 62

// enter returns false if the gate is closed.
func (g *gate) enter() bool {
	if g.n.Add(1) < 0 {
		g.leave()
		return false
	}
	return true
}

func (g *gate) leave() {
	if g.n.Add(-1) == gateClosed {
		g.once.Do(func() { close(g.drain) })
	}
}

func (g *gate) closeAndWait() {
	if g.n.Add(gateClosed) == gateClosed {
		g.once.Do(func() { close(g.drain) })
	}
	<-g.drain
}
