package balance

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// seeded is a deterministic, concurrency-safe Options.Rand.
func seeded(seed uint64) func() uint64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Uint64()
	}
}

// fakeClock is an Options.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// endpoints are n hosts 127.0.0.1:10000.. with the given weights (1 if
// weights is short).
func endpoints(n int, weights ...uint32) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i].Addr = fmt.Sprintf("127.0.0.1:%d", 10000+i)
		eps[i].Weight = 1
		if i < len(weights) {
			eps[i].Weight = weights[i]
		}
	}
	return eps
}

func newCluster(t testing.TB, cfg Config, eps []Endpoint, opts Options) *Cluster {
	t.Helper()
	if opts.Rand == nil {
		opts.Rand = seeded(1)
	}
	c, err := New("test", cfg, eps, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func withPolicy(p Policy) Config {
	cfg := DefaultConfig()
	cfg.Policy = p
	return cfg
}

// host is c's host with address addr.
func host(t testing.TB, c *Cluster, addr string) *Host {
	t.Helper()
	for _, h := range c.Hosts() {
		if h.Addr() == addr {
			return h
		}
	}
	t.Fatalf("no host %s", addr)
	return nil
}

// ejectOne ejects h through Result, with a config whose first 5xx ejects.
func ejectOne(t testing.TB, c *Cluster, h *Host) {
	t.Helper()
	for range 100 {
		if h.Ejected() {
			return
		}
		c.Result(h, Status(500))
	}
	t.Fatalf("%s not ejected", h)
}

// ejecting is cfg with outlier detection that ejects at the first 5xx,
// any number of hosts.
func ejecting(cfg Config) Config {
	o := DefaultOutlier()
	o.Consecutive5xx = 1
	o.MaxEjectionPercent = 100
	cfg.Outlier = o
	return cfg
}

// counts picks n times and counts hosts by address.
func counts(n int, pick func() *Host) map[string]int {
	m := map[string]int{}
	for range n {
		h := pick()
		if h == nil {
			m["<nil>"]++
			continue
		}
		m[h.Addr()]++
	}
	return m
}

func addr(i int) string { return fmt.Sprintf("127.0.0.1:%d", 10000+i) }
