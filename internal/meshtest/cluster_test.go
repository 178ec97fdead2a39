package meshtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func put(t *testing.T, n *Node, key, val string) {
	t.Helper()
	ok, err := n.Server().KVSApply(state.KVSet, &structs.DirEntry{Key: key, Value: []byte(val)})
	if err != nil || !ok {
		t.Fatalf("put %s on %s: %v %v", key, n.Name, ok, err)
	}
}

func get(n *Node, key string) string {
	r := n.Store().Read()
	defer r.Abort()
	_, e, _ := r.KVGet(memdb.NewWatchSet(), key)
	if e == nil {
		return ""
	}
	return string(e.Value)
}

func keys(n *Node, prefix string) int {
	r := n.Store().Read()
	defer r.Abort()
	_, es, _ := r.KVList(memdb.NewWatchSet(), prefix)
	return len(es)
}

func TestOneLeaderReplicatesToAll(t *testing.T) {
	c := New(t, 3)
	leader := c.Leader(t)
	for i := range 50 {
		put(t, leader, fmt.Sprintf("k/%02d", i), fmt.Sprint(i))
	}
	c.WaitApplied(t, leader.Store().LatestIndex())
	for _, n := range c.Nodes {
		if got := keys(n, "k/"); got != 50 {
			t.Errorf("%s has %d keys, want 50", n.Name, got)
		}
	}
	// A follower refuses writes rather than applying them alone.
	for _, n := range c.Nodes {
		if n == leader {
			continue
		}
		_, err := n.Server().KVSApply(state.KVSet, &structs.DirEntry{Key: "x", Value: []byte("y")})
		if !errors.Is(err, server.ErrNotLeader) {
			t.Errorf("write on follower %s: err = %v, want ErrNotLeader", n.Name, err)
		}
	}
}

// Killing the leader elects another that has every acknowledged write; the
// old leader, restarted from its data dir, catches up as a follower.
func TestLeaderKillAndRejoin(t *testing.T) {
	c := New(t, 3)
	old := c.Leader(t)
	for i := range 30 {
		put(t, old, fmt.Sprintf("before/%02d", i), "v")
	}
	c.Kill(old)
	next := c.LeaderExcept(t, old)
	// The new leader has every acknowledged entry in its log; it applies
	// the last ones once it commits an entry of its own term.
	Eventually(t, 30e9, func() error {
		if got := keys(next, "before/"); got != 30 {
			return fmt.Errorf("new leader %s has applied %d acknowledged keys, want 30", next.Name, got)
		}
		return nil
	})
	for i := range 20 {
		put(t, next, fmt.Sprintf("after/%02d", i), "v")
	}
	c.Restart(old)
	c.WaitApplied(t, next.Store().LatestIndex())
	if got := keys(old, "after/"); got != 20 {
		t.Errorf("restarted %s has %d of the writes made while it was down, want 20", old.Name, got)
	}
	if old.Server().IsLeader() && next.Server().IsLeader() {
		t.Error("two leaders after the rejoin")
	}
}

// A leader cut off from the majority stops accepting writes; the majority
// elects a leader and goes on; after healing, the old leader follows and
// has the majority's writes, and none of its own refused ones.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	c := New(t, 3)
	old := c.Leader(t)
	put(t, old, "shared", "1")
	c.WaitApplied(t, old.Store().LatestIndex())

	c.Partition(old)
	next := c.LeaderExcept(t, old)
	_, err := old.Server().KVSApply(state.KVSet, &structs.DirEntry{Key: "minority", Value: []byte("lost")})
	if err == nil {
		t.Fatal("the partitioned old leader accepted a write")
	}
	if !errors.Is(err, server.ErrNotLeader) && !errors.Is(err, server.ErrLeadershipLost) {
		t.Errorf("minority write: err = %v, want ErrNotLeader or ErrLeadershipLost", err)
	}
	put(t, next, "shared", "2")

	c.Heal()
	c.WaitApplied(t, next.Store().LatestIndex())
	Eventually(t, 30e9, func() error {
		if old.Server().IsLeader() && next.Server().IsLeader() {
			return errors.New("two leaders")
		}
		if v := get(old, "shared"); v != "2" {
			return fmt.Errorf("old leader has shared=%q, want 2", v)
		}
		return nil
	})
	for _, n := range c.Nodes {
		if v := get(n, "minority"); v != "" {
			t.Errorf("%s has the write the minority refused", n.Name)
		}
	}
}

// A lock held through a session stays held, by the same session, across a
// failover: another session cannot take it.
func TestLockSurvivesFailover(t *testing.T) {
	c := New(t, 3)
	old := c.Leader(t)
	node := &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1",
		Check: &structs.HealthCheck{CheckID: structs.SerfCheckID, Status: structs.HealthPassing}}
	if _, err := old.Server().Apply(fsm.RegisterRequestType, node); err != nil {
		t.Fatal(err)
	}
	s1, err := old.Server().SessionCreate(&structs.Session{Node: "n1", NodeChecks: []string{structs.SerfCheckID}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := old.Server().KVSApply(state.KVLock, &structs.DirEntry{Key: "lock", Session: s1}); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	c.Kill(old)
	next := c.LeaderExcept(t, old)
	s2, err := next.Server().SessionCreate(&structs.Session{Node: "n1", NodeChecks: []string{structs.SerfCheckID}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := next.Server().KVSApply(state.KVLock, &structs.DirEntry{Key: "lock", Session: s2}); err != nil || ok {
		t.Fatalf("second session took the lock after failover: %v %v", ok, err)
	}
	r := next.Store().Read()
	_, e, _ := r.KVGet(memdb.NewWatchSet(), "lock")
	r.Abort()
	if e == nil || e.Session != s1 {
		t.Fatalf("lock after failover = %+v, want held by %s", e, s1)
	}
}

// Consistent reads are served only by a leader that has applied what its
// predecessors committed; followers refuse them.
func TestConsistentReadsNeedAReadyLeader(t *testing.T) {
	c := New(t, 3)
	leader := c.Leader(t)
	Eventually(t, 30e9, func() error { return leader.Server().VerifyLeader() })
	for _, n := range c.Nodes {
		if n != leader {
			if err := n.Server().VerifyLeader(); !errors.Is(err, server.ErrNotLeader) {
				t.Errorf("follower %s: VerifyLeader = %v, want ErrNotLeader", n.Name, err)
			}
		}
	}
	c.Partition(leader)
	Eventually(t, 30e9, func() error {
		if err := leader.Server().VerifyLeader(); err == nil {
			return errors.New("a partitioned leader still confirms its leadership")
		}
		return nil
	})
}

// bootstrap_expect: servers started without a cluster form one when each
// is bootstrapped with the same set; a server added later by the leader
// becomes a voter and catches up.
func TestBootstrapTogetherThenAddVoter(t *testing.T) {
	c := NewUnbootstrapped(t, 3)
	for _, n := range c.Nodes {
		if n.Server().HasPeers() {
			t.Fatalf("%s has a configuration before bootstrap", n.Name)
		}
	}
	peers := c.Peers()
	for _, n := range c.Nodes {
		if err := n.Server().BootstrapCluster(peers); err != nil {
			t.Fatalf("bootstrap %s: %v", n.Name, err)
		}
	}
	leader := c.Leader(t)
	put(t, leader, "k", "v")
	// Bootstrapping again, as a restarted server would, is harmless.
	if err := leader.Server().BootstrapCluster(peers); err != nil {
		t.Errorf("second bootstrap: %v", err)
	}

	late := c.Add()
	if err := leader.Server().AddVoter(server.Peer{ID: late.ID, Address: string(late.Addr)}); err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(t, leader.Store().LatestIndex())
	if v := get(late, "k"); v != "v" {
		t.Errorf("late server has k=%q, want v", v)
	}
	cfg, err := leader.Server().Configuration()
	if err != nil || len(cfg.Servers) != 4 {
		t.Fatalf("configuration = %+v, %v; want 4 voters", cfg, err)
	}
	if err := leader.Server().AddVoter(server.Peer{ID: late.ID, Address: string(late.Addr)}); err != nil {
		t.Errorf("adding the same voter again: %v", err)
	}
}
