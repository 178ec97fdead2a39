package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func startServer(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := New(Config{NodeID: "11111111-2222-3333-4444-555555555555", NodeName: "n1", DataDir: dir}, state.New())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Server, key, val string) {
	t.Helper()
	if ok, err := s.KVSApply(state.KVSet, &structs.DirEntry{Key: key, Value: []byte(val)}); err != nil || !ok {
		t.Fatalf("put %s: %v %v", key, ok, err)
	}
}

// TestRestoreSnapshotThenLog restarts a server whose state is split
// between a snapshot and log entries written after it: both must be back.
func TestRestoreSnapshotThenLog(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	for i := 0; i < 100; i++ {
		put(t, s, fmt.Sprintf("snap/%03d", i), "before")
	}
	if _, err := s.Apply(fsm.RegisterRequestType, &structs.RegisterRequest{
		Node: "n2", Address: "127.0.0.2",
		Service: &structs.NodeService{ID: "web1", Service: "web", Port: 80},
		Check:   &structs.HealthCheck{CheckID: "c1", ServiceID: "web1", Status: structs.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	for i := 0; i < 10; i++ {
		put(t, s, fmt.Sprintf("log/%03d", i), "after")
	}
	put(t, s, "snap/000", "overwritten-after")
	before := s.Store().LatestIndex()
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, dir)
	defer s2.Shutdown()
	// The new leader applies the old log once it commits its first entry.
	if err := s2.raft.Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	r := s2.Store().Read()
	defer r.Abort()
	_, snap, _ := r.KVList(memdb.NewWatchSet(), "snap/")
	_, logged, _ := r.KVList(memdb.NewWatchSet(), "log/")
	if len(snap) != 100 || len(logged) != 10 {
		t.Fatalf("after restart: %d snap keys, %d log keys; want 100 and 10", len(snap), len(logged))
	}
	if string(snap[0].Value) != "overwritten-after" {
		t.Errorf("snap/000 = %q, want the write made after the snapshot", snap[0].Value)
	}
	_, entries, _ := r.CheckServiceNodes(nil, "web")
	if len(entries) != 1 || len(entries[0].Checks) != 1 || entries[0].Checks[0].Status != structs.HealthPassing {
		t.Fatalf("after restart: web entries = %+v", entries)
	}
	if got := s2.Store().LatestIndex(); got < before {
		t.Errorf("latest index after restart = %d, want >= %d", got, before)
	}
}
