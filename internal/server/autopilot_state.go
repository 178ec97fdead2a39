package server

import (
	"sort"

	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// healthReply turns an autopilot state into the body of
// /v1/operator/autopilot/health: the leader first, then by name.
func healthReply(st *autopilot.State) *structs.AutopilotHealthReply {
	out := &structs.AutopilotHealthReply{
		Healthy: st.Healthy, FailureTolerance: st.FailureTolerance,
		Servers: make([]structs.AutopilotServerHealth, 0, len(st.Servers)),
	}
	for _, ss := range st.Servers {
		out.Servers = append(out.Servers, structs.AutopilotServerHealth{
			ID: string(ss.Server.ID), Name: ss.Server.Name, Address: string(ss.Server.Address),
			SerfStatus: serfStatus(ss.Server.NodeStatus), Version: ss.Server.Version,
			Leader:      ss.State == autopilot.RaftLeader,
			LastContact: structs.Duration(ss.Stats.LastContact),
			LastTerm:    ss.Stats.LastTerm, LastIndex: ss.Stats.LastIndex,
			Healthy: ss.Health.Healthy, Voter: ss.HasVotingRights(),
			StableSince: ss.Health.StableSince.UTC(),
		})
	}
	sort.Slice(out.Servers, func(i, j int) bool {
		a, b := out.Servers[i], out.Servers[j]
		if a.Leader != b.Leader {
			return a.Leader
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})
	return out
}

// stateReply turns an autopilot state into the body of
// /v1/operator/autopilot/state. Without redundancy zones (an Enterprise
// feature) the optimistic failure tolerance is the failure tolerance.
func stateReply(st *autopilot.State) *structs.AutopilotState {
	out := &structs.AutopilotState{
		Healthy: st.Healthy, FailureTolerance: st.FailureTolerance,
		OptimisticFailureTolerance: st.FailureTolerance,
		Servers:                    make(map[string]*structs.AutopilotServer, len(st.Servers)),
		Leader:                     string(st.Leader),
		Voters:                     make([]string, 0, len(st.Voters)),
	}
	for _, id := range st.Voters {
		out.Voters = append(out.Voters, string(id))
	}
	for id, ss := range st.Servers {
		meta := make(map[string]string, len(ss.Server.Meta))
		for k, v := range ss.Server.Meta {
			meta[k] = v
		}
		out.Servers[string(id)] = &structs.AutopilotServer{
			ID: string(ss.Server.ID), Name: ss.Server.Name, Address: string(ss.Server.Address),
			NodeStatus: serfStatus(ss.Server.NodeStatus), Version: ss.Server.Version,
			LastContact: structs.Duration(ss.Stats.LastContact),
			LastTerm:    ss.Stats.LastTerm, LastIndex: ss.Stats.LastIndex,
			Healthy: ss.Health.Healthy, StableSince: ss.Health.StableSince.UTC(),
			Status: string(ss.State), Meta: meta, NodeType: string(ss.Server.NodeType),
		}
	}
	return out
}

// serfStatus names a node status as gossip does: alive, failed, left, or
// none for one gossip does not know.
func serfStatus(s autopilot.NodeStatus) string {
	switch s {
	case autopilot.NodeAlive, autopilot.NodeFailed, autopilot.NodeLeft:
		return string(s)
	}
	return "none"
}
