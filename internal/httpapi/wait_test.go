package httpapi

import (
	"context"
	"testing"
	"time"
)

// Blocking queries wait the requested time (default 5 minutes, at most
// 10) plus a jitter of at most wait/16.
func TestWaitContextBounds(t *testing.T) {
	tests := []struct {
		name string
		wait time.Duration
		want time.Duration
	}{
		{"default", 0, 5 * time.Minute},
		{"given", 30 * time.Second, 30 * time.Second},
		{"capped", time.Hour, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				before := time.Now()
				ctx, cancel := waitContext(context.Background(), tt.wait)
				deadline, ok := ctx.Deadline()
				cancel()
				if !ok {
					t.Fatal("no deadline")
				}
				got := deadline.Sub(before)
				if got < tt.want || got > tt.want+tt.want/16+time.Second {
					t.Fatalf("wait %v: deadline in %v, want within [%v, %v]", tt.wait, got, tt.want, tt.want+tt.want/16)
				}
			}
		})
	}
}
