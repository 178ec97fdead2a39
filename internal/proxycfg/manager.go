package proxycfg

import (
	"context"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// CA is what the Manager needs of the agent's Connect CA client: blocking
// reads of the roots and of one service's leaf, each answering once the
// value's index is above minIndex (or at once with minIndex 0), and with
// what it has when ctx ends.
type CA interface {
	ConnectCARoots(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error)
	ConnectCALeaf(ctx context.Context, service string, minIndex uint64) (*structs.IssuedCert, bool, error)
}

// LocalServices is the agent's own services: a copy of them by ID, and a
// channel closed at their next change.
type LocalServices interface {
	Services() map[string]*structs.NodeService
	ServicesChanged() <-chan struct{}
}

// Publisher receives the snapshots. Update is called with each new
// snapshot of a proxy, Remove once the proxy is deregistered. Calls for
// one proxy are never concurrent and come in order (no Update follows a
// Remove unless the proxy is registered again); calls for different
// proxies may be concurrent. Neither may block for long: a slow
// publisher delays that proxy's next snapshot.
type Publisher interface {
	Update(*Snapshot)
	Remove(proxyID string)
}

// Sources is everything a Manager builds snapshots from.
type Sources struct {
	// Store is the state store the catalog and config entries are read
	// from. It must hold what the proxies' snapshots are built from: a
	// server's (or a dev agent's) store, or on a client agent, which has
	// none, a mirror of the config entries and of the upstreams'
	// instances, copied from the servers.
	Store *state.Store
	// CA gives the roots and the leaves.
	CA CA
	// Services are the agent's local services; the Manager makes a
	// snapshot for each of kind connect-proxy.
	Services LocalServices
	// Datacenter is the agent's datacenter.
	Datacenter string
	// Address is the agent's advertise address: a proxy's public
	// listener address when its registration gives none.
	Address string
	// DefaultDeny is the intention decision when neither an intention
	// nor the mesh entry decides: true when ACLs are enabled with
	// default_policy deny.
	DefaultDeny bool
	// Logger; nil discards.
	Logger *slog.Logger
}

// Manager keeps a snapshot of every local connect-proxy service,
// rebuilt whenever anything it was built from changes.
type Manager struct {
	src Sources
	out Publisher
	log *slog.Logger
	// built, when set (by tests), is called after each build of a
	// proxy's snapshot, once it is published or found unchanged.
	built func(proxyID string)

	// version numbers the snapshots of every proxy: one counter, so
	// that a proxy's versions keep rising when it is removed and
	// registered again (a stream that outlived the removal never sees
	// an older version).
	version atomic.Uint64
}

// New returns a Manager that publishes to out; Run starts it.
func New(src Sources, out Publisher) *Manager {
	log := src.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{src: src, out: out, log: log}
}

// proxyRun is one proxy's watch: its registration and its goroutine.
type proxyRun struct {
	def    *structs.NodeService
	cancel context.CancelFunc
	done   chan struct{}
	// last is the proxy's last published snapshot; only the proxy's
	// goroutine touches it while it runs, and Run after it ended, so
	// that it outlives a restart.
	last *Snapshot
}

// Run watches the local services until ctx ends, and each connect-proxy
// among them, and returns when every goroutine it started has ended. It
// calls Remove for a proxy that is deregistered (or no longer a
// connect-proxy), but not for the proxies that remain when ctx ends.
func (m *Manager) Run(ctx context.Context) {
	proxies := make(map[string]*proxyRun)
	defer func() {
		for _, p := range proxies {
			p.cancel()
		}
		for _, p := range proxies {
			<-p.done
		}
	}()
	for {
		changed := m.src.Services.ServicesChanged()
		m.reconcile(ctx, proxies, m.src.Services.Services())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// reconcile starts, restarts and stops proxy watches to match svcs. A
// changed registration restarts its proxy's watch: the CA client caches
// the leaf, so a restart costs a store read.
func (m *Manager) reconcile(ctx context.Context, proxies map[string]*proxyRun, svcs map[string]*structs.NodeService) {
	for id, p := range proxies {
		svc := svcs[id]
		if isProxy(svc) && reflect.DeepEqual(svc, p.def) {
			continue
		}
		p.cancel()
		<-p.done
		if !isProxy(svc) {
			delete(proxies, id)
			m.out.Remove(id)
			continue
		}
		p.def = svc
		m.start(ctx, p)
	}
	for id, svc := range svcs {
		if _, ok := proxies[id]; ok || !isProxy(svc) {
			continue
		}
		p := &proxyRun{def: svc}
		proxies[id] = p
		m.start(ctx, p)
	}
}

func isProxy(s *structs.NodeService) bool {
	return s != nil && s.Kind == structs.ServiceKindConnectProxy && s.Proxy != nil
}

func (m *Manager) start(ctx context.Context, p *proxyRun) {
	pctx, cancel := context.WithCancel(ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		m.runProxy(pctx, p)
	}()
}

// latest holds the latest value read by a blocking watch, and a channel
// closed when it changes.
type latest[T any] struct {
	mu  sync.Mutex
	v   T             // guarded by mu
	set bool          // guarded by mu
	ch  chan struct{} // guarded by mu
}

func newLatest[T any]() *latest[T] { return &latest[T]{ch: make(chan struct{})} }

func (l *latest[T]) put(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v, l.set = v, true
	close(l.ch)
	l.ch = make(chan struct{})
}

// get returns the value (ok false before the first put) and the channel
// the next put closes.
func (l *latest[T]) get() (v T, ok bool, ch <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v, l.set, l.ch
}

// Retry bounds for failed CA reads.
const (
	retryMin = 500 * time.Millisecond
	retryMax = time.Minute
)

// runProxy publishes p's snapshots until ctx ends: it builds one, then
// waits for anything it read to change (the store's watches, the leaf,
// the roots) and builds again; an unchanged snapshot is not published.
func (m *Manager) runProxy(ctx context.Context, p *proxyRun) {
	leaf := newLatest[*structs.IssuedCert]()
	roots := newLatest[*structs.IndexedCARoots]()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dest := p.def.Proxy.DestinationServiceName
	wg.Add(2)
	go func() {
		defer wg.Done()
		m.watchCA(ctx, "leaf of "+dest, func(ctx context.Context, idx uint64) (uint64, error) {
			cert, _, err := m.src.CA.ConnectCALeaf(ctx, dest, idx)
			if err != nil || cert == nil {
				return idx, err
			}
			if cert.ModifyIndex != idx {
				leaf.put(cert)
			}
			return cert.ModifyIndex, nil
		})
	}()
	go func() {
		defer wg.Done()
		m.watchCA(ctx, "roots", func(ctx context.Context, idx uint64) (uint64, error) {
			r, got, err := m.src.CA.ConnectCARoots(ctx, idx)
			if err != nil || r == nil {
				return idx, err
			}
			if got != idx {
				roots.put(r)
			}
			return got, nil
		})
	}()

	backoff := retryMin
	for {
		ws := memdb.NewWatchSet()
		ws.Add(m.src.Store.AbandonCh())
		l, _, lch := leaf.get()
		r, _, rch := roots.get()
		ws.Add(lch)
		ws.Add(rch)
		snap, err := m.build(ws, p.def, l, r)
		if err != nil {
			m.log.Warn("proxycfg: building snapshot failed", "proxy", p.def.ID, "error", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, retryMax)
			continue
		}
		backoff = retryMin
		if snap != nil && !sameSnapshot(snap, p.last) {
			snap.Version = m.version.Add(1)
			p.last = snap
			m.out.Update(snap)
		}
		if m.built != nil {
			m.built(p.def.ID)
		}
		if ws.WatchCtx(ctx) != nil {
			return
		}
	}
}

// watchCA calls read in a loop with the index it last returned, until
// ctx ends; failures are retried with a growing delay.
func (m *Manager) watchCA(ctx context.Context, what string, read func(ctx context.Context, idx uint64) (uint64, error)) {
	var idx uint64
	backoff := retryMin
	for ctx.Err() == nil {
		got, err := read(ctx, idx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			idx, backoff = got, retryMin
			continue
		}
		m.log.Debug("proxycfg: reading the CA failed", "what", what, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, retryMax)
	}
}

// sameSnapshot reports whether a and b differ in nothing but Version.
func sameSnapshot(a, b *Snapshot) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Version, y.Version = 0, 0
	return reflect.DeepEqual(&x, &y)
}
