package balance

import (
	"errors"
	"fmt"
	"time"
)

// Policy is a cluster's load-balancing policy (Envoy's Cluster.lb_policy).
type Policy uint8

// The policies, by Envoy's name: see the package doc.
const (
	RoundRobin Policy = iota
	LeastRequest
	Random
	RingHash
	Maglev
)

var policyNames = [...]string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"}

// String is the policy's name in Envoy's API.
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", p)
}

// hashed reports whether the policy places requests by their hash.
func (p Policy) hashed() bool { return p == RingHash || p == Maglev }

// Envoy's defaults for the fields of Config that have one.
const (
	DefaultChoiceCount = 2
	DefaultMinRingSize = 1024
	DefaultMaxRingSize = 8 * 1024 * 1024
	// MaxRingSize is the largest ring Envoy accepts (for either bound).
	MaxRingSize = 8 * 1024 * 1024
	// MaglevTableSize is Envoy's default Maglev table size, a prime.
	MaglevTableSize = 65537

	DefaultMaxConnections      = 1024
	DefaultMaxPendingRequests  = 1024
	DefaultMaxRequests         = 1024
	DefaultMaxRetries          = 3
	DefaultBudgetPercent       = 20.0
	DefaultMinRetryConcurrency = 3
	DefaultConsecutive5xx      = 5
	DefaultConsecutiveGateway  = 5
	DefaultEnforcing5xx        = 100
	DefaultEnforcingGateway    = 0
	DefaultOutlierInterval     = 10 * time.Second
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionPercent  = 10
	DefaultMaxEjectionTime     = 300 * time.Second
)

// Config is how one cluster balances and protects its hosts. Start from
// DefaultConfig: the zero value of Thresholds refuses every request, as a
// threshold of 0 does in Envoy.
type Config struct {
	Policy Policy

	// ChoiceCount is how many random hosts LEAST_REQUEST compares
	// (least_request_lb_config.choice_count); 0 means 2.
	ChoiceCount uint32

	// MinRingSize and MaxRingSize bound the RING_HASH ring
	// (ring_hash_lb_config.minimum_ring_size, maximum_ring_size); 0 means
	// Envoy's default (1024 and 8M).
	MinRingSize, MaxRingSize uint64

	// Breaker is the cluster's circuit breaker (the DEFAULT priority's
	// thresholds).
	Breaker Thresholds

	// Outlier configures outlier detection; nil turns it off (a cluster
	// without outlier_detection).
	Outlier *Outlier
}

// Thresholds are circuit_breakers.thresholds: how many of each Kind may
// be outstanding at once.
type Thresholds struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
	// RetryBudget, if set, replaces MaxRetries.
	RetryBudget *RetryBudget
}

// RetryBudget limits concurrent retries to a share of the requests in
// flight: max(MinRetryConcurrency, BudgetPercent% × (active + pending
// requests)), as Envoy counts it.
type RetryBudget struct {
	BudgetPercent       float64 // 0..100; Envoy's default 20
	MinRetryConcurrency uint32  // Envoy's default 3
}

// Outlier is outlier_detection, the consecutive-error detectors only.
type Outlier struct {
	// Consecutive5xx errors (5xx responses, and local errors, which count
	// as 503/504) eject a host; 0 turns the detector off.
	Consecutive5xx uint32
	// ConsecutiveGatewayFailure errors (502, 503, 504, and local errors)
	// eject a host; 0 turns the detector off.
	ConsecutiveGatewayFailure uint32
	// Enforcing5xx and EnforcingGatewayFailure are the percent chance that
	// reaching the detector's threshold actually ejects the host.
	Enforcing5xx            uint32
	EnforcingGatewayFailure uint32
	// Interval is how often the owner calls Tick: un-ejection and the
	// decay of the ejection multiplier happen there.
	Interval time.Duration
	// BaseEjectionTime × (times ejected in a row) is how long a host stays
	// out, at most max(MaxEjectionTime, BaseEjectionTime).
	BaseEjectionTime time.Duration
	MaxEjectionTime  time.Duration
	// MaxEjectionPercent caps the share of the cluster's hosts ejected at
	// once; one host may always be ejected.
	MaxEjectionPercent uint32
}

// DefaultConfig is ROUND_ROBIN with Envoy's default circuit breaker and
// no outlier detection.
func DefaultConfig() Config {
	return Config{Policy: RoundRobin, Breaker: DefaultThresholds()}
}

// DefaultThresholds are Envoy's circuit-breaker defaults: 1024
// connections, pending and requests, 3 retries.
func DefaultThresholds() Thresholds {
	return Thresholds{
		MaxConnections:     DefaultMaxConnections,
		MaxPendingRequests: DefaultMaxPendingRequests,
		MaxRequests:        DefaultMaxRequests,
		MaxRetries:         DefaultMaxRetries,
	}
}

// DefaultOutlier is Envoy's outlier_detection with every field unset.
func DefaultOutlier() *Outlier {
	return &Outlier{
		Consecutive5xx:            DefaultConsecutive5xx,
		ConsecutiveGatewayFailure: DefaultConsecutiveGateway,
		Enforcing5xx:              DefaultEnforcing5xx,
		EnforcingGatewayFailure:   DefaultEnforcingGateway,
		Interval:                  DefaultOutlierInterval,
		BaseEjectionTime:          DefaultBaseEjectionTime,
		MaxEjectionTime:           DefaultMaxEjectionTime,
		MaxEjectionPercent:        DefaultMaxEjectionPercent,
	}
}

// Validate reports the first field of c that is out of range, named as in
// Envoy's Cluster.
func (c *Config) Validate() error {
	if int(c.Policy) >= len(policyNames) {
		return fmt.Errorf("lb_policy %d is not supported", c.Policy)
	}
	if c.ChoiceCount == 1 {
		return errors.New("least_request_lb_config.choice_count 1 is less than 2")
	}
	lo, hi := c.ringBounds()
	if hi > MaxRingSize {
		return fmt.Errorf("ring_hash_lb_config.maximum_ring_size %d exceeds %d", hi, MaxRingSize)
	}
	if lo > hi {
		return fmt.Errorf("ring_hash_lb_config.minimum_ring_size %d exceeds maximum_ring_size %d", lo, hi)
	}
	if b := c.Breaker.RetryBudget; b != nil && !(b.BudgetPercent >= 0 && b.BudgetPercent <= 100) {
		return fmt.Errorf("circuit_breakers.thresholds.retry_budget.budget_percent %v is not within [0, 100]", b.BudgetPercent)
	}
	if o := c.Outlier; o != nil {
		for _, f := range []struct {
			name string
			v    uint32
		}{
			{"enforcing_consecutive_5xx", o.Enforcing5xx},
			{"enforcing_consecutive_gateway_failure", o.EnforcingGatewayFailure},
			{"max_ejection_percent", o.MaxEjectionPercent},
		} {
			if f.v > 100 {
				return fmt.Errorf("outlier_detection.%s %d exceeds 100", f.name, f.v)
			}
		}
		if o.Interval <= 0 {
			return fmt.Errorf("outlier_detection.interval %v is not positive", o.Interval)
		}
		if o.BaseEjectionTime <= 0 {
			return fmt.Errorf("outlier_detection.base_ejection_time %v is not positive", o.BaseEjectionTime)
		}
		if o.MaxEjectionTime < 0 {
			return fmt.Errorf("outlier_detection.max_ejection_time %v is negative", o.MaxEjectionTime)
		}
	}
	return nil
}

func (c *Config) choiceCount() int {
	if c.ChoiceCount == 0 {
		return DefaultChoiceCount
	}
	return int(c.ChoiceCount)
}

func (c *Config) ringBounds() (lo, hi uint64) {
	lo, hi = c.MinRingSize, c.MaxRingSize
	if lo == 0 {
		lo = DefaultMinRingSize
	}
	if hi == 0 {
		hi = DefaultMaxRingSize
	}
	return lo, hi
}
