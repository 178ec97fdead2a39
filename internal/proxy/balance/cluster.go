package balance

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is one healthy endpoint of a cluster, as EDS sends it.
type Endpoint struct {
	Addr   string // host:port
	Weight uint32 // load_balancing_weight; 0 means 1 (unset)
}

// Host is one endpoint as the cluster tracks it. The same *Host is kept
// by every Update that still lists its address, so its active requests
// and outlier state carry over.
type Host struct {
	addr string

	active atomic.Int64 // requests in flight (Begin/End)

	ejected       atomic.Bool
	consecutive5x atomic.Uint32
	consecutiveGW atomic.Uint32

	// Guarded by the owning Cluster's mu.
	ejectedAt time.Time // when last ejected
	backoff   uint32    // ejection-time multiplier ("times ejected")
}

// Addr is the host's address, host:port.
func (h *Host) Addr() string { return h.addr }

// Begin counts a request to h as in flight, for LEAST_REQUEST. Every
// Begin needs one End.
func (h *Host) Begin() { h.active.Add(1) }

// End ends a request counted by Begin.
func (h *Host) End() { h.active.Add(-1) }

// Active is the number of requests to h in flight.
func (h *Host) Active() int64 { return h.active.Load() }

// Ejected reports whether outlier detection has taken h out.
func (h *Host) Ejected() bool { return h.ejected.Load() }

func (h *Host) String() string { return h.addr }

// Options are a Cluster's dependencies, fixed at New. Zero values mean
// the real thing.
type Options struct {
	// Rand returns uniformly distributed numbers; it must be safe for
	// concurrent use. Default: math/rand/v2.Uint64.
	Rand func() uint64
	// Now is the clock ejections are stamped with. Default: time.Now.
	Now func() time.Time
	// OnEject and OnUneject, if set, are told of every ejection (with
	// its duration) and un-ejection, outside the cluster's lock.
	OnEject   func(addr string, d time.Duration)
	OnUneject func(addr string)
}

// Cluster balances requests over one cluster's hosts. Its methods are
// safe for concurrent use.
type Cluster struct {
	name string
	rand func() uint64
	now  func() time.Time
	opts Options

	// cur is the immutable picking state, replaced whole by Update.
	cur atomic.Pointer[table]

	rr atomic.Uint64 // round-robin position, kept across Updates

	counts   [numKinds]atomic.Int64  // circuit breaker: in use
	overflow [numKinds]atomic.Uint64 // circuit breaker: refused

	ejectionsTotal    atomic.Uint64
	ejectionsActive   atomic.Int64
	ejectionsOverflow atomic.Uint64

	mu     sync.Mutex
	hosts  map[string]*Host // guarded by mu; the current hosts by address
	nEject int              // guarded by mu; current hosts ejected
}

// New returns a cluster named name (for errors) balancing over eps as cfg
// says. Bad cfg or eps is an error naming the field.
func New(name string, cfg Config, eps []Endpoint, opts Options) (*Cluster, error) {
	c := &Cluster{name: name, opts: opts, rand: opts.Rand, now: opts.Now, hosts: map[string]*Host{}}
	if c.rand == nil {
		c.rand = rand.Uint64
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.Update(cfg, eps); err != nil {
		return nil, err
	}
	return c, nil
}

// Update replaces the cluster's configuration and hosts, as a new xDS
// configuration does. Hosts whose address is still listed keep their
// state: requests in flight, consecutive error counts, ejection and its
// multiplier. So do the circuit-breaker counters and the round-robin
// position. Removed hosts are forgotten (their End and Result calls still
// work and count for nothing). Turning outlier detection off un-ejects
// every host. An error changes nothing.
func (c *Cluster) Update(cfg Config, eps []Endpoint) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("balance: cluster %q: %w", c.name, err)
	}
	if cfg.Outlier != nil {
		o := *cfg.Outlier // the caller may reuse theirs
		cfg.Outlier = &o
	}
	if b := cfg.Breaker.RetryBudget; b != nil {
		bb := *b
		cfg.Breaker.RetryBudget = &bb
	}
	addrs, weights, err := mergeEndpoints(eps)
	if err != nil {
		return fmt.Errorf("balance: cluster %q: %w", c.name, err)
	}
	t, err := buildTable(&cfg, addrs, weights, c.cur.Load())
	if err != nil {
		return fmt.Errorf("balance: cluster %q: %w", c.name, err)
	}

	var unejected []string
	c.mu.Lock()
	next := make(map[string]*Host, len(addrs))
	for i, a := range addrs {
		h := c.hosts[a]
		if h == nil {
			h = &Host{addr: a}
		}
		t.hosts[i] = h
		next[a] = h
	}
	c.hosts = next
	c.nEject = 0
	for _, h := range t.hosts {
		if !h.ejected.Load() {
			continue
		}
		if cfg.Outlier == nil {
			c.unejectLocked(h)
			unejected = append(unejected, h.addr)
			continue
		}
		c.nEject++
	}
	c.ejectionsActive.Store(int64(c.nEject))
	c.cur.Store(t)
	c.mu.Unlock()
	if c.opts.OnUneject != nil {
		for _, a := range unejected {
			c.opts.OnUneject(a)
		}
	}
	return nil
}

// mergeEndpoints checks eps and lists each address once: an address
// listed twice gets the sum of its weights, the share of the traffic
// Envoy would give its two identical hosts.
func mergeEndpoints(eps []Endpoint) (addrs []string, weights []uint32, err error) {
	index := make(map[string]int, len(eps))
	for _, e := range eps {
		if _, _, err := net.SplitHostPort(e.Addr); err != nil {
			return nil, nil, fmt.Errorf("endpoint %q: address is not host:port", e.Addr)
		}
		w := max(e.Weight, 1)
		if i, ok := index[e.Addr]; ok {
			if weights[i] > ^uint32(0)-w {
				return nil, nil, fmt.Errorf("endpoint %q: load_balancing_weight sum overflows", e.Addr)
			}
			weights[i] += w
			continue
		}
		index[e.Addr] = len(addrs)
		addrs = append(addrs, e.Addr)
		weights = append(weights, w)
	}
	return addrs, weights, nil
}

// Hosts are the cluster's current hosts, in endpoint order.
func (c *Cluster) Hosts() []*Host {
	return append([]*Host(nil), c.cur.Load().hosts...)
}

// Policy is the current load-balancing policy.
func (c *Cluster) Policy() Policy { return c.cur.Load().cfg.Policy }

// Interval is how often the owner should call Tick: outlier_detection's
// interval, or 0 when outlier detection is off.
func (c *Cluster) Interval() time.Duration {
	if o := c.cur.Load().cfg.Outlier; o != nil {
		return o.Interval
	}
	return 0
}

// Stats are a cluster's counters, for metrics.
type Stats struct {
	Hosts int
	// InUse and Overflow are the circuit breaker's resources in use and
	// the acquisitions it refused, by Kind.
	InUse    [numKinds]int64
	Overflow [numKinds]uint64
	// EjectionsTotal counts ejections; EjectionsActive is how many hosts
	// are ejected now; EjectionsOverflow counts ejections that
	// max_ejection_percent prevented.
	EjectionsTotal    uint64
	EjectionsActive   int64
	EjectionsOverflow uint64
}

// Stats returns the cluster's counters now. It does not block pickers.
func (c *Cluster) Stats() Stats {
	s := Stats{
		Hosts:             len(c.cur.Load().hosts),
		EjectionsTotal:    c.ejectionsTotal.Load(),
		EjectionsActive:   c.ejectionsActive.Load(),
		EjectionsOverflow: c.ejectionsOverflow.Load(),
	}
	for k := range numKinds {
		s.InUse[k] = c.counts[k].Load()
		s.Overflow[k] = c.overflow[k].Load()
	}
	return s
}
