// Package proxy is Trellis's sidecar data plane: it runs the listeners and
// clusters an xDS configuration describes (the subset xds/generate emits)
// and carries the traffic.
//
// This increment is L4 only: listeners with an HTTP connection manager
// are proxied as TCP to their route's cluster (with their HTTP RBAC
// decided fail-closed at connection time, see rbac.go); endpoint weights,
// localities and priorities are ignored (round robin over healthy
// endpoints).
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
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Config is one complete, consistent xDS configuration of the proxy, as
// its xDS client last received and ACKed it.
type Config struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
}

// Proxy runs a Config.
type Proxy struct {
	log     *slog.Logger
	metrics *metrics

	// cur is the applied configuration that new connections and
	// handshakes use; nil before the first Apply.
	cur atomic.Pointer[state]

	applyMu sync.Mutex // serialises Apply and Close

	mu        sync.Mutex
	closed    bool                     // guarded by mu
	listeners map[string]*liveListener // guarded by mu
	conns     map[net.Conn]struct{}    // guarded by mu
	done      chan struct{}            // closed by Close

	wg sync.WaitGroup
}

// liveListener is a bound listener; its spec is swapped when a new Config
// changes the listener but not its address, so the socket stays open.
type liveListener struct {
	ln   net.Listener
	spec atomic.Pointer[listenerSpec]
}

// New returns a proxy running no configuration yet.
func New(opts Options) *Proxy {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{
		log:       log,
		metrics:   newMetrics(),
		listeners: map[string]*liveListener{},
		conns:     map[net.Conn]struct{}{},
		done:      make(chan struct{}),
	}
}

// Apply replaces the running configuration with cfg: listeners are
// opened, changed or closed, and new connections use the new clusters,
// endpoints and certificates, while established ones carry on. A cfg that
// cannot be applied is an error and changes nothing (the xDS client NACKs
// it).
//
// A listener whose address is unchanged keeps its socket and takes its
// new filters for new connections; one whose address changed is bound
// anew and its old socket closed. Connections accepted by a changed or
// removed listener are left to finish.
func (p *Proxy) Apply(cfg Config) (err error) {
	defer func() {
		if err != nil {
			p.metrics.applyError.Inc()
		} else {
			p.metrics.applyOK.Inc()
		}
	}()
	c, err := compile(cfg)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	p.metrics.resolve(c)
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
	for name, spec := range c.listeners {
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

	p.cur.Store(c.state)
	next := map[string]*liveListener{}
	var start, stop []*liveListener
	for name, spec := range c.listeners {
		if ln, ok := fresh[name]; ok {
			l := &liveListener{ln: ln}
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
	}
	for name, l := range old {
		if _, ok := c.listeners[name]; !ok {
			stop = append(stop, l)
		}
	}
	p.mu.Lock()
	p.listeners = next
	p.mu.Unlock()
	for _, l := range stop {
		l.ln.Close()
	}
	for _, l := range start {
		p.wg.Go(func() { p.accept(l) })
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

// Close closes every listener and connection and waits for the proxy's
// goroutines to end. The proxy cannot be used again.
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
	for _, l := range p.listeners {
		l.ln.Close()
	}
	p.listeners = map[string]*liveListener{}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// track registers c so that Close closes it; false (and c closed) if the
// proxy is closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	c.Close()
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
			defer func() {
				spec.m.duration.Observe(time.Since(start).Seconds())
				spec.m.active.Dec()
			}()
			defer p.untrack(c)
			p.serve(spec, c)
		})
	}
}
