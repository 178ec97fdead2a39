package balance

import (
	"fmt"
	"testing"
)

// BenchmarkPick is one pick (and, for the parallel runs, the Begin/End
// least request needs) per op, 16 hosts, equal and unequal weights.
func BenchmarkPick(b *testing.B) {
	for p := range Policy(len(policyNames)) {
		for _, weighted := range []bool{false, true} {
			eps := endpoints(16)
			name := p.String() + "/equal"
			if weighted {
				for i := range eps {
					eps[i].Weight = uint32(1 + i%5)
				}
				name = p.String() + "/weighted"
			}
			c, err := New("bench", withPolicy(p), eps, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				var key uint64
				for b.Loop() {
					key += 0x9e3779b97f4a7c15
					if c.PickHash(key, nil) == nil {
						b.Fatal("no host")
					}
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					var key uint64
					for pb.Next() {
						key += 0x9e3779b97f4a7c15
						h := c.PickHash(key, nil)
						h.Begin()
						h.End()
					}
				})
			})
		}
	}
}

// BenchmarkPickHosts shows how a pick scales with the number of hosts.
func BenchmarkPickHosts(b *testing.B) {
	for _, n := range []int{4, 256} {
		for p := range Policy(len(policyNames)) {
			eps := endpoints(n)
			for i := range eps {
				eps[i].Weight = uint32(1 + i%3)
			}
			c, err := New("bench", withPolicy(p), eps, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/%d", p, n), func(b *testing.B) {
				var key uint64
				for b.Loop() {
					key += 0x9e3779b97f4a7c15
					c.PickHash(key, nil)
				}
			})
		}
	}
}

// BenchmarkRequest is a request's bookkeeping around the pick: breaker,
// Begin/End and a successful Result.
func BenchmarkRequest(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Outlier = DefaultOutlier()
	c, err := New("bench", cfg, endpoints(16), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !c.TryAcquire(Requests) {
				continue
			}
			h := c.Pick(nil)
			h.Begin()
			h.End()
			c.Result(h, Success)
			c.Release(Requests)
		}
	})
}

// BenchmarkUpdate is the cost of an Apply for one cluster of 64 hosts.
func BenchmarkUpdate(b *testing.B) {
	for p := range Policy(len(policyNames)) {
		eps := endpoints(64)
		for i := range eps {
			eps[i].Weight = uint32(1 + i%3)
		}
		cfg := withPolicy(p)
		c, err := New("bench", cfg, eps, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(p.String(), func(b *testing.B) {
			for b.Loop() {
				if err := c.Update(cfg, eps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
