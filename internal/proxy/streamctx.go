package proxy

import (
	"context"
	"slices"
	"sync"
	"time"
)

// A streamCtx is the context of one request through the proxy: it ends
// when the request is over (its handler returned), its route or idle
// timeout fires, or the downstream goes away.
//
// It does what context.WithCancelCause and context.AfterFunc did for
// each request, without their cost: a cancelCtx, its entry in the
// connection's context, an AfterFunc context and its stop function, and
// the Done channel they need, each allocated, and each a lock taken,
// per request. Here the context is one allocation, the function that
// aborts the upstream connection is kept in a slot of its own, and the
// Done channel is made only for those that wait on it (a retry's
// backoff, HTTP/2 upstreams, a dial).
//
// Its parent gives it values and its deadline only: whoever makes a
// streamCtx ends it when the parent ends (the HTTP/1.1 loop when the
// connection goes away, watchParent for another parent).
type streamCtx struct {
	parent context.Context

	mu     sync.Mutex
	done   chan struct{} // guarded by mu: made by Done
	cause  error         // guarded by mu: set by the first cancel, which ends c
	hooks  []endHookFn   // guarded by mu: run by cancel
	buf    [2]endHookFn  // hooks' first backing array
	nextID uint64        // guarded by mu
}

type endHookFn struct {
	id uint64
	f  func()
}

func newStreamCtx(parent context.Context) *streamCtx {
	c := &streamCtx{parent: parent}
	c.hooks = c.buf[:0]
	return c
}

// closedDone is the Done channel of a streamCtx that ended before
// anyone asked for it.
var closedDone = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func (c *streamCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *streamCtx) Value(key any) any { return c.parent.Value(key) }

func (c *streamCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.cause != nil {
			return closedDone
		}
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *streamCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return context.Canceled
	}
	return nil
}

// Cause is what ended c, as context.Cause tells for a context of
// context.WithCancelCause: nil while c runs.
func (c *streamCtx) Cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// cancel ends c, unless it has ended: Err says context.Canceled from
// now on, Cause says cause (context.Canceled if nil), and the functions
// registered with onEnd run, on this goroutine.
func (c *streamCtx) cancel(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	c.cause = cause
	if c.done != nil {
		close(c.done)
	}
	hooks := c.hooks
	c.hooks = nil
	c.mu.Unlock()
	for _, h := range hooks {
		h.f()
	}
}

// AfterFunc makes c a parent that context.WithCancel and the like
// follow without a goroutine of their own (the context package looks
// for this method).
func (c *streamCtx) AfterFunc(f func()) func() bool {
	return onEnd(c, f).stop
}

// register adds f to the functions cancel runs; 0 if c has ended.
func (c *streamCtx) register(f func()) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return 0
	}
	c.nextID++
	c.hooks = append(c.hooks, endHookFn{id: c.nextID, f: f})
	return c.nextID
}

// unregister removes the function registered as id; false if cancel
// has taken it to run.
func (c *streamCtx) unregister(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, h := range c.hooks {
		if h.id == id {
			c.hooks = slices.Delete(c.hooks, i, i+1)
			return true
		}
	}
	return false
}

// An endHook is a function that runs when a context ends, as
// context.AfterFunc arranges.
type endHook struct {
	c      *streamCtx // registered with c as id (0: it ran already)
	id     uint64
	stopFn func() bool // else context.AfterFunc's
}

// onEnd arranges for f to run when ctx ends, or at once (on a goroutine
// of its own) if it has, as context.AfterFunc does; a streamCtx runs it
// on the goroutine that ends it, and allocates nothing for it.
func onEnd(ctx context.Context, f func()) endHook {
	c, ok := ctx.(*streamCtx)
	if !ok {
		return endHook{stopFn: context.AfterFunc(ctx, f)}
	}
	id := c.register(f)
	if id == 0 {
		go f()
	}
	return endHook{c: c, id: id}
}

// stop keeps the function from running; false if it has run or started
// already.
func (h endHook) stop() bool {
	if h.c == nil {
		return h.stopFn()
	}
	return h.id != 0 && h.c.unregister(h.id)
}

// watchParent ends c when its parent ends, with the parent's cause;
// stop ends the watch.
func (c *streamCtx) watchParent() (stop func() bool) {
	p := c.parent
	return context.AfterFunc(p, func() { c.cancel(context.Cause(p)) })
}

// causeOf is context.Cause, which cannot see a streamCtx's cause.
func causeOf(ctx context.Context) error {
	if c, ok := ctx.(*streamCtx); ok {
		return c.Cause()
	}
	return context.Cause(ctx)
}
