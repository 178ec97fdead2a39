package state

import (
	"fmt"
	"testing"
	"time"
)

// Regression: lock-delay entries were removed only when their key was
// looked up again, so locks on ever new keys grew the map without bound.
func TestLockDelayMapPrunesExpired(t *testing.T) {
	s := New()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	for i := 0; i < 10_000; i++ {
		s.recordLockDelay(fmt.Sprintf("k/%d", i), now.Add(time.Second))
		now = now.Add(2 * time.Second) // every delay so far has ended
	}
	s.lockMu.Lock()
	n := len(s.lockDelay)
	s.lockMu.Unlock()
	if n > 2*minLockDelayPrune {
		t.Errorf("lock-delay map holds %d entries after 10000 expired delays, want at most %d", n, 2*minLockDelayPrune)
	}

	// Pruning must keep delays still in force.
	live := now.Add(time.Hour)
	for i := 0; i < 1000; i++ {
		s.recordLockDelay(fmt.Sprintf("live/%d", i), live)
	}
	for i := 0; i < 1000; i++ {
		if got := s.KVSLockDelay(fmt.Sprintf("live/%d", i)); !got.Equal(live) {
			t.Fatalf("live/%d lock-delay = %v, want %v", i, got, live)
		}
	}
}
