package checks

import (
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestTTLExpires(t *testing.T) {
	const ttl = 50 * time.Millisecond
	n := newFakeNotifier(t)
	startAt := time.Now()
	r := start(t, "ttl", &structs.CheckType{TTL: dur(ttl)}, Options{Notify: n})
	if _, ok := r.(TTLRunner); !ok {
		t.Fatalf("runner is %T, want a TTLRunner", r)
	}
	got := n.next(t)
	if got.status != structs.HealthCritical || got.output != "TTL expired" {
		t.Errorf("got %s %q, want critical %q", got.status, got.output, "TTL expired")
	}
	if d := got.at.Sub(startAt); d < ttl {
		t.Errorf("expired after %s, before the %s TTL", d, ttl)
	}
}

func TestTTLSetStatus(t *testing.T) {
	const ttl = 50 * time.Millisecond
	n := newFakeNotifier(t)
	r := start(t, "ttl", &structs.CheckType{TTL: dur(ttl)}, Options{Notify: n}).(TTLRunner)

	r.SetStatus(structs.HealthPassing, "all good")
	// SetStatus reports synchronously, so the result is already there.
	select {
	case got := <-n.ch:
		if got.status != structs.HealthPassing || got.output != "all good" {
			t.Errorf("got %s %q, want passing %q", got.status, got.output, "all good")
		}
	default:
		t.Fatal("SetStatus did not report at once")
	}

	got := n.next(t)
	want := "TTL expired (last output before timeout follows): all good"
	if got.status != structs.HealthCritical || got.output != want {
		t.Errorf("got %s %q, want critical %q", got.status, got.output, want)
	}

	// Expiry is reported once, not every TTL: the next result is ours.
	r.SetStatus(structs.HealthWarning, "meh")
	if got := n.next(t); got.status != structs.HealthWarning || got.output != "meh" {
		t.Errorf("got %s %q, want warning %q", got.status, got.output, "meh")
	}
	if got := n.next(t); got.status != structs.HealthCritical {
		t.Errorf("got %s %q, want critical after second expiry", got.status, got.output)
	}
}

// Every SetStatus restarts the timer: an expiry is only ever reported a full
// TTL after the latest SetStatus before it. The assertion is a lower bound,
// so it holds however slowly the test runs.
func TestTTLSetStatusRestartsTimer(t *testing.T) {
	const ttl = 40 * time.Millisecond
	n := newFakeNotifier(t)
	r := start(t, "ttl", &structs.CheckType{TTL: dur(ttl)}, Options{Notify: n}).(TTLRunner)

	var sets []time.Time
	for i := 0; i < 10; i++ {
		sets = append(sets, time.Now())
		r.SetStatus(structs.HealthPassing, "tick")
		<-time.After(ttl / 4) // pacing the updates, not synchronising on them
	}
	final := sets[len(sets)-1]
	n.waitFor(t, "expiring after the final SetStatus", func(res result) bool {
		if res.status != structs.HealthCritical {
			return false
		}
		var last time.Time
		for _, s := range sets {
			if s.Before(res.at) {
				last = s
			}
		}
		if d := res.at.Sub(last); d < ttl {
			t.Errorf("expired %s after the latest SetStatus, want >= %s", d, ttl)
		}
		return res.at.After(final)
	})
}

func TestTTLStop(t *testing.T) {
	n := newFakeNotifier(t)
	r, err := New("ttl", &structs.CheckType{TTL: dur(time.Hour)}, Options{Notify: n})
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	r.Stop() // idempotent
	r.(TTLRunner).SetStatus(structs.HealthPassing, "late")
	if len(n.ch) != 0 {
		t.Errorf("SetStatus after Stop reported %+v", <-n.ch)
	}
}

func TestTTLOutputTruncated(t *testing.T) {
	n := newFakeNotifier(t)
	r := start(t, "ttl", &structs.CheckType{TTL: dur(time.Hour)}, Options{Notify: n}).(TTLRunner)
	long := make([]byte, 3*MaxOutputSize)
	for i := range long {
		long[i] = 'a'
	}
	r.SetStatus(structs.HealthPassing, string(long))
	got := n.next(t)
	wantPrefix(t, got.output, string(long[:MaxOutputSize])+" ... (captured 4096 of 12288 bytes)")
}
