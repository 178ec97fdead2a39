package generate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// An upstream cluster's resiliency settings. Every value is written out,
// defaults included, so that Envoy and Trellis's proxy read the same
// numbers and neither depends on the other's defaults.
const (
	// Envoy's ring_hash defaults; the maximum is also its upper bound.
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 * 1024 * 1024
	// Envoy's default maglev table size, a prime.
	maglevTableSize = 65537
	// Envoy's default choice count of least_request.
	defaultChoiceCount = 2

	// The retry budget of every upstream: retries may be at most 20% of
	// the active requests, and 3 are always allowed. It keeps retries
	// from multiplying the load of an overloaded upstream, which a fixed
	// max_retries does badly at any one size.
	retryBudgetPercent     = 20
	retryBudgetConcurrency = 3

	// Outlier detection when the passive health check leaves a value
	// unset: Envoy's defaults.
	defaultConsecutive5xx                     = 5
	defaultConsecutiveGatewayFailure          = 5
	defaultEnforcingConsecutive5xx            = 100
	defaultEnforcingConsecutiveGatewayFailure = 0
	defaultOutlierInterval                    = 10 * time.Second
	defaultBaseEjectionTime                   = 30 * time.Second
	defaultMaxEjectionPercent                 = 10
	defaultMaxEjectionTime                    = 300 * time.Second
)

// lbPolicy sets c's load-balancing policy from the upstream's resolver.
func lbPolicy(c *clusterv3.Cluster, lb *configentry.LoadBalancer) {
	if lb == nil {
		return // ROUND_ROBIN, the zero value
	}
	switch lb.Policy {
	case configentry.LBPolicyLeastRequest:
		n := uint32(defaultChoiceCount)
		if lb.LeastRequestConfig != nil && lb.LeastRequestConfig.ChoiceCount > 0 {
			n = lb.LeastRequestConfig.ChoiceCount
		}
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: wrapperspb.UInt32(n),
		}}
	case configentry.LBPolicyRandom:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case configentry.LBPolicyRingHash:
		minSize, maxSize := uint64(defaultMinRingSize), uint64(defaultMaxRingSize)
		if rc := lb.RingHashConfig; rc != nil {
			if rc.MaximumRingSize > 0 {
				maxSize = rc.MaximumRingSize
				// A maximum below the default minimum lowers the
				// minimum with it, rather than making a ring Envoy
				// refuses.
				minSize = min(minSize, maxSize)
			}
			if rc.MinimumRingSize > 0 {
				minSize = rc.MinimumRingSize
			}
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(minSize),
			MaximumRingSize: wrapperspb.UInt64(maxSize),
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		}}
	case configentry.LBPolicyMaglev:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
			TableSize: wrapperspb.UInt64(maglevTableSize),
		}}
	}
}

// circuitBreakers bounds the upstream as Limits say (unset: Envoy's
// default of 1024 each) and always with the retry budget.
func circuitBreakers(l *proxycfg.Limits) *clusterv3.CircuitBreakers {
	t := &clusterv3.CircuitBreakers_Thresholds{
		Priority: corev3.RoutingPriority_DEFAULT,
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: retryBudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(retryBudgetConcurrency),
		},
	}
	if l != nil {
		t.MaxConnections = limit(l.MaxConnections)
		t.MaxPendingRequests = limit(l.MaxPendingRequests)
		t.MaxRequests = limit(l.MaxConcurrentRequests)
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
}

func limit(v *int) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(uint32(max(*v, 0)))
}

// outlierDetection maps a passive health check as Consul does
// (MaxFailures is consecutive_5xx unless Consecutive5xx is given), with
// Envoy's defaults written out for what it leaves unset. Every upstream
// gets one: an instance that keeps failing is ejected even when nobody
// configured it.
func outlierDetection(p *configentry.PassiveHealthCheck) *clusterv3.OutlierDetection {
	if p == nil {
		p = &configentry.PassiveHealthCheck{}
	}
	consecutive5xx := uint32(defaultConsecutive5xx)
	if p.MaxFailures > 0 {
		consecutive5xx = p.MaxFailures
	}
	interval := defaultOutlierInterval
	if p.Interval > 0 {
		interval = p.Interval
	}
	base := defaultBaseEjectionTime
	if p.BaseEjectionTime != nil && *p.BaseEjectionTime > 0 {
		base = *p.BaseEjectionTime
	}
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(orDefault(p.Consecutive5xx, consecutive5xx)),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(orDefault(p.ConsecutiveGatewayFailure, defaultConsecutiveGatewayFailure)),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(orDefault(p.EnforcingConsecutive5xx, defaultEnforcingConsecutive5xx)),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(orDefault(p.EnforcingConsecutiveGatewayFailure, defaultEnforcingConsecutiveGatewayFailure)),
		Interval:                           durationpb.New(interval),
		BaseEjectionTime:                   durationpb.New(base),
		MaxEjectionPercent:                 wrapperspb.UInt32(orDefault(p.MaxEjectionPercent, defaultMaxEjectionPercent)),
		// Never below the base time, which Envoy would refuse.
		MaxEjectionTime: durationpb.New(max(defaultMaxEjectionTime, base)),
	}
}

func orDefault(v *uint32, def uint32) uint32 {
	if v == nil {
		return def
	}
	return *v
}

// localAppProtocolOptions makes local_app speak HTTP/2 with prior
// knowledge (h2c) to an http2 or grpc application; an http application
// gets HTTP/1.1, Envoy's default.
func localAppProtocolOptions(protocol string) map[string]*anypb.Any {
	if protocol != "http2" && protocol != "grpc" {
		return nil
	}
	return httpProtocolOptions(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
}

// upstreamProtocolOptions makes an http2 or grpc upstream cluster speak
// HTTP/2 to the upstream's sidecar, whatever the downstream application
// speaks; an http upstream gets HTTP/1.1, Envoy's default, as Consul
// configures it: every hop of an HTTP/1.1 request stays HTTP/1.1 and
// needs no translation, and the sidecars keep a pool of connections
// rather than multiplexing one.
func upstreamProtocolOptions(protocol string) map[string]*anypb.Any {
	return localAppProtocolOptions(protocol)
}

// upstreamALPN is what an upstream cluster offers the upstream's sidecar
// over TLS: the protocol upstreamProtocolOptions chose (the sidecar's
// public listener offers both).
func upstreamALPN(protocol string) []string {
	switch {
	case protocol == "http2" || protocol == "grpc":
		return []string{"h2"}
	case isHTTP(protocol):
		return []string{"http/1.1"}
	default:
		return nil
	}
}

func httpProtocolOptions(o *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(o)}
}
