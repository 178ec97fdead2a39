//go:build netns

// Package partition cuts a real 3-server trellis cluster in two with
// network namespaces and checks what a partition must and must not do:
// the minority refuses writes, the majority goes on, and after healing
// the servers converge with no acknowledged write lost, and the history
// of KV operations across it is linearizable.
//
// It needs root and iproute2, and runs only with -tags netns (make
// partition); with the tag it fails, rather than skips, when it cannot
// make namespaces.
package partition

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/tests/lincheck"
	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

// Partition the leader away from the two followers while clients write
// through all three: the followers elect a new leader and take writes;
// the old leader knows no leader and refuses writes and consistent reads
// with "No cluster leader". Healing brings it back: one leader, gossip
// sees all three alive again, every acknowledged write is everywhere and
// the refused one nowhere, and writes through the old leader work again.
func TestPartitionLeaderFromMajority(t *testing.T) {
	checkGoroutines(t)
	nw := newNetwork(t, 3)
	all := startServers(t, nw)
	w := &writes{acked: map[string]string{}, unsure: map[string]string{}}

	waitLeader(t, all)
	for i, s := range all {
		w.put(t, s, fmt.Sprintf("data/before/%d", i), "before")
	}
	stopWriters := w.startWriters(all)
	defer stopWriters() // on failure; a second call does nothing
	// Meanwhile, a history of puts, consistent gets and CAS through all
	// three servers, checked for linearizability after the heal.
	rec := lincheck.Start(3, func(rng *rand.Rand) *api.Client { return all[rng.IntN(len(all))].api })
	var stopRec sync.Once
	defer stopRec.Do(rec.Stop)

	// --- Partition --------------------------------------------------------
	w.waitAcked(t, 30) // the writers are going
	// Cut whoever leads now: on a loaded machine an election under the
	// starting load is possible, and no fault.
	old := waitLeader(t, all)
	var majority []*server
	for _, s := range all {
		if s != old {
			majority = append(majority, s)
		}
	}
	cutAt := time.Now()
	nw.cut(t, slices.Index(all, old))
	t.Logf("cut %s (the leader) off from %s and %s", old.name, majority[0].name, majority[1].name)

	// The old leader steps down once it hears from no quorum.
	eventually(t, 30*time.Second, func() error {
		l, err := old.api.Status().Leader()
		if err != nil {
			return err
		}
		if l != "" {
			return fmt.Errorf("%s still names leader %q", old.name, l)
		}
		return nil
	})
	t.Logf("%s knows no leader %v after the cut", old.name, since(cutAt))

	// Held for up to 7s each, so they run while the majority is checked.
	type refusal struct {
		what   string
		status int
		body   string
		took   time.Duration
		err    error
	}
	refusals := make(chan refusal, 2)
	var wg sync.WaitGroup
	for _, req := range []struct{ what, method, path, body string }{
		{"write", http.MethodPut, "/v1/kv/data/refused", "minority"},
		{"consistent read", http.MethodGet, "/v1/kv/data/before/0?consistent", ""},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			status, _, body, err := old.do(req.method, req.path, req.body)
			refusals <- refusal{req.what, status, body, time.Since(start), err}
		}()
	}

	newLeader := waitLeader(t, majority)
	t.Logf("%s leads the majority %v after the cut", newLeader.name, since(cutAt))
	for i, s := range majority {
		w.put(t, s, fmt.Sprintf("data/during/%d", i), "during")
	}
	for _, s := range majority {
		if err := w.check(s, &api.QueryOptions{RequireConsistent: true}); err != nil {
			t.Fatalf("consistent read on the majority: %v", err)
		}
	}
	// The majority's gossip declares the old leader failed (or left, once
	// autopilot has removed it from raft), and the new leader's catalog
	// no longer has it passing.
	eventually(t, 30*time.Second, func() error {
		for _, s := range majority {
			st, err := memberStatus(s, old.name)
			if err != nil {
				return err
			}
			if st != memberFailed && st != memberLeft {
				return fmt.Errorf("%s sees %s in status %d, want failed or left", s.name, old.name, st)
			}
		}
		if st, err := serfHealth(newLeader, old.name); err != nil || st == api.HealthPassing {
			return fmt.Errorf("%s's serfHealth on %s is %q (%v)", old.name, newLeader.name, st, err)
		}
		return nil
	})
	t.Logf("the majority sees %s gone %v after the cut", old.name, since(cutAt))

	wg.Wait()
	close(refusals)
	for r := range refusals {
		if r.err != nil {
			t.Fatalf("%s on the minority: %v", r.what, r.err)
		}
		if r.status != http.StatusInternalServerError || !strings.Contains(r.body, "No cluster leader") {
			t.Errorf("%s on the minority = %d %q, want 500 \"No cluster leader\"", r.what, r.status, r.body)
		}
		t.Logf("%s on the minority refused after %v: %d %q", r.what, r.took.Round(time.Millisecond), r.status, r.body)
	}

	// A stale read is still served there, from the state it had at the
	// cut, and says no leader is known.
	status, h, body, err := old.do(http.MethodGet, "/v1/kv/data/?recurse&stale&keys", "")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || h.Get("X-Consul-KnownLeader") != "false" {
		t.Errorf("stale read on the minority = %d, X-Consul-KnownLeader %q; want 200, false", status, h.Get("X-Consul-KnownLeader"))
	}
	if strings.Contains(body, "data/during/") {
		t.Errorf("the minority has the majority's writes while cut off: %s", body)
	}

	// --- Heal -------------------------------------------------------------
	nw.heal(t, slices.Index(all, old))
	healedAt := time.Now()
	fewest := len(all) // voters seen while gossip recovers, for the log

	// Gossip finds the old leader again once it learns that the others
	// declared it dead, and refutes that. It learns it from its periodic
	// push/pull (every 30s, the first up to 60s after it started) or
	// serf's reconnect (every 30s, only sometimes tried), so up to about
	// a minute after the servers started: this, not raft, is what makes
	// the heal take tens of seconds.
	eventually(t, 75*time.Second, func() error {
		if n, err := voters(newLeader); err == nil {
			fewest = min(fewest, n)
		}
		for _, s := range all {
			for _, m := range all {
				if st, err := memberStatus(s, m.name); err != nil || st != memberAlive {
					return fmt.Errorf("%s sees %s in status %d (%v), want alive", s.name, m.name, st, err)
				}
			}
		}
		if st, err := serfHealth(newLeader, old.name); err != nil || st != api.HealthPassing {
			return fmt.Errorf("%s's serfHealth on %s is %q (%v)", old.name, newLeader.name, st, err)
		}
		return nil
	})
	t.Logf("gossip sees all three alive %v after healing (%d voters at the fewest meanwhile)", since(healedAt), fewest)
	// Autopilot removes a server that gossip has failed from raft
	// (Consul's cleanup_dead_servers), during the cut or just after the
	// heal, as gossip lags; the leader adds it back once gossip has it
	// alive.
	eventually(t, 45*time.Second, func() error {
		n, err := voters(newLeader)
		if err == nil && n != len(all) {
			err = fmt.Errorf("%d voters in the raft configuration, want %d", n, len(all))
		}
		return err
	})
	t.Logf("%d voters again %v after healing", len(all), since(healedAt))
	final := waitLeader(t, all)
	t.Logf("all three follow %s %v after healing", final.name, since(healedAt))
	w.waitAcked(t, w.count()+30) // the writers go on after the heal
	stopWriters()
	stopRec.Do(rec.Stop)
	w.put(t, old, "data/after", "after")

	// Every server's own state (stale reads) ends up holding every
	// acknowledged write and nothing that was not written: not the
	// write the minority refused, nor anything it took before stepping
	// down. Consistent reads, served by the leader, agree.
	for _, s := range all {
		eventually(t, 30*time.Second, func() error { return w.check(s, &api.QueryOptions{AllowStale: true}) })
		if err := w.check(s, &api.QueryOptions{RequireConsistent: true}); err != nil {
			t.Fatalf("after healing: %v", err)
		}
	}
	t.Logf("%d acknowledged writes, none lost; %d failed", w.count(), len(w.unsure))

	res, ops, pending := rec.Check(2 * time.Minute)
	t.Logf("linearizability: %d operations checked (%d with an unknown outcome): %v", ops, pending, res)
	switch res {
	case porcupine.Illegal:
		t.Fatalf("the history across the partition is not linearizable")
	case porcupine.Unknown:
		t.Fatalf("the checker could not decide within its time limit")
	}
}

// writes records the writes the cluster acknowledged, and those that
// failed: a failed write may still have been applied (the leader may
// have committed it and then been cut off before answering), so it may
// appear, but nothing else may.
type writes struct {
	mu     sync.Mutex
	acked  map[string]string // guarded by mu; key under data/ -> value
	unsure map[string]string // guarded by mu
	// stopped is set, under mu, once the writers are done: from then on
	// acked and unsure hold every write.
	stopped bool
}

func (w *writes) put(t *testing.T, s *server, key, val string) {
	t.Helper()
	if _, err := s.api.KV().Put(&api.KVPair{Key: key, Value: []byte(val)}, nil); err != nil {
		t.Fatalf("write %s through %s: %v", key, s.name, err)
	}
	w.mu.Lock()
	w.acked[key] = val
	w.mu.Unlock()
}

func (w *writes) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// startWriters writes new keys through each server until stop is called;
// stop cancels the writes in flight and waits for the writers.
func (w *writes) startWriters(all []*server) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key, val := fmt.Sprintf("data/%s/%05d", s.name, i), fmt.Sprint(i)
				_, err := s.api.KV().Put(&api.KVPair{Key: key, Value: []byte(val)}, (&api.WriteOptions{}).WithContext(ctx))
				w.mu.Lock()
				if err == nil {
					w.acked[key] = val
				} else {
					w.unsure[key] = val
				}
				w.mu.Unlock()
				// Paced: the point is writes across the cut, not load.
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	return func() {
		cancel()
		wg.Wait()
		w.mu.Lock()
		w.stopped = true
		w.mu.Unlock()
	}
}

// waitAcked waits until at least n writes have been acknowledged.
func (w *writes) waitAcked(t *testing.T, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if got := w.count(); got < n {
			return fmt.Errorf("%d writes acknowledged, want %d", got, n)
		}
		return nil
	})
}

// check reads data/ on s and compares it with the writes: every write
// acknowledged before the read must be there; once the writers have
// stopped, nothing that was not written may be.
func (w *writes) check(s *server, q *api.QueryOptions) error {
	w.mu.Lock()
	acked := maps.Clone(w.acked)
	w.mu.Unlock()
	pairs, _, err := s.api.KV().List("data/", q)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	got := map[string]string{}
	for _, p := range pairs {
		got[p.Key] = string(p.Value)
	}
	for k, v := range acked {
		if got[k] != v {
			return fmt.Errorf("%s: acknowledged %s=%q is %q", s.name, k, v, got[k])
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		return nil // what is not in acked may be a write in flight
	}
	for k, v := range got {
		if _, ok := w.acked[k]; !ok && w.unsure[k] != v {
			return fmt.Errorf("%s: has %s=%q, which no write put there", s.name, k, v)
		}
	}
	return nil
}

// Gossip member statuses, as /v1/agent/members reports them.
const (
	memberAlive  = 1
	memberLeft   = 3
	memberFailed = 4
)

// memberStatus is the status s's gossip has for the member name.
func memberStatus(s *server, name string) (int, error) {
	members, err := s.api.Agent().Members(false)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	for _, m := range members {
		if m.Name == name {
			return m.Status, nil
		}
	}
	return 0, fmt.Errorf("%s does not know %s", s.name, name)
}

// serfHealth is the status of node's serfHealth check in the catalog, as
// s serves it; "" when the node has none (a left node is deregistered).
func serfHealth(s *server, node string) (string, error) {
	checks, _, err := s.api.Health().Node(node, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s.name, err)
	}
	for _, c := range checks {
		if c.CheckID == "serfHealth" {
			return c.Status, nil
		}
	}
	return "", nil
}

// voters counts the voters in the raft configuration s reports.
func voters(s *server) (int, error) {
	cfg, err := s.api.Operator().RaftGetConfiguration(nil)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	n := 0
	for _, srv := range cfg.Servers {
		if srv.Voter {
			n++
		}
	}
	return n, nil
}

// waitLeader waits until every server in among names the same leader,
// one of them, and a write through each succeeds; it returns the leader.
func waitLeader(t *testing.T, among []*server) *server {
	t.Helper()
	var leader *server
	eventually(t, 60*time.Second, func() error {
		leader = nil
		names := map[string]bool{}
		for _, s := range among {
			l, err := s.api.Status().Leader()
			if err != nil || l == "" {
				return fmt.Errorf("%s knows no leader (%v)", s.name, err)
			}
			names[l] = true
		}
		if len(names) != 1 {
			return fmt.Errorf("servers disagree on the leader: %v", names)
		}
		for _, s := range among {
			if names[s.raftAddr()] {
				leader = s
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %v is not one of these servers", names)
		}
		// Outside data/, which holds only the writes the test checks.
		for _, s := range among {
			if _, err := s.api.KV().Put(&api.KVPair{Key: "probe/" + s.name, Value: []byte("1")}, nil); err != nil {
				return fmt.Errorf("write through %s: %w", s.name, err)
			}
		}
		return nil
	})
	return leader
}

// eventually polls cond until it returns nil, and fails t if it has not
// by the deadline.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

func since(t0 time.Time) time.Duration { return time.Since(t0).Round(time.Millisecond) }

// checkGoroutines fails t if, after all its other cleanups, goroutines it
// started are still running.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left, %d before the test:\n%s", runtime.NumGoroutine(), before, buf)
				return
			}
			<-time.After(50 * time.Millisecond)
		}
	})
}
