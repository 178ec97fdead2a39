package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"time"
)

// The pool of the HTTP/1.1 client (h1client.go): per endpoint, the idle
// connections and the requests waiting for one, the dials made for
// them, the hand-over of a returned connection to a waiting request and
// the idle timeout.

// h1Host is one endpoint's idle connections and the requests waiting to
// get one; guarded by the transport's mu.
type h1Host struct {
	t    *h1Transport
	addr string
	// idle is a stack: the top (end) is the last returned, the bottom
	// the longest idle, which the timer closes first.
	idle    []*h1Conn
	waiters []*h1Waiter
	timer   *time.Timer // closes idle connections past idleFor
	armed   bool        // timer is set
}

// h1Waiter is a request that found no idle connection and dials one. It
// is served once, by whichever comes first, under the transport's mu: a
// connection handed back by another request (unless fresh), or its own
// dial's result; served is then closed, which also ends the dial's wait
// for a connection slot if it waits (see connTicket in balancer.go).
type h1Waiter struct {
	fresh   bool // only its own dial serves it (a retry after a stale connection)
	waiting bool // guarded by mu: in its host's waiters, not yet served
	conn    *h1Conn
	err     error // the dial's, if it served w without a connection
	served  chan struct{}
}

// CloseIdleConnections closes the idle connections; those in use are
// closed when their request is done.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	t.gen++
	var idle []*h1Conn
	for addr, h := range t.hosts {
		idle = append(idle, h.idle...)
		h.idle = nil
		if h.timer != nil {
			h.timer.Stop()
			h.armed = false
		}
		if len(h.waiters) == 0 {
			delete(t.hosts, addr)
		}
	}
	t.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// get returns a connection to addr: the last one returned, unless fresh;
// else a new one, or one handed back (unless fresh) while it is dialed,
// whichever comes first.
func (t *h1Transport) get(ctx context.Context, addr string, fresh bool) (*h1Conn, error) {
	t.mu.Lock()
	h := t.hostLocked(addr)
	for !fresh && len(h.idle) > 0 {
		pc := h.idle[len(h.idle)-1]
		h.idle[len(h.idle)-1] = nil
		h.idle = h.idle[:len(h.idle)-1]
		t.mu.Unlock()
		if !pc.peerClosed() {
			return pc, nil
		}
		pc.abort()
		t.mu.Lock()
		h = t.hostLocked(addr) // the lock was let go: h may be gone
	}
	if !t.p.handlers.enter() { // counts the dial's goroutine
		t.mu.Unlock()
		return nil, &dialError{err: errClosed}
	}
	w := &h1Waiter{fresh: fresh, waiting: true, served: make(chan struct{})}
	h.waiters = append(h.waiters, w)
	gen := t.gen
	t.mu.Unlock()

	// The dial outlives the request if a connection is handed to it
	// first (its connection then goes to the pool), but not the
	// request's end before that. The ticket lets a dial that waits for
	// a connection slot end when w is served, or the request ends.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	dctx = context.WithValue(dctx, ticketKey{}, &connTicket{done: ctx.Done(), served: w.served})
	go t.dialFor(dctx, cancel, addr, gen, w)

	select {
	case <-w.served:
	case <-ctx.Done():
		t.mu.Lock()
		gone := t.unwaitLocked(addr, w)
		t.mu.Unlock()
		if gone {
			cancel() // nobody wants the dial's connection now
			return nil, ctxError(ctx)
		}
		<-w.served // served meanwhile
	}
	if ctx.Err() != nil {
		// The request ended while waiting or dialing: that is its
		// failure, not the host's; a connection it got goes to the next
		// one.
		if w.conn != nil {
			t.put(w.conn)
		}
		return nil, ctxError(ctx)
	}
	if w.conn == nil {
		return nil, w.err
	}
	return w.conn, nil
}

// dialFor dials addr for w, on a goroutine counted with the proxy's
// handlers: its connection (or error) serves w if w still waits;
// otherwise the connection goes to the pool.
func (t *h1Transport) dialFor(ctx context.Context, cancel context.CancelFunc, addr string, gen uint64, w *h1Waiter) {
	defer t.p.handlers.leave()
	defer cancel()
	c, err := t.dial(ctx, addr)
	var pc *h1Conn
	if err == nil {
		pc, err = t.newConn(c, addr, gen)
	}
	t.mu.Lock()
	if t.unwaitLocked(addr, w) {
		w.conn, w.err = pc, err
		close(w.served)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	if pc != nil {
		t.put(pc)
	}
}

// unwaitLocked takes w out of addr's waiters: false if it was served
// already.
func (t *h1Transport) unwaitLocked(addr string, w *h1Waiter) bool {
	if !w.waiting {
		return false
	}
	w.waiting = false
	h := t.hosts[addr] // kept while it has waiters
	i := slices.Index(h.waiters, w)
	h.waiters = slices.Delete(h.waiters, i, i+1)
	return true
}

// hostLocked returns addr's host, made if needed.
func (t *h1Transport) hostLocked(addr string) *h1Host {
	h := t.hosts[addr]
	if h == nil {
		h = &h1Host{t: t, addr: addr}
		t.hosts[addr] = h
	}
	return h
}

// newConn wraps a dialed connection.
func (t *h1Transport) newConn(c net.Conn, addr string, gen uint64) (*h1Conn, error) {
	pc := &h1Conn{t: t, addr: addr, conn: c, raw: c, gen: gen, limit: -1}
	if tc, ok := c.(*tls.Conn); ok {
		pc.raw = tc.NetConn()
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			pc.abort()
			return nil, &dialError{err: fmt.Errorf("%s: ALPN chose %q, not http/1.1", addr, p)}
		}
	}
	pc.abortFn = pc.abort
	pc.initPeek()
	return pc, nil
}

// put returns pc to its host once its exchange is over: to a request
// waiting for one (not a fresh one), or to the idle stack. A connection
// of an older generation (opened before CloseIdleConnections) is closed.
func (t *h1Transport) put(pc *h1Conn) {
	if pc.dead.Load() {
		return
	}
	t.mu.Lock()
	if pc.gen != t.gen {
		t.mu.Unlock()
		pc.close()
		return
	}
	pc.reused = true
	h := t.hostLocked(pc.addr)
	if w := h.handOffLocked(); w != nil {
		// Handed over, the connection is not peeked at by get: do it
		// here, as the next request's is due.
		t.mu.Unlock()
		if pc.peerClosed() {
			pc.abort()
			return
		}
		t.mu.Lock()
		if pc.gen != t.gen {
			t.mu.Unlock()
			pc.close()
			return
		}
		h = t.hostLocked(pc.addr)
		if w := h.handOffLocked(); w != nil {
			t.unwaitLocked(pc.addr, w)
			w.conn = pc
			close(w.served)
			t.mu.Unlock()
			return
		}
	}
	var evict *h1Conn
	if len(h.idle) >= maxIdlePerHost {
		evict = h.idle[0]
		h.idle = slices.Delete(h.idle, 0, 1)
	}
	h.idle = append(h.idle, pc)
	if t.idleFor > 0 {
		pc.idleAt = time.Now()
		if !h.armed {
			h.armed = true
			if h.timer == nil {
				h.timer = time.AfterFunc(t.idleFor, h.expire)
			} else {
				h.timer.Reset(t.idleFor)
			}
		}
	}
	t.mu.Unlock()
	if evict != nil {
		evict.close()
	}
}

// handOffLocked returns the first waiter a returned connection may be
// handed to, or nil.
func (h *h1Host) handOffLocked() *h1Waiter {
	for _, w := range h.waiters {
		if !w.fresh {
			return w
		}
	}
	return nil
}

// expire closes the connections idle for idleFor, from the bottom of the
// stack, and sets the timer for the next one; a host with nothing left
// is forgotten.
func (h *h1Host) expire() {
	t := h.t
	t.mu.Lock()
	if !h.armed || t.hosts[h.addr] != h {
		t.mu.Unlock()
		return
	}
	now := time.Now()
	i := 0
	for i < len(h.idle) && now.Sub(h.idle[i].idleAt) >= t.idleFor {
		i++
	}
	old := slices.Clone(h.idle[:i])
	h.idle = slices.Delete(h.idle, 0, i)
	if len(h.idle) > 0 {
		h.timer.Reset(t.idleFor - now.Sub(h.idle[0].idleAt))
	} else {
		h.armed = false
		if len(h.waiters) == 0 {
			delete(t.hosts, h.addr)
		}
	}
	t.mu.Unlock()
	for _, pc := range old {
		pc.close()
	}
}
