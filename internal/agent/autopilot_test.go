package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func serverMember(name, id, addr, dc string, status membership.MemberStatus) membership.Member {
	return membership.Member{Name: name, Addr: addr, Status: status, Tags: map[string]string{
		tagRole: roleServer, tagPort: "8300", membership.TagDatacenter: dc, membership.TagNodeID: id, "build": "1.2.3"}}
}

// Autopilot knows the servers of this datacenter that gossip knows, by
// raft ID and raft address, with their gossip status mapped to its own.
func TestKnownServers(t *testing.T) {
	client := serverMember("client", "id-client", "10.0.0.9", "dc1", membership.StatusAlive)
	client.Tags[tagRole] = roleClient
	noPort := serverMember("no-port", "id-np", "10.0.0.8", "dc1", membership.StatusAlive)
	delete(noPort.Tags, tagPort)
	members := []membership.Member{
		serverMember("s1", "id-1", "10.0.0.1", "dc1", membership.StatusAlive),
		serverMember("s2", "id-2", "10.0.0.2", "dc1", membership.StatusFailed),
		serverMember("s3", "id-3", "10.0.0.3", "dc1", membership.StatusLeft),
		serverMember("s4", "id-4", "10.0.0.4", "dc1", membership.StatusLeaving),
		serverMember("s5", "id-5", "10.0.0.5", "dc1", membership.StatusNone),
		serverMember("other-dc", "id-6", "10.0.1.1", "dc2", membership.StatusAlive),
		serverMember("no-id", "", "10.0.0.7", "dc1", membership.StatusAlive),
		client, noPort,
		// The same server back under a new name: the live entry wins,
		// whichever comes first.
		serverMember("s7-old", "id-7", "10.0.0.70", "dc1", membership.StatusFailed),
		serverMember("s7-new", "id-7", "10.0.0.71", "dc1", membership.StatusAlive),
		serverMember("s8-new", "id-8", "10.0.0.81", "dc1", membership.StatusAlive),
		serverMember("s8-old", "id-8", "10.0.0.80", "dc1", membership.StatusFailed),
	}
	srv := func(id, name, addr string, st autopilot.NodeStatus) *autopilot.Server {
		return &autopilot.Server{ID: raft.ServerID(id), Name: name, Address: raft.ServerAddress(addr + ":8300"),
			NodeStatus: st, Version: "1.2.3", RaftVersion: 3, Meta: map[string]string{}}
	}
	want := map[raft.ServerID]*autopilot.Server{
		"id-1": srv("id-1", "s1", "10.0.0.1", autopilot.NodeAlive),
		"id-2": srv("id-2", "s2", "10.0.0.2", autopilot.NodeFailed),
		"id-3": srv("id-3", "s3", "10.0.0.3", autopilot.NodeLeft),
		"id-4": srv("id-4", "s4", "10.0.0.4", autopilot.NodeAlive),
		"id-5": srv("id-5", "s5", "10.0.0.5", autopilot.NodeUnknown),
		"id-7": srv("id-7", "s7-new", "10.0.0.71", autopilot.NodeAlive),
		"id-8": srv("id-8", "s8-new", "10.0.0.81", autopilot.NodeAlive),
	}
	got := knownServers(members, "dc1")
	if len(got) != len(want) {
		t.Errorf("got %d servers, want %d", len(got), len(want))
	}
	for id, w := range want {
		if g := got[id]; g == nil || !reflect.DeepEqual(*g, *w) {
			t.Errorf("server %s = %+v, want %+v", id, g, w)
		}
	}
}

// Until an operator stores a configuration, the agent config's autopilot
// block is the one in force.
func TestAutopilotDefaults(t *testing.T) {
	got := autopilotDefaults(config.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: 300 * time.Millisecond,
		MaxTrailingLogs: 12, MinQuorum: 3, ServerStabilizationTime: 4 * time.Second})
	want := structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(300 * time.Millisecond),
		MaxTrailingLogs: 12, MinQuorum: 3, ServerStabilizationTime: structs.Duration(4 * time.Second)}
	if got != want {
		t.Errorf("autopilotDefaults = %+v, want %+v", got, want)
	}
}
