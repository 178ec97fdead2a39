package checks

import (
	"net"
	"testing"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-accepted })
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	up := ln.Addr().String()
	down := closedAddr(t)

	tests := []struct {
		name, addr, wantStatus, wantOutput string
	}{
		{"up", up, structs.HealthPassing, "TCP connect " + up + ": Success"},
		{"down", down, structs.HealthCritical, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNotifier(t)
			start(t, "db", &structs.CheckType{TCP: tt.addr, Interval: dur(testInterval)}, Options{Notify: n})
			got := n.next(t)
			if got.status != tt.wantStatus {
				t.Errorf("status = %s, want %s", got.status, tt.wantStatus)
			}
			wantContains(t, got.output, tt.wantOutput)
		})
	}
}
