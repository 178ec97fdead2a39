package rpc

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM records the commands it applies.
type listFSM struct {
	mu      sync.Mutex
	applied []string // guarded by mu
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return nil
}

func (f *listFSM) has(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.applied, cmd)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.applied)), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = nil
	if len(b) > 0 {
		f.applied = strings.Split(string(b), "\n")
	}
	return nil
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := io.WriteString(sink, strings.Join(s, "\n")); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// testWriter sends raft's logs to the test log, shown on failure or -v.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type raftNode struct {
	id   raft.ServerID
	mux  *Mux
	fsm  *listFSM
	raft *raft.Raft
}

func TestRaftClusterOverMux(t *testing.T) {
	checkGoroutines(t)
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Output: testWriter{t}, Level: hclog.Info})

	nodes := make([]*raftNode, 3)
	var servers []raft.Server
	for i := range nodes {
		n := &raftNode{id: raft.ServerID(fmt.Sprintf("node%d", i)), mux: startMux(t, MuxConfig{}), fsm: &listFSM{}}
		nodes[i] = n
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: raftAddr(n.mux.Addr())})
	}
	for _, n := range nodes {
		conf := raft.DefaultConfig()
		conf.LocalID = n.id
		conf.Logger = logger.Named(string(n.id))
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		trans := n.mux.RaftTransport(3, 2*time.Second, logger.Named(string(n.id)+"-net"))
		if got, want := trans.LocalAddr(), raftAddr(n.mux.Addr()); got != want {
			t.Fatalf("transport address %s, want the mux's %s", got, want)
		}
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, n.fsm, store, store, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		n.raft = r
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("%s: shutdown: %v", n.id, err)
			}
		})
	}

	leader := waitForLeader(t, nodes)
	apply(t, nodes, "first")
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s to apply %q", n.id, "first"), func() bool { return n.fsm.has("first") })
	}

	// The leader's port goes away: the two others elect one of them and
	// carry on.
	if err := leader.mux.Close(); err != nil {
		t.Fatal(err)
	}
	var rest []*raftNode
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	waitForLeader(t, rest)
	apply(t, rest, "second")
	for _, n := range rest {
		waitFor(t, fmt.Sprintf("%s to apply %q", n.id, "second"), func() bool { return n.fsm.has("second") })
	}
	if leader.fsm.has("second") {
		t.Errorf("%s applied %q while cut off", leader.id, "second")
	}
}

func waitForLeader(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	var leader *raftNode
	waitFor(t, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// apply commits cmd through whichever of nodes leads, retrying while
// leadership moves.
func apply(t *testing.T, nodes []*raftNode, cmd string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leader := waitForLeader(t, nodes)
		err := leader.raft.Apply([]byte(cmd), 2*time.Second).Error()
		if err == nil {
			return
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			t.Fatalf("apply %q on %s: %v", cmd, leader.id, err)
		}
	}
}
