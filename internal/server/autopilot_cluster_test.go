package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// clusterBackend is gossip as a test sets it: every node of the cluster,
// alive unless the test says otherwise, and the stats of the running
// ones, read straight from their servers.
type clusterBackend struct {
	c *meshtest.Cluster

	mu     sync.Mutex
	status map[string]autopilot.NodeStatus // guarded by mu; by node ID, alive when absent
	left   []string                        // guarded by mu: force-left names
}

func (b *clusterBackend) setStatus(id string, s autopilot.NodeStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status[id] = s
}

func (b *clusterBackend) forceLeft() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.left)
}

func (b *clusterBackend) KnownServers() map[raft.ServerID]*autopilot.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[raft.ServerID]*autopilot.Server)
	for _, n := range b.c.Nodes {
		st, ok := b.status[n.ID]
		if !ok {
			st = autopilot.NodeAlive
		}
		out[raft.ServerID(n.ID)] = &autopilot.Server{ID: raft.ServerID(n.ID), Name: n.Name, Address: n.Addr,
			NodeStatus: st, Version: "test"}
	}
	return out
}

func (b *clusterBackend) FetchServerStats(_ context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := make(map[raft.ServerID]*autopilot.ServerStats)
	for _, n := range b.c.Nodes {
		if _, ok := servers[raft.ServerID(n.ID)]; !ok {
			continue
		}
		if s := n.Server(); s != nil {
			st := s.RaftStats()
			out[raft.ServerID(n.ID)] = &autopilot.ServerStats{LastContact: st.LastContact.D(), LastTerm: st.LastTerm, LastIndex: st.LastIndex}
		}
	}
	return out
}

func (b *clusterBackend) ForceLeave(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = append(b.left, name)
	return nil
}

// healthOf polls the leader's autopilot health until check accepts it.
func healthOf(t *testing.T, n *meshtest.Node, check func(*structs.AutopilotHealthReply) error) *structs.AutopilotHealthReply {
	t.Helper()
	var h *structs.AutopilotHealthReply
	meshtest.Eventually(t, 30*time.Second, func() error {
		var err error
		if h, err = n.Server().AutopilotHealth(t.Context()); err != nil {
			return err
		}
		return check(h)
	})
	return h
}

func serverHealth(h *structs.AutopilotHealthReply, id string) *structs.AutopilotServerHealth {
	for i := range h.Servers {
		if h.Servers[i].ID == id {
			return &h.Servers[i]
		}
	}
	return nil
}

// Autopilot follows leadership, sees a follower that stops answering as
// unhealthy at once, and removes it from raft (and forces it out of
// gossip) once gossip calls it failed and the configuration stored
// through raft lets it. Every goroutine it started ends with the servers
// (meshtest checks at cleanup). The backend leaves NodeType empty, as the
// agent's does: regression for raft-autopilot removing no failed voter
// at all when the servers it knows are not typed as voters.
func TestAutopilotInProcessCluster(t *testing.T) {
	c := meshtest.New(t, 3)
	b := &clusterBackend{c: c, status: make(map[string]autopilot.NodeStatus)}
	defaults := structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(500 * time.Millisecond),
		MaxTrailingLogs: 250}
	for _, n := range c.Nodes {
		err := n.Server().StartAutopilot(context.Background(), b, server.AutopilotOptions{Defaults: defaults,
			UpdateInterval: 50 * time.Millisecond, ReconcileInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
	}
	allHealthy := func(n int, tolerance int) func(*structs.AutopilotHealthReply) error {
		return func(h *structs.AutopilotHealthReply) error {
			if !h.Healthy || len(h.Servers) != n || h.FailureTolerance != tolerance {
				return fmt.Errorf("health %+v, want %d healthy servers, failure tolerance %d", h, n, tolerance)
			}
			return nil
		}
	}
	first := c.Leader(t)
	healthOf(t, first, allHealthy(3, 1))

	// Leadership moves: so does autopilot.
	if err := first.Server().TransferLeader(""); err != nil {
		t.Fatalf("TransferLeader: %v", err)
	}
	leader := c.LeaderExcept(t, first)
	h := healthOf(t, leader, allHealthy(3, 1))
	if s := serverHealth(h, leader.ID); s == nil || !s.Leader {
		t.Errorf("new leader's health lists it as %+v, want the leader", s)
	}
	meshtest.Eventually(t, 30*time.Second, func() error {
		if _, err := first.Server().AutopilotHealth(t.Context()); !errors.Is(err, server.ErrAutopilotNotLeader) {
			return fmt.Errorf("old leader's health: %v, want ErrAutopilotNotLeader", err)
		}
		return nil
	})

	// An operator turns cleanup off, through raft.
	off := defaults
	off.CleanupDeadServers = false
	if ok, err := leader.Server().AutopilotSetConfiguration(&off, false, 0); !ok || err != nil {
		t.Fatalf("AutopilotSetConfiguration = %v, %v", ok, err)
	}
	var victim *meshtest.Node
	for _, n := range c.Nodes {
		if n != leader {
			victim = n
			break
		}
	}
	c.Kill(victim)
	// Silent, still alive to gossip: unhealthy within the last contact
	// threshold, and the cluster can lose no other server.
	healthOf(t, leader, func(h *structs.AutopilotHealthReply) error {
		s := serverHealth(h, victim.ID)
		if s == nil || s.Healthy || h.Healthy || h.FailureTolerance != 0 || s.SerfStatus != "alive" {
			return fmt.Errorf("health %+v, want %s unhealthy but alive, failure tolerance 0", h, victim.Name)
		}
		return nil
	})
	b.setStatus(victim.ID, autopilot.NodeFailed)
	healthOf(t, leader, func(h *structs.AutopilotHealthReply) error {
		if s := serverHealth(h, victim.ID); s == nil || s.SerfStatus != "failed" {
			return fmt.Errorf("health %+v, want %s failed", h, victim.Name)
		}
		return nil
	})
	if cfg, err := leader.Server().Configuration(); err != nil || len(cfg.Servers) != 3 {
		t.Fatalf("raft configuration with cleanup off = %+v, %v; want 3 servers", cfg, err)
	}

	// Cleanup on: the failed server goes, from raft and from gossip.
	if ok, err := leader.Server().AutopilotSetConfiguration(&defaults, false, 0); !ok || err != nil {
		t.Fatalf("AutopilotSetConfiguration = %v, %v", ok, err)
	}
	meshtest.Eventually(t, 30*time.Second, func() error {
		cfg, err := leader.Server().Configuration()
		if err != nil {
			return err
		}
		for _, s := range cfg.Servers {
			if s.ID == victim.ID {
				return fmt.Errorf("%s is still in the raft configuration %+v", victim.Name, cfg.Servers)
			}
		}
		if left := b.forceLeft(); !slices.Equal(left, []string{victim.Name}) {
			return fmt.Errorf("force-left %v, want [%s]", left, victim.Name)
		}
		return nil
	})
	healthOf(t, leader, allHealthy(2, 0))
}
