package server

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// loneBackend is the gossip view of a lone server: itself, alive.
type loneBackend struct {
	mu     sync.Mutex
	left   []string // guarded by mu
	server autopilot.Server
}

func (b *loneBackend) KnownServers() map[raft.ServerID]*autopilot.Server {
	s := b.server
	return map[raft.ServerID]*autopilot.Server{s.ID: &s}
}

func (b *loneBackend) FetchServerStats(context.Context, map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	return nil
}

func (b *loneBackend) ForceLeave(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = append(b.left, name)
	return nil
}

// A lone leader runs autopilot: it reports itself healthy, serves the
// agent's defaults until a configuration is stored, and stops with the
// server.
func TestAutopilotOnLoneServer(t *testing.T) {
	s := startInMemory(t)
	if _, err := s.AutopilotHealth(t.Context()); !errors.Is(err, ErrAutopilotNotRunning) {
		t.Errorf("health before StartAutopilot: %v, want ErrAutopilotNotRunning", err)
	}
	if got, want := *s.AutopilotConfiguration(), DefaultAutopilotConfig(); got != want {
		t.Errorf("configuration before StartAutopilot = %+v, want Consul's defaults %+v", got, want)
	}
	defaults := structs.AutopilotConfig{CleanupDeadServers: false, LastContactThreshold: structs.Duration(time.Second),
		MaxTrailingLogs: 9, ServerStabilizationTime: structs.Duration(time.Second)}
	b := &loneBackend{server: autopilot.Server{ID: testNodeID, Name: "n1", Address: "n1", NodeStatus: autopilot.NodeAlive, Version: "v1"}}
	if err := s.StartAutopilot(context.Background(), b, AutopilotOptions{Defaults: defaults}); err != nil {
		t.Fatal(err)
	}
	if err := s.StartAutopilot(context.Background(), b, AutopilotOptions{}); err == nil {
		t.Error("a second StartAutopilot succeeded")
	}
	if got := *s.AutopilotConfiguration(); got != defaults {
		t.Errorf("configuration = %+v, want the agent's defaults %+v", got, defaults)
	}
	h, err := s.AutopilotHealth(t.Context())
	if err != nil {
		t.Fatalf("AutopilotHealth: %v", err)
	}
	if !h.Healthy || h.FailureTolerance != 0 || len(h.Servers) != 1 {
		t.Fatalf("health = %+v, want one healthy server and no failure tolerance", h)
	}
	srv := h.Servers[0]
	if srv.ID != testNodeID || srv.Name != "n1" || srv.SerfStatus != "alive" || srv.Version != "v1" ||
		!srv.Leader || !srv.Voter || !srv.Healthy || srv.LastContact != 0 || srv.LastTerm == 0 || srv.LastIndex == 0 {
		t.Errorf("server health = %+v", srv)
	}
	st, err := s.AutopilotState(t.Context())
	if err != nil {
		t.Fatalf("AutopilotState: %v", err)
	}
	if !st.Healthy || st.Leader != testNodeID || !reflect.DeepEqual(st.Voters, []string{testNodeID}) ||
		st.Servers[testNodeID] == nil || st.Servers[testNodeID].Status != "leader" || st.Servers[testNodeID].NodeType != "voter" {
		t.Errorf("state = %+v", st)
	}

	set := defaults
	set.MinQuorum = 2
	if ok, err := s.AutopilotSetConfiguration(&set, true, 1); ok || err != nil {
		t.Errorf("cas against a wrong index = %v, %v; want false", ok, err)
	}
	if ok, err := s.AutopilotSetConfiguration(&set, true, 0); !ok || err != nil {
		t.Fatalf("cas 0 while unset = %v, %v; want true", ok, err)
	}
	got := s.AutopilotConfiguration()
	if got.MinQuorum != 2 || got.ModifyIndex == 0 || got.CreateIndex != got.ModifyIndex {
		t.Errorf("stored configuration = %+v", got)
	}

	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartAutopilot(context.Background(), b, AutopilotOptions{}); err == nil {
		t.Error("StartAutopilot after Shutdown succeeded")
	}
}

// A server that stops answering keeps its last term and index, and its
// last contact grows by the time since its last answer, so that it turns
// unhealthy without waiting for gossip to call it failed.
func TestAutopilotStatsOfSilentServer(t *testing.T) {
	d := &autopilotDelegate{localID: "self", seen: make(map[raft.ServerID]seenStats)}
	servers := map[raft.ServerID]*autopilot.Server{"a": {ID: "a"}, "b": {ID: "b"}}
	t0 := time.Unix(1000, 0)
	got := d.mergeStats(t0, servers, map[raft.ServerID]*autopilot.ServerStats{
		"a": {LastContact: 5 * time.Millisecond, LastTerm: 2, LastIndex: 40},
	})
	if len(got) != 1 || *got["a"] != (autopilot.ServerStats{LastContact: 5 * time.Millisecond, LastTerm: 2, LastIndex: 40}) {
		t.Fatalf("first round = %v, want a's answer only (b never answered)", got)
	}
	got = d.mergeStats(t0.Add(3*time.Second), servers, nil)
	if want := (autopilot.ServerStats{LastContact: 3*time.Second + 5*time.Millisecond, LastTerm: 2, LastIndex: 40}); got["a"] == nil || *got["a"] != want {
		t.Errorf("a silent for 3s: %+v, want %+v", got["a"], want)
	}
	// Growth is measured from the last answer, not the last round.
	got = d.mergeStats(t0.Add(4*time.Second), servers, nil)
	if want := 4*time.Second + 5*time.Millisecond; got["a"] == nil || got["a"].LastContact != want {
		t.Errorf("a silent for 4s: %+v, want last contact %v", got["a"], want)
	}
	// A server no longer asked about is forgotten.
	d.mergeStats(t0.Add(5*time.Second), map[raft.ServerID]*autopilot.Server{"b": {ID: "b"}}, nil)
	if got := d.mergeStats(t0.Add(6*time.Second), servers, nil); got["a"] != nil {
		t.Errorf("a forgotten, then silent: %+v, want no stats", got["a"])
	}
}

func TestAutopilotConfigMapping(t *testing.T) {
	c := &structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(time.Second),
		MaxTrailingLogs: 3, MinQuorum: 5, ServerStabilizationTime: structs.Duration(time.Minute), RedundancyZoneTag: "z"}
	want := autopilot.Config{CleanupDeadServers: true, LastContactThreshold: time.Second, MaxTrailingLogs: 3,
		MinQuorum: 5, ServerStabilizationTime: time.Minute}
	if got := toAutopilotConfig(c); !reflect.DeepEqual(*got, want) {
		t.Errorf("toAutopilotConfig = %+v, want %+v", *got, want)
	}
}

// The health reply lists the leader first, then by name, and names a
// server gossip does not know "none", as serf would.
func TestAutopilotReplies(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	st := &autopilot.State{
		Healthy: false, FailureTolerance: 0, Leader: "id-b", Voters: []raft.ServerID{"id-b", "id-a"},
		Servers: map[raft.ServerID]*autopilot.ServerState{
			"id-a": {Server: autopilot.Server{ID: "id-a", Name: "a", Address: "10.0.0.1:8300", NodeStatus: autopilot.NodeFailed, Version: "1"},
				State: autopilot.RaftVoter, Stats: autopilot.ServerStats{LastContact: time.Second, LastTerm: 3, LastIndex: 9},
				Health: autopilot.ServerHealth{Healthy: false, StableSince: since}},
			"id-b": {Server: autopilot.Server{ID: "id-b", Name: "b", Address: "10.0.0.2:8300", NodeStatus: autopilot.NodeAlive, NodeType: autopilot.NodeVoter},
				State: autopilot.RaftLeader, Stats: autopilot.ServerStats{LastTerm: 3, LastIndex: 10},
				Health: autopilot.ServerHealth{Healthy: true, StableSince: since}},
			"id-c": {Server: autopilot.Server{ID: "id-c", Name: "c", NodeStatus: autopilot.NodeUnknown},
				State: autopilot.RaftNonVoter},
		},
	}
	h := healthReply(st)
	var names []string
	for _, s := range h.Servers {
		names = append(names, s.Name)
	}
	if !reflect.DeepEqual(names, []string{"b", "a", "c"}) || h.Healthy || h.FailureTolerance != 0 {
		t.Errorf("health = %+v, want servers b, a, c and unhealthy", h)
	}
	wantA := structs.AutopilotServerHealth{ID: "id-a", Name: "a", Address: "10.0.0.1:8300", SerfStatus: "failed", Version: "1",
		LastContact: structs.Duration(time.Second), LastTerm: 3, LastIndex: 9, Voter: true, StableSince: since.UTC()}
	if h.Servers[1] != wantA {
		t.Errorf("health of a = %+v, want %+v", h.Servers[1], wantA)
	}
	if c := h.Servers[2]; c.SerfStatus != "none" || c.Voter || c.Leader {
		t.Errorf("health of c = %+v, want serf status none, not a voter", c)
	}
	r := stateReply(st)
	if r.Leader != "id-b" || !reflect.DeepEqual(r.Voters, []string{"id-b", "id-a"}) || len(r.Servers) != 3 {
		t.Fatalf("state = %+v", r)
	}
	if b := r.Servers["id-b"]; b.Status != "leader" || b.NodeType != "voter" || b.NodeStatus != "alive" || !b.Healthy || b.Meta == nil {
		t.Errorf("state of b = %+v", b)
	}
	if c := r.Servers["id-c"]; c.Status != "non-voter" || c.NodeStatus != "none" {
		t.Errorf("state of c = %+v", c)
	}
}
