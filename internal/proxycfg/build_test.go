package proxycfg

import (
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
	for _, tc := range []struct {
		name string
		u    structs.Upstream
		own  *configentry.ServiceConfigEntry
		want time.Duration
	}{
		{"default", structs.Upstream{DestinationName: "db"}, nil, 5 * time.Second},
		{"registration (JSON number)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": float64(750)}}, own, 750 * time.Millisecond},
		{"registration (int)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": 40}}, nil, 40 * time.Millisecond},
		{"registration (string)", structs.Upstream{DestinationName: "db", Config: map[string]any{"connect_timeout_ms": "90"}}, nil, 90 * time.Millisecond},
		{"invalid registration value ignored", structs.Upstream{DestinationName: "api", Config: map[string]any{"connect_timeout_ms": "soon"}}, own, 2 * time.Second},
		{"service-defaults override", structs.Upstream{DestinationName: "db"}, own, 300 * time.Millisecond},
		{"service-defaults defaults", structs.Upstream{DestinationName: "api"}, own, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := connectTimeout(tc.u, tc.own); got != tc.want {
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
