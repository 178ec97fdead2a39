package balance

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestBreakerLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Breaker = Thresholds{MaxConnections: 1, MaxPendingRequests: 2, MaxRequests: 3, MaxRetries: 4}
	c := newCluster(t, cfg, endpoints(1), Options{})
	for k, limit := range map[Kind]int{Connections: 1, PendingRequests: 2, Requests: 3, Retries: 4} {
		t.Run(k.String(), func(t *testing.T) {
			for i := range limit {
				if !c.TryAcquire(k) {
					t.Fatalf("acquisition %d of %d refused", i+1, limit)
				}
			}
			if c.TryAcquire(k) {
				t.Fatalf("acquisition %d allowed past the limit", limit+1)
			}
			if got := c.Stats().Overflow[k]; got != 1 {
				t.Errorf("overflow %d, want 1", got)
			}
			c.Release(k)
			if !c.TryAcquire(k) {
				t.Fatal("refused after a release")
			}
			for range limit {
				c.Release(k)
			}
			if n := c.InUse(k); n != 0 {
				t.Errorf("%d in use after releasing all", n)
			}
		})
	}
}

func TestBreakerDefaults(t *testing.T) {
	c := newCluster(t, DefaultConfig(), endpoints(1), Options{})
	n := 0
	for c.TryAcquire(Retries) {
		n++
	}
	if n != DefaultMaxRetries {
		t.Errorf("default retries %d, want %d", n, DefaultMaxRetries)
	}
	for range n {
		c.Release(Retries)
	}
	// A zero threshold refuses everything, as in Envoy.
	var zero Config
	if err := c.Update(zero, endpoints(1)); err != nil {
		t.Fatal(err)
	}
	if c.TryAcquire(Requests) {
		t.Error("max_requests 0 allowed a request")
	}
}

func TestRetryBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Breaker.MaxRequests = 1000
	cfg.Breaker.MaxRetries = 1 // the budget wins
	cfg.Breaker.RetryBudget = &RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
	c := newCluster(t, cfg, endpoints(1), Options{})
	allowed := func() int {
		n := 0
		for c.TryAcquire(Retries) {
			n++
		}
		for range n {
			c.Release(Retries)
		}
		return n
	}
	for _, tc := range []struct {
		requests, pending, want int
	}{
		{0, 0, 3},    // min_retry_concurrency
		{10, 0, 3},   // 20% of 10 = 2 < 3
		{100, 0, 20}, // 20% of 100
		{50, 50, 20}, // pending requests count too
		{99, 0, 19},  // 19.8 truncated
		{0, 500, 100},
	} {
		for range tc.requests {
			c.TryAcquire(Requests)
		}
		for range tc.pending {
			c.TryAcquire(PendingRequests)
		}
		if got := allowed(); got != tc.want {
			t.Errorf("%d active, %d pending: %d retries allowed, want %d", tc.requests, tc.pending, got, tc.want)
		}
		for range tc.requests {
			c.Release(Requests)
		}
		for range tc.pending {
			c.Release(PendingRequests)
		}
	}
	// Without the budget, max_retries applies.
	cfg.Breaker.RetryBudget = nil
	if err := c.Update(cfg, endpoints(1)); err != nil {
		t.Fatal(err)
	}
	if got := allowed(); got != 1 {
		t.Errorf("max_retries 1: %d allowed", got)
	}
}

func TestBreakerSurvivesUpdate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Breaker.MaxRequests = 2
	c := newCluster(t, cfg, endpoints(2), Options{})
	c.TryAcquire(Requests)
	c.TryAcquire(Requests)
	cfg.Breaker.MaxRequests = 3
	if err := c.Update(cfg, endpoints(3)); err != nil {
		t.Fatal(err)
	}
	if !c.TryAcquire(Requests) || c.TryAcquire(Requests) {
		t.Fatal("raised threshold: want exactly one more")
	}
	// A lowered threshold refuses until enough are released.
	cfg.Breaker.MaxRequests = 1
	if err := c.Update(cfg, endpoints(3)); err != nil {
		t.Fatal(err)
	}
	c.Release(Requests)
	if c.TryAcquire(Requests) {
		t.Fatal("2 in use of 1 allowed: acquired")
	}
	c.Release(Requests)
	c.Release(Requests)
	if n := c.InUse(Requests); n != 0 {
		t.Fatalf("%d in use after releasing all", n)
	}
}

func TestBreakerConcurrentNeverExceeds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Breaker.MaxRequests = 5
	c := newCluster(t, cfg, endpoints(1), Options{})
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				if !c.TryAcquire(Requests) {
					continue
				}
				n := held.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				held.Add(-1)
				c.Release(Requests)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 5 {
		t.Errorf("%d held at once, limit 5", p)
	}
	if n := c.InUse(Requests); n != 0 {
		t.Errorf("%d in use at the end", n)
	}
}
