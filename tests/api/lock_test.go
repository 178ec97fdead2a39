package api_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// holders tracks how many contenders are inside a critical section at once.
type holders struct {
	cur, peak atomic.Int32
}

func (h *holders) enter() int32 {
	n := h.cur.Add(1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			return n
		}
	}
}

func (h *holders) leave() { h.cur.Add(-1) }

// work is what a holder does inside its critical section: a write and a
// read through the agent, so that holders overlap in time with contenders
// that are polling.
func work(c *api.Client, key string, i int) error {
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(fmt.Sprint(i))}, nil); err != nil {
		return err
	}
	_, _, err := c.KV().Get(key, nil)
	return err
}

func TestLockContention(t *testing.T) {
	t.Parallel()
	a := start(t)
	const contenders, rounds = 4, 2
	var h holders
	var acquired atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, contenders*rounds*4)
	for i := range contenders {
		c := newClient(t, a.HTTPAddr) // one client (and session) each
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				l, err := c.LockOpts(&api.LockOptions{Key: "service/leader", Value: []byte(fmt.Sprint(i))})
				if err != nil {
					errc <- err
					return
				}
				lost, err := l.Lock(nil)
				if err != nil {
					errc <- fmt.Errorf("contender %d: Lock: %w", i, err)
					return
				}
				if n := h.enter(); n > 1 {
					errc <- fmt.Errorf("contender %d round %d: %d holders at once", i, r, n)
				}
				acquired.Add(1)
				if err := work(c, "service/work", i); err != nil {
					errc <- err
				}
				select {
				case <-lost:
					errc <- fmt.Errorf("contender %d lost the lock while holding it", i)
				default:
				}
				h.leave()
				if err := l.Unlock(); err != nil {
					errc <- fmt.Errorf("contender %d: Unlock: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if n := acquired.Load(); n != contenders*rounds {
		t.Errorf("%d acquisitions, want %d", n, contenders*rounds)
	}
	if p := h.peak.Load(); p != 1 {
		t.Errorf("peak holders = %d, want 1", p)
	}
	// Every session was destroyed with its lock; the key is free.
	p, _, err := a.c.KV().Get("service/leader", nil)
	must(t, err)
	if p == nil || p.Session != "" {
		t.Errorf("lock key after all unlocked = %+v, want present and free", p)
	}
	// Unlock has the client destroy its session in the background.
	waitFor(t, 10*time.Second, func() error {
		list, _, err := a.c.Session().List(nil)
		if err != nil {
			return err
		}
		if len(list) != 0 {
			return errorf("%d sessions left behind", len(list))
		}
		return nil
	})
}

func TestLockLostOnSessionDestroy(t *testing.T) {
	t.Parallel()
	a := start(t)
	sid, _, err := a.c.Session().Create(&api.SessionEntry{LockDelay: 1}, nil)
	must(t, err)
	l, err := a.c.LockOpts(&api.LockOptions{Key: "lost", Session: sid})
	must(t, err)
	lost, err := l.Lock(nil)
	must(t, err)
	_, err = a.c.Session().Destroy(sid, nil)
	must(t, err)
	// The monitor sees the key released and tells the holder.
	select {
	case <-lost:
	case <-time.After(longWait):
		t.Fatalf("holder not told of the lost lock within %v", longWait)
	}
}

func TestSemaphoreContention(t *testing.T) {
	t.Parallel()
	a := start(t)
	const limit, contenders = 2, 5
	var h holders
	var acquired atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, contenders*4)
	for i := range contenders {
		c := newClient(t, a.HTTPAddr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.SemaphoreOpts(&api.SemaphoreOptions{Prefix: "service/pool", Limit: limit})
			if err != nil {
				errc <- err
				return
			}
			lost, err := s.Acquire(nil)
			if err != nil {
				errc <- fmt.Errorf("contender %d: Acquire: %w", i, err)
				return
			}
			if n := h.enter(); n > limit {
				errc <- fmt.Errorf("contender %d: %d holders at once, limit %d", i, n, limit)
			}
			acquired.Add(1)
			if err := work(c, fmt.Sprintf("service/work/%d", i), i); err != nil {
				errc <- err
			}
			select {
			case <-lost:
				errc <- fmt.Errorf("contender %d lost its slot while holding it", i)
			default:
			}
			h.leave()
			if err := s.Release(); err != nil {
				errc <- fmt.Errorf("contender %d: Release: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if n := acquired.Load(); n != contenders {
		t.Errorf("%d acquisitions, want %d", n, contenders)
	}
	if p := h.peak.Load(); p > limit || p < 1 {
		t.Errorf("peak holders = %d, want 1..%d", p, limit)
	}
	// The contender keys went with their sessions; the .lock key stays
	// with no holders.
	keys, _, err := a.c.KV().Keys("service/pool/", "", nil)
	must(t, err)
	if len(keys) != 1 || keys[0] != "service/pool/.lock" {
		t.Errorf("keys under the prefix = %v, want only the .lock", keys)
	}
}
