package checks

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestStatusHandler(t *testing.T) {
	const (
		P = structs.HealthPassing
		W = structs.HealthWarning
		C = structs.HealthCritical
	)
	tests := []struct {
		name                string
		success, warn, crit int
		in                  []string
		want                []string // per input: status reported, or "" for none
	}{
		{"no thresholds", 0, 0, 0, []string{P, C, W, P}, []string{P, C, W, P}},
		{"success before passing", 2, 0, 0, []string{P, P, P, C, P, P}, []string{"", P, P, C, "", P}},
		{"failures before critical", 0, 0, 3, []string{C, C, C, C, P, C, C, C}, []string{"", "", C, C, P, "", "", C}},
		{"warning defaults to critical", 0, 0, 2, []string{C, C}, []string{"", C}},
		{"failures before warning", 0, 1, 3, []string{C, C, C, P, C}, []string{W, W, C, P, W}},
		{"warning result counts as failure", 0, 0, 2, []string{W, W}, []string{"", W}},
		{"opposite result resets", 2, 0, 2, []string{P, C, P, C, P, P, C, C}, []string{"", "", "", "", "", P, "", C}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNotifier(t)
			h := newStatusHandler(n, slog.New(slog.DiscardHandler), tt.success, tt.warn, tt.crit)
			for i, status := range tt.in {
				out := fmt.Sprint("run ", i)
				h.UpdateCheck("c", status, out)
				var got string
				select {
				case r := <-n.ch:
					got = r.status
					if r.output != out || r.checkID != "c" {
						t.Errorf("run %d: reported %q for %q, want output %q", i, r.output, r.checkID, out)
					}
				default:
				}
				if got != tt.want[i] {
					t.Errorf("run %d (%s): reported %q, want %q", i, status, got, tt.want[i])
				}
			}
		})
	}
}

// The thresholds apply to a running check: the server fails three times then
// passes; with failures_before_critical=3 and success_before_passing=2 the
// first report is the third failure and the next is the second pass.
func TestThresholdsOnRunningCheck(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := requests.Add(1)
		if i <= 3 {
			w.WriteHeader(http.StatusInternalServerError)
		}
		fmt.Fprintf(w, "request %d", i)
	}))
	defer srv.Close()

	n := newFakeNotifier(t)
	start(t, "web", &structs.CheckType{
		HTTP:                   srv.URL,
		Interval:               dur(10 * time.Millisecond),
		Timeout:                dur(time.Second),
		SuccessBeforePassing:   2,
		FailuresBeforeCritical: 3,
	}, Options{Notify: n})

	got := n.next(t)
	if got.status != structs.HealthCritical || !strings.HasSuffix(got.output, "Output: request 3") {
		t.Errorf("first report %s %q, want critical from request 3", got.status, got.output)
	}
	got = n.next(t)
	if got.status != structs.HealthPassing || !strings.HasSuffix(got.output, "Output: request 5") {
		t.Errorf("second report %s %q, want passing from request 5", got.status, got.output)
	}
}
