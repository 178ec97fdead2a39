package proxycfg

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestConnectTimeout(t *testing.T) {
	own := &configentry.ServiceConfigEntry{UpstreamConfig: &configentry.UpstreamConfiguration{
		Overrides: []*configentry.UpstreamConfig{{Name: "db", ConnectTimeoutMs: 300}},
		Defaults:  &configentry.UpstreamConfig{ConnectTimeoutMs: 2000},
	}}
	resolver := &configentry.ServiceResolverConfigEntry{ConnectTimeout: 1200 * time.Millisecond}
	for _, tc := range []struct {
		name     string
		u        structs.Upstream
		own      *configentry.ServiceConfigEntry
		resolver *configentry.ServiceResolverConfigEntry
		want     time.Duration
	}{
		{"default", structs.Upstream{DestinationName: "db"}, nil, nil, 5 * time.Second},
		{"registration (JSON number)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": float64(750)}}, own, resolver, 750 * time.Millisecond},
		{"registration (int)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": 40}}, nil, nil, 40 * time.Millisecond},
		{"registration (string)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": "90"}}, nil, nil, 90 * time.Millisecond},
		{"invalid registration value ignored", structs.Upstream{DestinationName: "api", Config: map[string]any{"connect_timeout_ms": "soon"}}, own, nil, 2 * time.Second},
		{"resolver", structs.Upstream{DestinationName: "db"}, own, resolver, 1200 * time.Millisecond},
		{"resolver without one", structs.Upstream{DestinationName: "db"}, own, &configentry.ServiceResolverConfigEntry{}, 300 * time.Millisecond},
		{"service-defaults override", structs.Upstream{DestinationName: "db"}, own, nil, 300 * time.Millisecond},
		{"service-defaults defaults", structs.Upstream{DestinationName: "api"}, own, nil, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := connectTimeout(tc.u, tc.own, tc.resolver); got != tc.want {
				t.Errorf("connectTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWeight(t *testing.T) {
	chk := func(statuses ...string) []*structs.HealthCheck {
		var out []*structs.HealthCheck
		for _, s := range statuses {
			out = append(out, &structs.HealthCheck{Status: s})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		weights structs.Weights
		checks  []*structs.HealthCheck
		want    int
	}{
		{"no checks", structs.Weights{Passing: 2, Warning: 1}, nil, 2},
		{"passing", structs.Weights{Passing: 5, Warning: 1}, chk("passing", "passing"), 5},
		{"unset weights", structs.Weights{}, chk("passing"), 1},
		{"warning", structs.Weights{Passing: 5, Warning: 2}, chk("passing", "warning"), 2},
		{"warning with weight 0 is out", structs.Weights{Passing: 5, Warning: 0}, chk("warning"), 0},
		{"critical is out", structs.Weights{Passing: 5, Warning: 1}, chk("passing", "critical"), 0},
		{"maintenance is out", structs.Weights{Passing: 5, Warning: 1}, chk(structs.HealthMaint), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csn := &structs.CheckServiceNode{Service: &structs.NodeService{Weights: tc.weights}, Checks: tc.checks}
			if got := weight(csn); got != tc.want {
				t.Errorf("weight = %d, want %d", got, tc.want)
			}
		})
	}
}

func intp(n int) *int                    { return &n }
func u32(n uint32) *uint32               { return &n }
func dur(d time.Duration) *time.Duration { return &d }

func TestUpstreamLimits(t *testing.T) {
	own := &configentry.ServiceConfigEntry{UpstreamConfig: &configentry.UpstreamConfiguration{
		Overrides: []*configentry.UpstreamConfig{
			{Name: "db", Limits: &configentry.UpstreamLimits{MaxConnections: intp(7)}},
			{Name: "cache", PassiveHealthCheck: &configentry.PassiveHealthCheck{MaxFailures: 9}},
			{Name: "api", Peer: "other", Limits: &configentry.UpstreamLimits{MaxConnections: intp(99)}},
		},
		Defaults: &configentry.UpstreamConfig{
			Limits:             &configentry.UpstreamLimits{MaxPendingRequests: intp(50)},
			PassiveHealthCheck: &configentry.PassiveHealthCheck{Interval: time.Second, MaxFailures: 2},
		},
	}}
	for _, tc := range []struct {
		name    string
		u       structs.Upstream
		own     *configentry.ServiceConfigEntry
		limits  *Limits
		phc     *configentry.PassiveHealthCheck
		wantErr string
	}{
		{"none", structs.Upstream{DestinationName: "db"}, nil, nil, nil, ""},
		{"defaults", structs.Upstream{DestinationName: "web"}, own, &Limits{MaxPendingRequests: intp(50)},
			&configentry.PassiveHealthCheck{Interval: time.Second, MaxFailures: 2}, ""},
		{"override's limits, defaults' check", structs.Upstream{DestinationName: "db"}, own, &Limits{MaxConnections: intp(7)},
			&configentry.PassiveHealthCheck{Interval: time.Second, MaxFailures: 2}, ""},
		{"override's check, defaults' limits", structs.Upstream{DestinationName: "cache"}, own, &Limits{MaxPendingRequests: intp(50)},
			&configentry.PassiveHealthCheck{MaxFailures: 9}, ""},
		{"a peer's override is not ours", structs.Upstream{DestinationName: "api"}, own, &Limits{MaxPendingRequests: intp(50)},
			&configentry.PassiveHealthCheck{Interval: time.Second, MaxFailures: 2}, ""},
		{"registration wins", structs.Upstream{DestinationName: "db", Config: map[string]any{
			"limits":               map[string]any{"max_concurrent_requests": float64(3)},
			"passive_health_check": map[string]any{"max_failures": float64(4), "enforcing_consecutive_5xx": float64(50), "base_ejection_time": "5s"},
		}}, own, &Limits{MaxConcurrentRequests: intp(3)},
			&configentry.PassiveHealthCheck{MaxFailures: 4, EnforcingConsecutive5xx: u32(50), BaseEjectionTime: dur(5 * time.Second)}, ""},
		{"bad registration config falls back", structs.Upstream{DestinationName: "db", Config: map[string]any{
			"limits": map[string]any{"max_connections": "lots"},
		}}, own, &Limits{MaxConnections: intp(7)}, &configentry.PassiveHealthCheck{Interval: time.Second, MaxFailures: 2}, "limits.MaxConnections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits, phc, err := upstreamLimits(tc.u, tc.own)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(limits, tc.limits) || !reflect.DeepEqual(phc, tc.phc) {
				t.Errorf("= %+v, %+v; want %+v, %+v", limits, phc, tc.limits, tc.phc)
			}
		})
	}
}

func TestLocalTimeout(t *testing.T) {
	pd := &configentry.ProxyConfigEntry{Config: map[string]any{"local_request_timeout_ms": int64(9000)}}
	for _, tc := range []struct {
		name string
		reg  map[string]any
		sdMs int
		pd   *configentry.ProxyConfigEntry
		want time.Duration
	}{
		{"unset", nil, 0, nil, 0},
		{"proxy-defaults", nil, 0, pd, 9 * time.Second},
		{"service-defaults", nil, 1500, pd, 1500 * time.Millisecond},
		{"registration", map[string]any{"local_request_timeout_ms": float64(250)}, 1500, pd, 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := localTimeout(tc.reg, "local_request_timeout_ms", tc.sdMs, tc.pd); got != tc.want {
				t.Errorf("localTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}
