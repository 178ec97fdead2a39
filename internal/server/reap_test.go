package server

import "testing"

// Regression: the reap ticker fires every TTL/4 but reaped up to the
// previous sample, taken only TTL/4 earlier, so tombstones lived a quarter
// of their TTL. The horizon must be the sample taken one full TTL (four
// ticks) before.
func TestTombstoneHorizonIsOneTTLAgo(t *testing.T) {
	var h tombstoneHorizon
	for i, tc := range []struct {
		cur, want uint64
	}{
		{10, 0}, // ticks 1-4: no sample is a TTL old yet
		{20, 0},
		{30, 0},
		{40, 0},
		{50, 10}, // tick 5 reaps to tick 1's sample
		{60, 20},
		{60, 30},
		{60, 40},
		{60, 50},
		{70, 60},
	} {
		if got := h.next(tc.cur); got != tc.want {
			t.Errorf("tick %d: next(%d) = %d, want %d", i+1, tc.cur, got, tc.want)
		}
	}
}
