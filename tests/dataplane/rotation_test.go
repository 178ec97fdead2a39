package dataplane

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Rotating the CA's root under steady traffic fails no request: new
// connections and long-lived ones alike carry on while both sidecars
// move to leaves of the new root.
func TestCARootRotationUnderLoad(t *testing.T) {
	m := startWebToDB(t, nil)
	m.passes(t, "web reaches db")
	_, oldRoot := m.a.Roots()

	l := startLoad(t, m.up, 4, 2)
	l.progress(t, "load flows before the rotation", 5)

	// A new key type makes a new root (cross-signed by the old one).
	rotated, before := time.Now(), l.total(l.short)+l.total(l.long)
	if _, err := m.a.API.Connect().CASetConfig(&api.CAConfig{Provider: "consul",
		Config: map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}}, nil); err != nil {
		t.Fatalf("rotate the root: %v", err)
	}
	_, newRoot := m.a.Roots()
	if newRoot.Equal(oldRoot) {
		t.Fatal("the CA configuration change did not rotate the root")
	}
	eventually(t, "both sidecars present leaves of the new root", func() error {
		l.check(t)
		for _, s := range []*Service{m.db, m.web} {
			leaf, err := serverLeaf(s.Public)
			if err != nil {
				return fmt.Errorf("%s: %w", s.SidecarID, err)
			}
			if err := leaf.CheckSignatureFrom(newRoot); err != nil {
				return fmt.Errorf("%s presents a leaf not of the new root: %w", s.SidecarID, err)
			}
		}
		return nil
	})
	t.Logf("both sidecars moved to the new root %v after the change; %d requests answered meanwhile",
		time.Since(rotated), l.total(l.short)+l.total(l.long)-before)
	l.progress(t, "load flows after the rotation", 10)
	l.stop()
	l.check(t)
	t.Logf("%d requests on new connections, %d on long-lived ones", l.total(l.short), l.total(l.long))
}

// load is steady traffic through a listener: clients that each open a
// new connection per request, and sessions that keep one connection and
// exchange a request on it every few milliseconds.
type load struct {
	short, long []*atomic.Int64 // answered requests, per worker

	mu       sync.Mutex
	failures []string // guarded by mu

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// startLoad starts clients and sessions on addr; they run until stop, or
// the end of the test.
func startLoad(t *testing.T, addr string, clients, sessions int) *load {
	t.Helper()
	l := &load{done: make(chan struct{})}
	for i := range clients {
		n := &atomic.Int64{}
		l.short = append(l.short, n)
		l.wg.Go(func() {
			l.run(func(j int) error {
				_, err := Ask(addr, fmt.Sprintf("client %d request %d", i, j))
				return err
			}, n)
		})
	}
	for i := range sessions {
		s, err := Dial(addr)
		if err != nil {
			l.stop()
			t.Fatalf("session %d: %v", i, err)
		}
		n := &atomic.Int64{}
		l.long = append(l.long, n)
		l.wg.Go(func() {
			defer s.Close()
			l.run(func(j int) error {
				_, err := s.Ask(fmt.Sprintf("session %d request %d", i, j))
				return err
			}, n)
		})
	}
	t.Cleanup(l.stop)
	return l
}

// run sends requests with do every 20 ms until the load stops; a
// failure is recorded, and ends a session (its connection is gone).
func (l *load) run(do func(int) error, answered *atomic.Int64) {
	tick := time.NewTicker(20 * time.Millisecond) // paces the worker, no more
	defer tick.Stop()
	for j := 0; ; j++ {
		if err := do(j); err != nil {
			l.mu.Lock()
			l.failures = append(l.failures, fmt.Sprintf("request %d: %v", j, err))
			l.mu.Unlock()
			return
		}
		answered.Add(1)
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
	}
}

// stop ends the workers and waits for them.
func (l *load) stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

// check fails the test if a request failed.
func (l *load) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		t.Fatalf("%d failed requests:\n%s", len(l.failures), strings.Join(l.failures, "\n"))
	}
}

// progress waits until every worker has had n more requests answered,
// failing the test as soon as one failed.
func (l *load) progress(t *testing.T, what string, n int64) {
	t.Helper()
	workers := append(append([]*atomic.Int64{}, l.short...), l.long...)
	want := make([]int64, len(workers))
	for i, w := range workers {
		want[i] = w.Load() + n
	}
	eventually(t, what, func() error {
		l.check(t)
		for i, w := range workers {
			if got := w.Load(); got < want[i] {
				return fmt.Errorf("worker %d: %d answered, want %d", i, got, want[i])
			}
		}
		return nil
	})
}

func (l *load) total(ws []*atomic.Int64) int64 {
	var sum int64
	for _, w := range ws {
		sum += w.Load()
	}
	return sum
}
