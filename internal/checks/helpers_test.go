package checks

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// waitTimeout bounds every wait in these tests. Results normally arrive in
// milliseconds; the bound is generous so that a loaded -race run does not
// flake.
const waitTimeout = 10 * time.Second

type result struct {
	checkID, status, output string
	at                      time.Time
}

// fakeNotifier records results onto a channel. It never blocks the runner: a
// full channel drops the result and fails the test.
type fakeNotifier struct {
	t  *testing.T
	ch chan result
}

func newFakeNotifier(t *testing.T) *fakeNotifier {
	return &fakeNotifier{t: t, ch: make(chan result, 4096)}
}

func (f *fakeNotifier) UpdateCheck(checkID, status, output string) {
	select {
	case f.ch <- result{checkID: checkID, status: status, output: output, at: time.Now()}:
	default:
		f.t.Errorf("fake notifier: channel full, dropped %s %s", checkID, status)
	}
}

// next returns the next result, failing the test if none arrives in time.
func (f *fakeNotifier) next(t *testing.T) result {
	t.Helper()
	select {
	case r := <-f.ch:
		return r
	case <-time.After(waitTimeout):
		t.Fatalf("no check result within %s", waitTimeout)
		return result{}
	}
}

// waitFor returns the first result for which ok is true, skipping others.
func (f *fakeNotifier) waitFor(t *testing.T, what string, ok func(result) bool) result {
	t.Helper()
	deadline := time.After(waitTimeout)
	var last result
	for {
		select {
		case r := <-f.ch:
			if ok(r) {
				return r
			}
			last = r
		case <-deadline:
			t.Fatalf("no result %s within %s; last was %+v", what, waitTimeout, last)
			return result{}
		}
	}
}

func (f *fakeNotifier) waitStatus(t *testing.T, status string) result {
	t.Helper()
	return f.waitFor(t, "with status "+status, func(r result) bool { return r.status == status })
}

// start builds a runner for def and stops it when the test ends.
func start(t *testing.T, id string, def *structs.CheckType, opts Options) Runner {
	t.Helper()
	r, err := New(id, def, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", id, err)
	}
	t.Cleanup(r.Stop)
	return r
}

func dur(d time.Duration) structs.Duration { return structs.Duration(d) }

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitGoroutines polls until no more than n goroutines run, dumping them all
// if that does not happen in time.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines running, want <= %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		runtime.Gosched()
		<-time.After(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

func wantPrefix(t *testing.T, got, prefix string) {
	t.Helper()
	if !strings.HasPrefix(got, prefix) {
		t.Errorf("output = %q, want prefix %q", got, prefix)
	}
}

func wantContains(t *testing.T, got, sub string) {
	t.Helper()
	if !strings.Contains(got, sub) {
		t.Errorf("output = %q, want it to contain %q", got, sub)
	}
}

// testInterval is the interval of checks whose first result is all a test
// needs. It also bounds their probes' timeout, so it leaves room for a TLS
// handshake under -race.
const testInterval = 250 * time.Millisecond
