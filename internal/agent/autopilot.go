package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// startAutopilot has the server run autopilot whenever it leads, with
// this agent's gossip pool and RPC client as its view of the other
// servers, until the agent closes. A client agent has none.
func (a *Agent) startAutopilot() error {
	if a.srv == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		// Autopilot stops before the pool it reads is shut down.
		<-a.done
		cancel()
	}()
	err := a.srv.StartAutopilot(ctx, autopilotBackend{a}, server.AutopilotOptions{
		Defaults: autopilotDefaults(a.cfg.Autopilot),
	})
	if err != nil {
		return fmt.Errorf("agent: autopilot: %w", err)
	}
	return nil
}

// autopilotDefaults is the configuration the agent config's autopilot
// block gives, in force until an operator stores one.
func autopilotDefaults(c config.AutopilotConfig) structs.AutopilotConfig {
	return structs.AutopilotConfig{
		CleanupDeadServers:      c.CleanupDeadServers,
		LastContactThreshold:    structs.Duration(c.LastContactThreshold),
		MaxTrailingLogs:         c.MaxTrailingLogs,
		MinQuorum:               c.MinQuorum,
		ServerStabilizationTime: structs.Duration(c.ServerStabilizationTime),
	}
}

// autopilotBackend is the agent's side of autopilot: the servers its LAN
// pool knows, their stats over the internal RPC, and force-leave.
type autopilotBackend struct{ a *Agent }

// KnownServers implements server.AutopilotBackend.
func (b autopilotBackend) KnownServers() map[raft.ServerID]*autopilot.Server {
	return knownServers(b.a.lan.Members(), b.a.cfg.Datacenter)
}

// knownServers maps the server members of datacenter dc to autopilot's
// servers, by raft ID. When two members claim one ID (a server that came
// back under another name), the live one wins.
func knownServers(members []membership.Member, dc string) map[raft.ServerID]*autopilot.Server {
	out := make(map[raft.ServerID]*autopilot.Server)
	for _, m := range members {
		p, ok := serverPeer(m, dc)
		if !ok || p.ID == "" {
			continue
		}
		srv := &autopilot.Server{
			ID: raft.ServerID(p.ID), Name: m.Name, Address: raft.ServerAddress(p.Address),
			NodeStatus: nodeStatus(m.Status), Version: m.Tags["build"], RaftVersion: 3,
			Meta: map[string]string{},
		}
		if old, dup := out[srv.ID]; dup && old.NodeStatus == autopilot.NodeAlive {
			continue
		}
		out[srv.ID] = srv
	}
	return out
}

// nodeStatus maps a gossip status to autopilot's. A leaving server still
// answers: it is alive until it has left, and the leader removes it from
// raft then (reconcileMember).
func nodeStatus(s membership.MemberStatus) autopilot.NodeStatus {
	switch s {
	case membership.StatusAlive, membership.StatusLeaving:
		return autopilot.NodeAlive
	case membership.StatusFailed:
		return autopilot.NodeFailed
	case membership.StatusLeft:
		return autopilot.NodeLeft
	}
	return autopilot.NodeUnknown
}

// FetchServerStats implements server.AutopilotBackend: it asks every
// server at once, over the internal RPC, and returns the answers that
// came within ctx.
func (b autopilotBackend) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	if b.a.rpcClient == nil {
		return out // dev mode: no other server to ask
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := fetchRaftStats(ctx, b.a.rpcClient, string(srv.Address))
			if err != nil {
				b.a.logger.Debug("autopilot: no raft stats from a server", "server", srv.Name, "address", srv.Address, "error", err)
				return
			}
			mu.Lock()
			out[id] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// fetchRaftStats asks the server at addr for its raft stats.
func fetchRaftStats(ctx context.Context, c *rpc.Client, addr string) (*autopilot.ServerStats, error) {
	resp, err := c.ForwardHTTP(ctx, addr, &rpc.HTTPRequest{Method: http.MethodGet, Path: httpapi.RaftStatsPath,
		Header: map[string][]string{httpapi.ForwardedHeader: {"1"}}})
	if err != nil {
		return nil, err
	}
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("raft stats from %s: status %d: %s", addr, resp.Status, resp.Body)
	}
	var st structs.RaftStats
	if err := json.Unmarshal(resp.Body, &st); err != nil {
		return nil, fmt.Errorf("raft stats from %s: %w", addr, err)
	}
	return &autopilot.ServerStats{LastContact: st.LastContact.D(), LastTerm: st.LastTerm, LastIndex: st.LastIndex}, nil
}

// ForceLeave implements server.AutopilotBackend: the server leaves the
// LAN pool and, as "<name>.<dc>", the WAN pool.
func (b autopilotBackend) ForceLeave(name string) error {
	return b.a.ForceLeave(name, false)
}

var _ server.AutopilotBackend = autopilotBackend{}
