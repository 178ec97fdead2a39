package balance

import (
	"math"
	"strings"
	"testing"
)

// sequence is n picks as a string of host letters (a = first endpoint).
func sequence(c *Cluster, n int) string {
	var b strings.Builder
	for range n {
		h := c.Pick(nil)
		if h == nil {
			b.WriteByte('-')
			continue
		}
		for i := range 26 {
			if h.Addr() == addr(i) {
				b.WriteByte(byte('a' + i))
			}
		}
	}
	return b.String()
}

func TestRoundRobinSequence(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		want    string
	}{
		{"equal", []uint32{1, 1, 1}, "abcabcabc"},
		{"equal, not 1", []uint32{4, 4, 4}, "abcabcabc"},
		{"3:1", []uint32{3, 1}, "aabaaaba"},
		{"5:1:1", []uint32{5, 1, 1}, "aaabcaaaaabcaa"},
		{"gcd reduced 2:4", []uint32{2, 4}, "babbab"},
		{"unset weight is 1", []uint32{0, 2}, "babbab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, withPolicy(RoundRobin), endpoints(len(tc.weights), tc.weights...), Options{})
			if got := sequence(c, len(tc.want)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRoundRobinExactShares(t *testing.T) {
	weights := []uint32{3, 2, 7, 1}
	c := newCluster(t, withPolicy(RoundRobin), endpoints(4, weights...), Options{})
	got := counts(13*100, func() *Host { return c.Pick(nil) })
	for i, w := range weights {
		if got[addr(i)] != int(w)*100 {
			t.Errorf("%s: %d picks, want %d", addr(i), got[addr(i)], w*100)
		}
	}
}

func TestRoundRobinLargeWeightsScaled(t *testing.T) {
	// A cycle of 100000+1 slots is scaled to fit maxSchedule; the shares
	// stay within a slot of the weights.
	c := newCluster(t, withPolicy(RoundRobin), endpoints(2, 100000, 1), Options{})
	sched := c.cur.Load().sched
	if len(sched) > maxSchedule+2 {
		t.Fatalf("schedule of %d slots", len(sched))
	}
	got := counts(len(sched), func() *Host { return c.Pick(nil) })
	if got[addr(1)] != 1 {
		t.Errorf("weight 1 host got %d of %d slots, want 1", got[addr(1)], len(sched))
	}
}

func TestRoundRobinSkipsEjectedKeepingShares(t *testing.T) {
	c := newCluster(t, ejecting(withPolicy(RoundRobin)), endpoints(3), Options{})
	ejectOne(t, c, host(t, c, addr(1)))
	seq := sequence(c, 12)
	if strings.Contains(seq, "b") || strings.Contains(seq, "aa") || strings.Contains(seq, "cc") {
		t.Errorf("got %s, want a and c alternating", seq)
	}
}

func TestPickExclude(t *testing.T) {
	for p := range Policy(len(policyNames)) {
		t.Run(p.String(), func(t *testing.T) {
			c := newCluster(t, ejecting(withPolicy(p)), endpoints(3), Options{})
			a, b := host(t, c, addr(0)), host(t, c, addr(1))
			notA := func(h *Host) bool { return h == a }
			for i := range 200 {
				if h := c.PickHash(uint64(i)*0x9e3779b97f4a7c15, notA); h == nil || h == a {
					t.Fatalf("exclude a: picked %v", h)
				}
			}
			all := func(*Host) bool { return true }
			if h := c.Pick(all); h == nil {
				t.Fatal("excluding every host: got nil, want the exclusion ignored")
			}
			// b ejected, a and c excluded: the exclusion is ignored, the
			// ejection is not.
			ejectOne(t, c, b)
			for range 50 {
				if h := c.Pick(all); h == nil || h == b {
					t.Fatalf("picked %v, want a host not ejected", h)
				}
			}
			ejectOne(t, c, a)
			ejectOne(t, c, host(t, c, addr(2)))
			if h := c.Pick(nil); h != nil {
				t.Fatalf("every host ejected: picked %v, want nil", h)
			}
		})
	}
}

func TestPickNoHosts(t *testing.T) {
	for p := range Policy(len(policyNames)) {
		c := newCluster(t, withPolicy(p), nil, Options{})
		if h := c.Pick(nil); h != nil {
			t.Errorf("%s: picked %v from no hosts", p, h)
		}
		if h := c.PickHash(42, nil); h != nil {
			t.Errorf("%s: PickHash picked %v from no hosts", p, h)
		}
	}
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	c := newCluster(t, withPolicy(LeastRequest), endpoints(4), Options{})
	for i := 1; i < 4; i++ {
		for range 5 {
			host(t, c, addr(i)).Begin()
		}
	}
	// Two choices among four: the idle host wins whenever it is drawn,
	// 1-(3/4)² = 7/16 of the picks, against 1/4 if ignored.
	const n = 20000
	got := counts(n, func() *Host { return c.Pick(nil) })
	if share := float64(got[addr(0)]) / n; share < 0.40 || share > 0.48 {
		t.Errorf("idle host share %.3f, want about 0.4375", share)
	}
	// With more choices than hosts the idle one (almost) always wins.
	cfg := withPolicy(LeastRequest)
	cfg.ChoiceCount = 40
	if err := c.Update(cfg, endpoints(4)); err != nil {
		t.Fatal(err)
	}
	got = counts(1000, func() *Host { return c.Pick(nil) })
	if got[addr(0)] < 999 {
		t.Errorf("40 choices: idle host got %d of 1000", got[addr(0)])
	}
	for i := 1; i < 4; i++ {
		for range 5 {
			host(t, c, addr(i)).End()
		}
	}
}

func TestLeastRequestWeighted(t *testing.T) {
	c := newCluster(t, withPolicy(LeastRequest), endpoints(2, 1, 3), Options{})
	// Idle: in proportion to weight.
	const n = 20000
	got := counts(n, func() *Host { return c.Pick(nil) })
	if share := float64(got[addr(1)]) / n; math.Abs(share-0.75) > 0.02 {
		t.Errorf("idle, weights 1:3: heavy share %.3f, want 0.75", share)
	}
	// Loaded per unit of weight: b (weight 3) with 3 in flight is as busy
	// as a (weight 1) with 1; with 4 it is busier, so a wins every pair.
	a, b := host(t, c, addr(0)), host(t, c, addr(1))
	a.Begin()
	for range 4 {
		b.Begin()
	}
	got = counts(n, func() *Host { return c.Pick(nil) })
	// a is chosen unless both draws are b: 1 - (3/4)².
	if share := float64(got[addr(0)]) / n; math.Abs(share-7.0/16) > 0.02 {
		t.Errorf("a lighter per weight: share %.3f, want 0.4375", share)
	}
}

func TestRandomWeighted(t *testing.T) {
	weights := []uint32{1, 2, 7}
	c := newCluster(t, withPolicy(Random), endpoints(3, weights...), Options{Rand: seeded(7)})
	const n = 100000
	got := counts(n, func() *Host { return c.Pick(nil) })
	for i, w := range weights {
		want := float64(w) / 10
		if share := float64(got[addr(i)]) / n; math.Abs(share-want) > 0.01 {
			t.Errorf("%s: share %.3f, want %.2f", addr(i), share, want)
		}
	}
	// The same seed gives the same picks.
	c2 := newCluster(t, withPolicy(Random), endpoints(3, weights...), Options{Rand: seeded(7)})
	if got2 := counts(n, func() *Host { return c2.Pick(nil) }); got2[addr(0)] != got[addr(0)] {
		t.Errorf("same seed: %v then %v", got, got2)
	}
}

func TestRandomSkipsEjected(t *testing.T) {
	c := newCluster(t, ejecting(withPolicy(Random)), endpoints(3, 1, 1, 2), Options{})
	ejectOne(t, c, host(t, c, addr(2)))
	const n = 20000
	got := counts(n, func() *Host { return c.Pick(nil) })
	if got[addr(2)] != 0 {
		t.Errorf("ejected host picked %d times", got[addr(2)])
	}
	if share := float64(got[addr(0)]) / n; math.Abs(share-0.5) > 0.02 {
		t.Errorf("remaining hosts not even: %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"policy", func(c *Config) { c.Policy = 9 }, "lb_policy"},
		{"choice count", func(c *Config) { c.ChoiceCount = 1 }, "least_request_lb_config.choice_count"},
		{"ring max", func(c *Config) { c.MaxRingSize = MaxRingSize + 1 }, "ring_hash_lb_config.maximum_ring_size"},
		{"ring min>max", func(c *Config) { c.MinRingSize, c.MaxRingSize = 100, 10 }, "ring_hash_lb_config.minimum_ring_size"},
		{"budget", func(c *Config) { c.Breaker.RetryBudget = &RetryBudget{BudgetPercent: 101} }, "retry_budget.budget_percent"},
		{"max ejection percent", func(c *Config) { c.Outlier = DefaultOutlier(); c.Outlier.MaxEjectionPercent = 101 }, "outlier_detection.max_ejection_percent"},
		{"enforcing", func(c *Config) { c.Outlier = DefaultOutlier(); c.Outlier.Enforcing5xx = 200 }, "outlier_detection.enforcing_consecutive_5xx"},
		{"interval", func(c *Config) { c.Outlier = DefaultOutlier(); c.Outlier.Interval = 0 }, "outlier_detection.interval"},
		{"base", func(c *Config) { c.Outlier = DefaultOutlier(); c.Outlier.BaseEjectionTime = -1 }, "outlier_detection.base_ejection_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, withPolicy(RoundRobin), endpoints(2), Options{})
			cfg := DefaultConfig()
			tc.edit(&cfg)
			err := c.Update(cfg, endpoints(3))
			if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), `cluster "test"`) {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
			if n := len(c.Hosts()); n != 2 {
				t.Errorf("failed Update changed the hosts: %d", n)
			}
		})
	}
}

func TestEndpointsChecked(t *testing.T) {
	c := newCluster(t, withPolicy(RoundRobin), endpoints(2), Options{})
	err := c.Update(DefaultConfig(), []Endpoint{{Addr: "127.0.0.1"}})
	if err == nil || !strings.Contains(err.Error(), `endpoint "127.0.0.1"`) {
		t.Fatalf("got %v, want an error naming the endpoint", err)
	}
	// An address listed twice is one host with both weights.
	if err := c.Update(DefaultConfig(), []Endpoint{{addr(0), 1}, {addr(1), 1}, {addr(0), 1}}); err != nil {
		t.Fatal(err)
	}
	if got := sequence(c, 6); got != "abaaba" {
		t.Errorf("duplicate endpoint: got %s, want abaaba", got)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for p := range Policy(len(policyNames)) {
		c := newCluster(t, ejecting(withPolicy(p)), endpoints(8, 1, 2, 3, 4, 5, 6, 7, 8), Options{})
		ejectOne(t, c, host(t, c, addr(3)))
		h0 := host(t, c, addr(0))
		exclude := func(h *Host) bool { return h == h0 }
		var key uint64
		allocs := testing.AllocsPerRun(1000, func() {
			key += 0x9e3779b97f4a7c15
			h := c.PickHash(key, exclude)
			h.Begin()
			h.End()
			if c.TryAcquire(Requests) {
				c.Release(Requests)
			}
			c.Result(h, Success)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations a pick", p, allocs)
		}
	}
}
