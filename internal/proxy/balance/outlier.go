package balance

import (
	"sync/atomic"
	"time"
)

// Outcome is how a request to a host ended, as outlier detection sees
// it: an HTTP status (Status) or one of the errors below.
type Outcome uint16

const (
	// Success is any outcome that is not an error (Status of a non-5xx
	// code is one too).
	Success Outcome = 0
	// ConnectFailure: no connection could be made. Counts as a 503.
	ConnectFailure Outcome = 1
	// Reset: the connection was reset or closed before a response.
	// Counts as a 503.
	Reset Outcome = 2
	// Timeout: no response in time. Counts as a 504.
	Timeout Outcome = 3
	// GatewayFailure: another local error the proxy answers with a
	// gateway error (a TCP proxy's failure). Counts as a 502.
	GatewayFailure Outcome = 4
)

// Status is the outcome of an HTTP response with this status code: 5xx
// codes are errors, 502, 503 and 504 gateway failures too, every other
// code a success.
func Status(code int) Outcome {
	if code < 100 || code > 999 {
		return Success
	}
	return Outcome(code)
}

// code is the HTTP status an outcome counts as (Envoy maps local errors
// to the status the router would answer with).
func (o Outcome) code() uint16 {
	switch o {
	case ConnectFailure, Reset:
		return 503
	case Timeout:
		return 504
	case GatewayFailure:
		return 502
	}
	return uint16(o)
}

// Result reports how a request to h ended, for outlier detection: a 5xx
// (local errors included) counts towards h's consecutive 5xx errors and,
// if a gateway error, its consecutive gateway failures; a 5xx that is
// not a gateway error resets the latter; anything else resets both.
// Reaching a detector's threshold resets its count and ejects h if
// enforcing_* allows it (a random draw) and fewer than
// max_ejection_percent of the hosts would then be ejected — or none is.
// A host the cluster no longer has is ignored.
func (c *Cluster) Result(h *Host, o Outcome) {
	od := c.cur.Load().cfg.Outlier
	if od == nil {
		return
	}
	code := o.code()
	if code < 500 || code > 599 {
		clear32(&h.consecutive5x)
		clear32(&h.consecutiveGW)
		return
	}
	var tripGW bool
	if code >= 502 && code <= 504 {
		n := h.consecutiveGW.Add(1)
		tripGW = od.ConsecutiveGatewayFailure > 0 && n >= od.ConsecutiveGatewayFailure
	} else {
		clear32(&h.consecutiveGW)
	}
	n := h.consecutive5x.Add(1)
	trip5xx := od.Consecutive5xx > 0 && n >= od.Consecutive5xx
	if tripGW || trip5xx {
		c.tripped(h, tripGW, trip5xx)
	}
}

// clear32 zeroes a counter, without a write when it is zero already so
// that successes do not bounce its cache line between cores.
func clear32(n *atomic.Uint32) {
	if n.Load() != 0 {
		n.Store(0)
	}
}

// tripped handles a host reaching a detector's threshold.
func (c *Cluster) tripped(h *Host, gateway, fivexx bool) {
	var ejectedFor time.Duration
	c.mu.Lock()
	od := c.cur.Load().cfg.Outlier
	if od == nil || c.hosts[h.addr] != h {
		c.mu.Unlock()
		return
	}
	if gateway {
		h.consecutiveGW.Store(0)
		if d, ok := c.ejectLocked(h, od, od.EnforcingGatewayFailure); ok {
			ejectedFor = d
		}
	}
	if fivexx {
		h.consecutive5x.Store(0)
		if d, ok := c.ejectLocked(h, od, od.Enforcing5xx); ok {
			ejectedFor = d
		}
	}
	c.mu.Unlock()
	if ejectedFor > 0 && c.opts.OnEject != nil {
		c.opts.OnEject(h.addr, ejectedFor)
	}
}

// ejectLocked ejects h, if it is not already, max_ejection_percent allows
// it and the enforcing percentage's draw does; it returns how long for.
func (c *Cluster) ejectLocked(h *Host, od *Outlier, enforcing uint32) (time.Duration, bool) {
	if h.ejected.Load() {
		return 0, false
	}
	if n := len(c.hosts); c.nEject > 0 && (c.nEject+1)*100 > int(od.MaxEjectionPercent)*n {
		c.ejectionsOverflow.Add(1)
		return 0, false
	}
	if c.rand()%100 >= uint64(enforcing) {
		return 0, false
	}
	// The multiplier stops growing once the ejection time is capped, so
	// that its decay brings it back within a bounded number of intervals.
	if time.Duration(h.backoff)*od.BaseEjectionTime < od.MaxEjectionTime+od.BaseEjectionTime {
		h.backoff++
	}
	h.ejectedAt = c.now()
	h.ejected.Store(true)
	c.nEject++
	c.ejectionsActive.Store(int64(c.nEject))
	c.ejectionsTotal.Add(1)
	return ejectionTime(h.backoff, od), true
}

// ejectionTime is base_ejection_time × the multiplier, at most
// max(max_ejection_time, base_ejection_time).
func ejectionTime(backoff uint32, od *Outlier) time.Duration {
	limit := max(od.MaxEjectionTime, od.BaseEjectionTime)
	backoff = max(backoff, 1)
	if od.BaseEjectionTime > limit/time.Duration(backoff) {
		return limit
	}
	return time.Duration(backoff) * od.BaseEjectionTime
}

func (c *Cluster) unejectLocked(h *Host) {
	h.ejected.Store(false)
	// Fresh counts, so that a host just back is not ejected again by the
	// few errors that were short of a threshold when it left.
	h.consecutive5x.Store(0)
	h.consecutiveGW.Store(0)
}

// Tick is the outlier detector's interval sweep; the owner calls it every
// Interval() (from a time.Ticker, with its time). It returns to service
// every ejected host whose ejection time has passed by now, and lowers by
// one the ejection multiplier of every host that is not ejected, so that
// a host healthy for long enough is ejected for base_ejection_time again.
// A host un-ejected by this sweep keeps its multiplier until the next.
// The package runs no goroutine of its own.
func (c *Cluster) Tick(now time.Time) {
	var back []string
	c.mu.Lock()
	od := c.cur.Load().cfg.Outlier
	if od == nil {
		c.mu.Unlock()
		return
	}
	for _, h := range c.cur.Load().hosts {
		if !h.ejected.Load() {
			if h.backoff > 0 {
				h.backoff--
			}
			continue
		}
		if now.Sub(h.ejectedAt) >= ejectionTime(h.backoff, od) {
			c.unejectLocked(h)
			c.nEject--
			back = append(back, h.addr)
		}
	}
	c.ejectionsActive.Store(int64(c.nEject))
	c.mu.Unlock()
	if c.opts.OnUneject != nil {
		for _, a := range back {
			c.opts.OnUneject(a)
		}
	}
}
