package membership

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests. Failure detection with
// FastTiming takes about a second; the margin is for loaded machines and
// the race detector.
const waitTimeout = 20 * time.Second

// leakCheck must be the first thing a test calls: its cleanup runs last,
// after the pools' Shutdown, and waits for the goroutine count to return
// to where it was.
func leakCheck(t *testing.T) {
	t.Helper()
	start := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitTimeout)
		for runtime.NumGoroutine() > start {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines still running after shutdown (started with %d):\n%s",
					runtime.NumGoroutine(), start, buf)
				return
			}
			<-time.After(10 * time.Millisecond)
		}
	})
}

// testWriter sends log lines to t.Log until the test's cleanups run, and
// drops them afterwards (serf goroutines may log while they wind down).
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool // guarded by mu
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newPool starts a LAN pool in dc1 on 127.0.0.1 with a free port and fast
// timing, shut down at cleanup.
func newPool(t *testing.T, name string, mutate func(*Config)) *Pool {
	t.Helper()
	cfg := Config{
		NodeName:   name,
		NodeID:     "id-" + name,
		Datacenter: "dc1",
		BindAddr:   "127.0.0.1",
		Tags:       map[string]string{"role": "node"},
		Logger:     testLogger(t),
		Timing:     FastTiming(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() {
		if err := p.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", name, err)
		}
	})
	return p
}

// cluster starts n pools named node-1..node-n, joins them to the first and
// waits until every one sees all n alive.
func cluster(t *testing.T, n int) []*Pool {
	t.Helper()
	pools := make([]*Pool, n)
	for i := range pools {
		pools[i] = newPool(t, fmt.Sprintf("node-%d", i+1), nil)
	}
	for _, p := range pools[1:] {
		if got, err := p.Join([]string{pools[0].Addr()}); err != nil || got != 1 {
			t.Fatalf("%s: Join(%s) = %d, %v; want 1, nil", p.Name(), pools[0].Addr(), got, err)
		}
	}
	for _, p := range pools {
		waitMembers(t, p, n, StatusAlive)
	}
	return pools
}

// waitFor polls cond until it returns nil or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// waitMembers waits until p sees exactly n members, all with status want.
func waitMembers(t *testing.T, p *Pool, n int, want MemberStatus) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to see %d members %s", p.Name(), n, want), func() error {
		ms := p.Members()
		if len(ms) != n {
			return fmt.Errorf("members %v", describe(ms))
		}
		for _, m := range ms {
			if m.Status != want {
				return fmt.Errorf("members %v", describe(ms))
			}
		}
		return nil
	})
}

// waitStatus waits until p sees member name with status want.
func waitStatus(t *testing.T, p *Pool, name string, want MemberStatus) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to see %s %s", p.Name(), name, want), func() error {
		m, ok := member(p, name)
		if !ok {
			return fmt.Errorf("%s not a member: %v", name, describe(p.Members()))
		}
		if m.Status != want {
			return fmt.Errorf("%s is %s", name, m.Status)
		}
		return nil
	})
}

// waitGone waits until p no longer lists member name.
func waitGone(t *testing.T, p *Pool, name string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to forget %s", p.Name(), name), func() error {
		if m, ok := member(p, name); ok {
			return fmt.Errorf("%s still listed as %s", name, m.Status)
		}
		return nil
	})
}

func member(p *Pool, name string) (Member, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func describe(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name+"="+m.Status.String())
	}
	return out
}

// waitEvent reads ch until an event matches, failing on timeout or if the
// channel closes.
func waitEvent(t *testing.T, ch <-chan Event, what string, match func(Event) bool) Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: subscription closed", what)
			}
			if match(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// memberEvent matches an event of type typ about member name.
func memberEvent(typ EventType, name string) func(Event) bool {
	return func(e Event) bool {
		if e.Type != typ {
			return false
		}
		for _, m := range e.Members {
			if m.Name == name {
				return true
			}
		}
		return false
	}
}
