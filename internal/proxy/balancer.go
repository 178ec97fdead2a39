package proxy

import (
	"context"
	"errors"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// A cluster's load balancing and resiliency live in a balancer, kept by
// cluster name across Configs: a balance.Cluster (the lb_policy, the
// circuit breaker's counts, outlier detection) that each Apply updates,
// the proxy's hosts of its endpoints, and the outlier detector's
// ticker. So round robin goes on where it was, hosts in flight keep
// their counts and ejected hosts stay out when a new Config arrives. A
// cluster that disappears from the Config loses its balancer; one that
// comes back starts afresh.
//
// Pending requests (max_pending_requests). net/http's Transport keeps
// the pooled connections, so a request's wait for one is not visible
// to the proxy; what is visible is the dial the Transport starts for a
// request that found no idle connection. When max_connections is
// reached, that dial waits, as a pending request, until the cluster has
// a connection slot again (then dials), or until its request got a
// connection some other way (a pooled one freed up, or an HTTP/2 one
// opened by another dial), ended, or the proxy closed. A dial that
// would make the pending requests exceed max_pending_requests fails at
// once: the request gets 503 with x-envoy-overloaded (overflow kind
// "pending"). The dial learns that its request got a connection from a
// ticket its attempt carries in its context (connContext: an
// httptrace.GotConn hook that http.Transport calls; the HTTP/1.1
// client, h1client.go, serves the ticket itself when it hands a
// returned connection to a waiting request), attached only when the
// cluster is near its connection limit, so that requests pay nothing
// otherwise; a dial that
// reaches the limit without one (a burst that crossed it between the
// two checks) waits at most the cluster's connect_timeout. A tcp_proxy
// connection never waits: at the limit it is closed.

// balancer is one cluster's picker and guard.
type balancer struct {
	name string
	bc   *balance.Cluster
	done <-chan struct{} // the proxy's, closed by Close

	// hosts maps bc's hosts to the proxy's, replaced whole by update;
	// hostsMu makes update's bc.Update and hosts.Store one step for a
	// pick that finds a host missing from hosts.
	hosts   atomic.Pointer[map[*balance.Host]*host]
	hostsMu sync.Mutex

	// maxConns is the cluster's max_connections, for connContext.
	maxConns atomic.Int64

	// waiters counts the dials waiting for a connection slot; wake is
	// closed, and replaced, when a slot may have freed up.
	waiters atomic.Int64
	wakeMu  sync.Mutex
	wake    chan struct{} // guarded by wakeMu; nil: none made yet

	// The outlier detector's ticker, every interval (0: none); stop
	// ends it and stopped says it ended. Guarded by the proxy's applyMu.
	interval      time.Duration
	stop, stopped chan struct{}
}

// commitBalancers gives st's clusters their balancers: the one of the
// same name, updated, or a new one; the balancers of clusters st no
// longer has are stopped and their metric series deleted. Apply calls
// it with applyMu held once the Config can no longer be refused, and
// compile checked every balance setting and endpoint list, so nothing
// fails here.
func (p *Proxy) commitBalancers(st *state) {
	old := *p.balancers.Load()
	next := make(map[string]*balancer, len(st.clusters))
	for name, cl := range st.clusters {
		b := old[name]
		if b == nil {
			b = &balancer{name: name, done: p.done}
		}
		if err := b.update(p, cl); err != nil {
			// compile validated what Update checks: this is a bug.
			p.log.Error("proxy: cluster keeps its previous balancing", "cluster", name, "err", err)
		}
		b.retick(p)
		next[name] = b
	}
	for name, b := range old {
		if _, ok := next[name]; !ok {
			b.stopTicker()
			p.metrics.forgetCluster(name)
		}
	}
	p.balancers.Store(&next)
}

// update applies cl's settings and endpoints and gives cl its picker,
// guard and hosts (the balancer's, kept by address).
func (b *balancer) update(p *Proxy, cl *cluster) error {
	b.hostsMu.Lock()
	defer b.hostsMu.Unlock()
	var err error
	if b.bc == nil {
		name := b.name
		b.bc, err = balance.New(name, cl.balance, cl.endpoints, balance.Options{
			OnEject: func(addr string, d time.Duration) {
				p.log.Info("proxy: outlier detection ejected a host", "cluster", name, "host", addr, "for", d)
			},
			OnUneject: func(addr string) {
				p.log.Info("proxy: outlier detection returned a host", "cluster", name, "host", addr)
			},
		})
		if err != nil {
			b.bc, _ = balance.New(name, balance.DefaultConfig(), cl.endpoints, balance.Options{})
		}
	} else {
		err = b.bc.Update(cl.balance, cl.endpoints)
	}
	prev := map[*balance.Host]*host{}
	if m := b.hosts.Load(); m != nil {
		prev = *m
	}
	bhs := b.bc.Hosts()
	next := make(map[*balance.Host]*host, len(bhs))
	cl.hosts = make([]*host, 0, len(bhs))
	cl.hostByAddr = make(map[string]*host, len(bhs))
	for _, bh := range bhs {
		h := prev[bh]
		if h == nil {
			h = &host{addr: bh.Addr(), bh: bh}
		}
		next[bh] = h
		cl.hosts = append(cl.hosts, h)
		cl.hostByAddr[h.addr] = h
	}
	b.hosts.Store(&next)
	b.maxConns.Store(int64(cl.limits.maxConnections))
	cl.picker, cl.guard, cl.bal = b, b, b
	b.broadcast() // max_connections may have risen
	return err
}

// retick runs the outlier detector's ticker at the cluster's interval,
// none without outlier detection.
func (b *balancer) retick(p *Proxy) {
	d := b.bc.Interval()
	if d == b.interval {
		return
	}
	b.stopTicker()
	if d <= 0 {
		return
	}
	b.interval = d
	stop, stopped := make(chan struct{}), make(chan struct{})
	b.stop, b.stopped = stop, stopped
	p.wg.Go(func() {
		defer close(stopped)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				b.bc.Tick(now)
			case <-stop:
				return
			case <-b.done:
				return
			}
		}
	})
}

// stopTicker ends the ticker, if one runs, and waits for it.
func (b *balancer) stopTicker() {
	if b.stop != nil {
		close(b.stop)
		<-b.stopped
	}
	b.stop, b.stopped, b.interval = nil, nil, 0
}

// pick is the picker: the balance policy's choice, as the proxy's host.
func (b *balancer) pick(req pickRequest) *host {
	var exclude func(*balance.Host) bool
	if req.exclude != nil {
		exclude = func(bh *balance.Host) bool {
			h := (*b.hosts.Load())[bh]
			return h != nil && req.exclude(h)
		}
	}
	var bh *balance.Host
	if req.hasHash {
		bh = b.bc.PickHash(req.hash, exclude)
	} else {
		bh = b.bc.Pick(exclude)
	}
	if bh == nil {
		return nil
	}
	if h := (*b.hosts.Load())[bh]; h != nil {
		return h
	}
	return b.hostSlow(bh)
}

// hostSlow is the proxy's host of bh when an update is under way: once
// it is done, bh is in hosts, unless the update removed it (picked from
// the table the update replaced); such a host serves this request only.
func (b *balancer) hostSlow(bh *balance.Host) *host {
	b.hostsMu.Lock()
	defer b.hostsMu.Unlock()
	if h := (*b.hosts.Load())[bh]; h != nil {
		return h
	}
	return &host{addr: bh.Addr(), bh: bh}
}

// The guard: balance's circuit breaker and outlier detection.

func (b *balancer) admitRequest() bool { return b.bc.TryAcquire(balance.Requests) }
func (b *balancer) requestDone()       { b.bc.Release(balance.Requests) }
func (b *balancer) admitRetry() bool   { return b.bc.TryAcquire(balance.Retries) }
func (b *balancer) retryDone()         { b.bc.Release(balance.Retries) }

func (b *balancer) admitConnection(*host) bool { return b.bc.TryAcquire(balance.Connections) }

func (b *balancer) connectionClosed(*host) {
	b.bc.Release(balance.Connections)
	b.broadcast()
}

func (b *balancer) attemptStarted(h *host) {
	if h.bh != nil {
		h.bh.Begin()
	}
}

func (b *balancer) attemptEnded(h *host, o outcome) {
	if h.bh == nil {
		return
	}
	h.bh.End()
	if r, ok := o.result(); ok {
		b.bc.Result(h.bh, r)
	}
}

// connWaiter is a guard whose refused connections may wait (see the
// comment at the top of this file).
type connWaiter interface {
	// awaitConnection waits, as a pending request, for a connection slot
	// for the dial whose context is ctx, after admitConnection refused
	// one; nil means the slot is taken (one connectionClosed is owed).
	// errPendingOverflow: max_pending_requests was reached, nothing
	// waited. Any other error: the wait ended without a slot.
	awaitConnection(ctx context.Context, timeout time.Duration) error
}

var (
	errPendingOverflow = errors.New("pending requests limit reached")
	errPendingTimeout  = errors.New("no connection freed up within the connect timeout")
	errNoLongerWanted  = errors.New("the request no longer waits for this connection")
)

func (b *balancer) awaitConnection(ctx context.Context, timeout time.Duration) error {
	var served, ended <-chan struct{}
	var expired <-chan time.Time
	if t, _ := ctx.Value(ticketKey{}).(*connTicket); t != nil {
		served, ended = t.served, t.done
	} else {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	if !b.bc.TryAcquire(balance.PendingRequests) {
		return errPendingOverflow
	}
	defer b.bc.Release(balance.PendingRequests)
	b.waiters.Add(1)
	defer b.waiters.Add(-1)
	for {
		// Take the channel before trying, so that a slot released after
		// the try closes it.
		wake := b.wakeChan()
		if b.bc.TryAcquire(balance.Connections) {
			return nil
		}
		select {
		case <-wake:
		case <-served:
			return errNoLongerWanted
		case <-ended:
			return errNoLongerWanted
		case <-expired:
			return errPendingTimeout
		case <-ctx.Done():
			return ctx.Err()
		case <-b.done:
			return errClosed
		}
	}
}

func (b *balancer) wakeChan() <-chan struct{} {
	b.wakeMu.Lock()
	defer b.wakeMu.Unlock()
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return b.wake
}

// broadcast wakes the dials waiting for a connection slot, if any.
func (b *balancer) broadcast() {
	if b.waiters.Load() == 0 {
		return
	}
	b.wakeMu.Lock()
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.wakeMu.Unlock()
}

// ticketKey is the context key of an attempt's connTicket.
type ticketKey struct{}

// connTicket tells a dial waiting for a connection slot on behalf of an
// attempt that the attempt no longer needs it: it got a connection
// (served is closed) or ended (done is closed).
type connTicket struct {
	done   <-chan struct{}
	served chan struct{}
	once   sync.Once
}

func (t *connTicket) gotConn(httptrace.GotConnInfo) { t.once.Do(func() { close(t.served) }) }

// connContext is the context of an attempt on cl: ctx, with a
// connTicket when the cluster is near max_connections (its connections
// and requests together reach it), so that a dial made for the attempt
// can wait as a pending request for exactly as long as the attempt
// waits for a connection.
func (cl *cluster) connContext(ctx context.Context) context.Context {
	b := cl.bal
	if b == nil || b.bc.InUse(balance.Connections)+b.bc.InUse(balance.Requests) < b.maxConns.Load() {
		return ctx
	}
	t := &connTicket{done: ctx.Done(), served: make(chan struct{})}
	ctx = context.WithValue(ctx, ticketKey{}, t)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: t.gotConn})
}
