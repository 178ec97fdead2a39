package balance

import (
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse runs requests (breaker, pick, begin/end, results)
// against Updates that change the hosts and policy and against Ticks, and
// checks that nothing leaks: run under -race.
func TestConcurrentUse(t *testing.T) {
	o := DefaultOutlier()
	o.Consecutive5xx = 3
	o.MaxEjectionPercent = 50
	o.BaseEjectionTime = time.Millisecond
	cfg := DefaultConfig()
	cfg.Outlier = o
	cfg.Breaker.RetryBudget = &RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
	clk := newClock()
	c := newCluster(t, cfg, endpoints(6), Options{Now: clk.Now})
	seen := map[*Host]bool{}
	var seenMu sync.Mutex

	var wg sync.WaitGroup
	const workers, requests = 8, 3000
	for w := range workers {
		wg.Go(func() {
			for i := range requests {
				if !c.TryAcquire(Requests) {
					continue
				}
				key := uint64(w*requests + i)
				h := c.PickHash(key*0x9e3779b97f4a7c15, nil)
				if h == nil {
					c.Release(Requests)
					continue
				}
				h.Begin()
				outcome := Success
				if i%4 == 0 {
					outcome = Status(503)
				}
				h.End()
				c.Result(h, outcome)
				if outcome != Success && c.TryAcquire(Retries) {
					tried := h
					if r := c.Pick(func(x *Host) bool { return x == tried }); r != nil {
						r.Begin()
						r.End()
						c.Result(r, Success)
					}
					c.Release(Retries)
				}
				c.Release(Requests)
				if i%500 == 0 {
					seenMu.Lock()
					seen[h] = true
					seenMu.Unlock()
				}
			}
		})
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		policies := []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			next := cfg
			next.Policy = policies[i%len(policies)]
			eps := endpoints(6, uint32(1+i%3), 2, 3)
			if i%2 == 1 {
				eps = eps[1:]
			}
			if err := c.Update(next, eps); err != nil {
				t.Error(err)
				return
			}
			for _, h := range c.Hosts() {
				seenMu.Lock()
				seen[h] = true
				seenMu.Unlock()
			}
		}
	})
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				c.Tick(clk.Advance(time.Millisecond))
				_ = c.Stats()
			}
		}
	})
	wg.Wait()
	close(stop)
	bg.Wait()

	for k := range Kind(numKinds) {
		if n := c.InUse(k); n != 0 {
			t.Errorf("%s: %d in use at the end", k, n)
		}
	}
	for h := range seen {
		if n := h.Active(); n != 0 {
			t.Errorf("%s: %d active at the end", h, n)
		}
	}
	ejected := 0
	for _, h := range c.Hosts() {
		if h.Ejected() {
			ejected++
		}
	}
	if n := c.Stats().EjectionsActive; n != int64(ejected) {
		t.Errorf("active ejections %d, hosts ejected %d", n, ejected)
	}
}
