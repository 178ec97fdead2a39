package proxy

import (
	"errors"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// A cluster's load balancing, circuit breaker and outlier detection
// settings, parsed with Envoy's defaults, and what package balance makes
// of them (balanceConfig): the cluster's balancer applies them
// (balancer.go).

// lbSettings are a cluster's lb_policy and its configuration.
type lbSettings struct {
	policy          clusterv3.Cluster_LbPolicy
	choiceCount     uint32 // LEAST_REQUEST; default 2
	minRingSize     uint64 // RING_HASH; default 1024
	maxRingSize     uint64 // RING_HASH; default 8M
	maglevTableSize uint64 // MAGLEV; default 65537
}

// circuitLimits are the DEFAULT priority thresholds of a cluster's
// circuit_breakers, Envoy's defaults where unset.
type circuitLimits struct {
	maxConnections, maxPendingRequests, maxRequests, maxRetries uint32
	// retryBudget, when set, replaces maxRetries: the allowed active
	// retries are max(minRetryConcurrency, budgetPercent% of the active
	// requests).
	retryBudget         bool
	budgetPercent       float64 // default 20
	minRetryConcurrency uint32  // default 3
}

// outlierSettings are a cluster's outlier_detection, Envoy's defaults
// where unset; enabled says whether the cluster has it.
type outlierSettings struct {
	enabled                            bool
	consecutive5xx                     uint32        // 5
	consecutiveGatewayFailure          uint32        // 5
	enforcingConsecutive5xx            uint32        // 100 (%)
	enforcingConsecutiveGatewayFailure uint32        // 0 (%)
	interval                           time.Duration // 10s
	baseEjectionTime                   time.Duration // 30s
	maxEjectionPercent                 uint32        // 10
	maxEjectionTime                    time.Duration // 300s
}

func parseLB(c *clusterv3.Cluster) (lbSettings, error) {
	lb := lbSettings{policy: c.GetLbPolicy(), choiceCount: 2, minRingSize: 1024, maxRingSize: 8 << 20, maglevTableSize: 65537}
	switch lb.policy {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM,
		clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
	default:
		return lb, fmt.Errorf("lb_policy %s is not supported", lb.policy)
	}
	switch cfg := c.GetLbConfig().(type) {
	case nil:
	case *clusterv3.Cluster_LeastRequestLbConfig_:
		if lb.policy != clusterv3.Cluster_LEAST_REQUEST {
			return lb, fmt.Errorf("least_request_lb_config with lb_policy %s", lb.policy)
		}
		if cfg.LeastRequestLbConfig.GetActiveRequestBias() != nil || cfg.LeastRequestLbConfig.GetSlowStartConfig() != nil {
			return lb, errors.New("least_request_lb_config: only choice_count is supported")
		}
		lb.choiceCount = uint32Or(cfg.LeastRequestLbConfig.GetChoiceCount(), 2)
		if lb.choiceCount < 2 {
			return lb, errors.New("least_request_lb_config: choice_count must be at least 2")
		}
	case *clusterv3.Cluster_RingHashLbConfig_:
		if lb.policy != clusterv3.Cluster_RING_HASH {
			return lb, fmt.Errorf("ring_hash_lb_config with lb_policy %s", lb.policy)
		}
		rh := cfg.RingHashLbConfig
		if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return lb, fmt.Errorf("ring_hash_lb_config: hash_function %s is not supported", rh.GetHashFunction())
		}
		lb.minRingSize = uint64Or(rh.GetMinimumRingSize(), 1024)
		lb.maxRingSize = uint64Or(rh.GetMaximumRingSize(), 8<<20)
		if lb.minRingSize == 0 || lb.minRingSize > lb.maxRingSize {
			return lb, fmt.Errorf("ring_hash_lb_config: ring sizes %d..%d", lb.minRingSize, lb.maxRingSize)
		}
	case *clusterv3.Cluster_MaglevLbConfig_:
		if lb.policy != clusterv3.Cluster_MAGLEV {
			return lb, fmt.Errorf("maglev_lb_config with lb_policy %s", lb.policy)
		}
		lb.maglevTableSize = uint64Or(cfg.MaglevLbConfig.GetTableSize(), 65537)
	default:
		return lb, fmt.Errorf("lb config %T is not supported", cfg)
	}
	return lb, nil
}

func parseCircuitBreakers(cb *clusterv3.CircuitBreakers) (circuitLimits, error) {
	l := circuitLimits{maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3}
	if cb == nil {
		return l, nil
	}
	if len(cb.GetPerHostThresholds()) > 0 {
		return l, errors.New("circuit_breakers: per_host_thresholds are not supported")
	}
	for _, t := range cb.GetThresholds() {
		switch t.GetPriority() {
		case corev3.RoutingPriority_DEFAULT:
		case corev3.RoutingPriority_HIGH:
			continue // Trellis routes no request at high priority
		}
		if err := onlyFields(t, "priority", "max_connections", "max_pending_requests", "max_requests",
			"max_retries", "retry_budget", "track_remaining"); err != nil {
			return l, fmt.Errorf("circuit_breakers: %w", err)
		}
		l.maxConnections = uint32Or(t.GetMaxConnections(), 1024)
		l.maxPendingRequests = uint32Or(t.GetMaxPendingRequests(), 1024)
		l.maxRequests = uint32Or(t.GetMaxRequests(), 1024)
		l.maxRetries = uint32Or(t.GetMaxRetries(), 3)
		if b := t.GetRetryBudget(); b != nil {
			if b.GetBudgetInterval() != nil {
				return l, errors.New("circuit_breakers: retry_budget budget_interval is not supported")
			}
			l.retryBudget = true
			l.budgetPercent = 20
			if p := b.GetBudgetPercent(); p != nil {
				l.budgetPercent = p.GetValue()
			}
			l.minRetryConcurrency = uint32Or(b.GetMinRetryConcurrency(), 3)
		}
	}
	return l, nil
}

func parseOutlierDetection(od *clusterv3.OutlierDetection) (outlierSettings, error) {
	o := outlierSettings{
		consecutive5xx: 5, consecutiveGatewayFailure: 5, enforcingConsecutive5xx: 100,
		interval: 10 * time.Second, baseEjectionTime: 30 * time.Second, maxEjectionPercent: 10,
		maxEjectionTime: 300 * time.Second,
	}
	if od == nil {
		return o, nil
	}
	// Success rate and failure percentage detection (Envoy's other
	// detectors) are left out: nothing Trellis generates asks for them.
	if err := onlyFields(od, "consecutive_5xx", "consecutive_gateway_failure", "enforcing_consecutive_5xx",
		"enforcing_consecutive_gateway_failure", "interval", "base_ejection_time", "max_ejection_percent",
		"max_ejection_time", "enforcing_success_rate"); err != nil {
		return o, fmt.Errorf("outlier_detection: %w", err)
	}
	o.enabled = true
	o.consecutive5xx = uint32Or(od.GetConsecutive_5Xx(), o.consecutive5xx)
	o.consecutiveGatewayFailure = uint32Or(od.GetConsecutiveGatewayFailure(), o.consecutiveGatewayFailure)
	o.enforcingConsecutive5xx = uint32Or(od.GetEnforcingConsecutive_5Xx(), o.enforcingConsecutive5xx)
	o.enforcingConsecutiveGatewayFailure = uint32Or(od.GetEnforcingConsecutiveGatewayFailure(), 0)
	o.maxEjectionPercent = uint32Or(od.GetMaxEjectionPercent(), o.maxEjectionPercent)
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
		out  *time.Duration
	}{
		{"interval", od.GetInterval(), &o.interval},
		{"base_ejection_time", od.GetBaseEjectionTime(), &o.baseEjectionTime},
		{"max_ejection_time", od.GetMaxEjectionTime(), &o.maxEjectionTime},
	} {
		if d.in == nil {
			continue
		}
		if err := d.in.CheckValid(); err != nil || d.in.AsDuration() <= 0 {
			return o, fmt.Errorf("outlier_detection: %s %v is not a positive duration", d.name, d.in)
		}
		*d.out = d.in.AsDuration()
	}
	if o.enforcingConsecutive5xx > 100 || o.enforcingConsecutiveGatewayFailure > 100 || o.maxEjectionPercent > 100 {
		return o, errors.New("outlier_detection: a percentage is over 100")
	}
	return o, nil
}

// balanceConfig maps a cluster's parsed settings onto balance's Config,
// for a cluster of hosts endpoints, and checks it all as balance's
// Update will, so that a Config it would refuse is refused by compile,
// before any balancer changes.
func balanceConfig(lb lbSettings, l circuitLimits, o outlierSettings, hosts int) (balance.Config, error) {
	cfg := balance.Config{
		ChoiceCount: lb.choiceCount,
		MinRingSize: lb.minRingSize,
		MaxRingSize: lb.maxRingSize,
		Breaker: balance.Thresholds{
			MaxConnections:     l.maxConnections,
			MaxPendingRequests: l.maxPendingRequests,
			MaxRequests:        l.maxRequests,
			MaxRetries:         l.maxRetries,
		},
	}
	switch lb.policy {
	case clusterv3.Cluster_ROUND_ROBIN:
		cfg.Policy = balance.RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.Policy = balance.LeastRequest
	case clusterv3.Cluster_RANDOM:
		cfg.Policy = balance.Random
	case clusterv3.Cluster_RING_HASH:
		cfg.Policy = balance.RingHash
	case clusterv3.Cluster_MAGLEV:
		cfg.Policy = balance.Maglev
		if lb.maglevTableSize != balance.MaglevTableSize {
			return cfg, fmt.Errorf("maglev_lb_config: table_size %d is not supported (only %d)", lb.maglevTableSize, balance.MaglevTableSize)
		}
		if hosts > balance.MaglevTableSize {
			return cfg, fmt.Errorf("maglev: %d endpoints exceed the table size %d", hosts, balance.MaglevTableSize)
		}
	default:
		return cfg, fmt.Errorf("lb_policy %s is not supported", lb.policy)
	}
	if l.retryBudget {
		cfg.Breaker.RetryBudget = &balance.RetryBudget{BudgetPercent: l.budgetPercent, MinRetryConcurrency: l.minRetryConcurrency}
	}
	if o.enabled {
		cfg.Outlier = &balance.Outlier{
			Consecutive5xx:            o.consecutive5xx,
			ConsecutiveGatewayFailure: o.consecutiveGatewayFailure,
			Enforcing5xx:              o.enforcingConsecutive5xx,
			EnforcingGatewayFailure:   o.enforcingConsecutiveGatewayFailure,
			Interval:                  o.interval,
			BaseEjectionTime:          o.baseEjectionTime,
			MaxEjectionTime:           o.maxEjectionTime,
			MaxEjectionPercent:        o.maxEjectionPercent,
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parseProtocolOptions reads what a cluster speaks over HTTP, from its
// HttpProtocolOptions extension (or the deprecated http2_protocol_options
// field), and the idle timeout of its connections.
func parseProtocolOptions(c *clusterv3.Cluster) (upstreamProtocol, time.Duration, error) {
	proto, idle := protoHTTP1, defaultUpstreamIdle
	if c.GetHttp2ProtocolOptions() != nil {
		if err := onlyFields(c.GetHttp2ProtocolOptions()); err != nil {
			return 0, 0, fmt.Errorf("http2_protocol_options: %w", err)
		}
		proto = protoHTTP2
	}
	for key, a := range c.GetTypedExtensionProtocolOptions() {
		if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
			return 0, 0, fmt.Errorf("typed_extension_protocol_options %q are not supported", key)
		}
		o := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(o); err != nil {
			return 0, 0, fmt.Errorf("typed_extension_protocol_options %q: %v", key, err)
		}
		if err := onlyFields(o, "common_http_protocol_options", "explicit_http_config", "auto_config"); err != nil {
			return 0, 0, fmt.Errorf("HttpProtocolOptions: %w", err)
		}
		if ch := o.GetCommonHttpProtocolOptions(); ch != nil {
			if err := onlyFields(ch, "idle_timeout"); err != nil {
				return 0, 0, fmt.Errorf("common_http_protocol_options: %w", err)
			}
			if d := ch.GetIdleTimeout(); d != nil {
				if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
					return 0, 0, fmt.Errorf("common_http_protocol_options: idle_timeout %v is not a duration", d)
				}
				idle = d.AsDuration() // 0: never closed for idleness
			}
		}
		switch u := o.GetUpstreamProtocolOptions().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
			switch pc := u.ExplicitHttpConfig.GetProtocolConfig().(type) {
			case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
				if err := onlyFields(pc.HttpProtocolOptions); err != nil {
					return 0, 0, fmt.Errorf("http_protocol_options: %w", err)
				}
				proto = protoHTTP1
			case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
				if err := onlyFields(pc.Http2ProtocolOptions); err != nil {
					return 0, 0, fmt.Errorf("http2_protocol_options: %w", err)
				}
				proto = protoHTTP2
			default:
				return 0, 0, fmt.Errorf("explicit_http_config %T is not supported", pc)
			}
		case *httpv3.HttpProtocolOptions_AutoConfig:
			ac := u.AutoConfig
			if err := onlyFields(ac, "http_protocol_options", "http2_protocol_options"); err != nil {
				return 0, 0, fmt.Errorf("auto_config: %w", err)
			}
			if err := onlyFields(ac.GetHttpProtocolOptions()); ac.GetHttpProtocolOptions() != nil && err != nil {
				return 0, 0, fmt.Errorf("auto_config: http_protocol_options: %w", err)
			}
			if err := onlyFields(ac.GetHttp2ProtocolOptions()); ac.GetHttp2ProtocolOptions() != nil && err != nil {
				return 0, 0, fmt.Errorf("auto_config: http2_protocol_options: %w", err)
			}
			proto = protoAuto
		case nil:
		default:
			return 0, 0, fmt.Errorf("upstream protocol options %T are not supported", u)
		}
	}
	return proto, idle, nil
}

func uint32Or(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func uint64Or(v *wrapperspb.UInt64Value, def uint64) uint64 {
	if v == nil {
		return def
	}
	return v.GetValue()
}
