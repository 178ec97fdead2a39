package agent

import (
	"slices"
	"testing"
	"time"
)

func TestOrderDatacenters(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		rtts map[string][]time.Duration
		want []string
	}{
		{"alone", nil, []string{"dc1"}},
		{"own first even when farther", map[string][]time.Duration{"dc1": {90 * ms}, "dc2": {1 * ms}}, []string{"dc1", "dc2"}},
		{"by median", map[string][]time.Duration{
			"far":  {1 * ms, 80 * ms, 90 * ms}, // median 80
			"near": {50 * ms, 5 * ms, 6 * ms},  // median 6
			"mid":  {20 * ms},
		}, []string{"dc1", "near", "mid", "far"}},
		{"unmeasured last, ties by name", map[string][]time.Duration{
			"zz": {3 * ms}, "bb": nil, "aa": nil, "yy": {3 * ms},
		}, []string{"dc1", "yy", "zz", "aa", "bb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := orderDatacenters("dc1", tt.rtts); !slices.Equal(got, tt.want) {
				t.Errorf("orderDatacenters = %v, want %v", got, tt.want)
			}
		})
	}
}
