package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// rawHealth gets /v1/operator/autopilot/health from m with its status
// code, which the client hides (it takes 200 and 429 alike).
func rawHealth(m *member) (int, *api.OperatorHealthReply, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + m.addr() + "/v1/operator/autopilot/health")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	var h api.OperatorHealthReply
	if err := json.Unmarshal(b, &h); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("status %d, body %q: %w", resp.StatusCode, b, err)
	}
	return resp.StatusCode, &h, nil
}

func healthOf(h *api.OperatorHealthReply, name string) *api.ServerHealth {
	for i := range h.Servers {
		if h.Servers[i].Name == name {
			return &h.Servers[i]
		}
	}
	return nil
}

// raftServers returns the raft IDs of the servers in m's raft
// configuration.
func raftServers(m *member, t *testing.T) (map[string]bool, error) {
	cfg, err := m.client(t).Operator().RaftGetConfiguration(nil)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, s := range cfg.Servers {
		out[s.ID] = true
	}
	return out, nil
}

// Kill -9 a follower of three servers: the leader's autopilot, fed by
// gossip and by each server's raft stats over the internal RPC, reports
// it unhealthy (429) and then failed; while dead-server cleanup is off
// it stays in the raft configuration, and once an operator turns cleanup
// on autopilot removes it from raft and forces it out of gossip, and the
// two left are healthy again.
func TestAutopilotRemovesDeadServer(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	var victim, follower *member
	for _, m := range all {
		switch {
		case m == leader:
		case victim == nil:
			victim = m
		default:
			follower = m
		}
	}
	// Every server healthy: one could fail without an outage. Asked of
	// a follower, which forwards to the leader.
	var victimID string
	eventually(t, 30*time.Second, func() error {
		h, err := follower.client(t).Operator().AutopilotServerHealth(nil)
		if err != nil {
			return err
		}
		if !h.Healthy || h.FailureTolerance != 1 || len(h.Servers) != 3 {
			return fmt.Errorf("health %+v, want 3 healthy servers, failure tolerance 1", h)
		}
		if l := healthOf(h, leader.name); l == nil || !l.Leader {
			return fmt.Errorf("health %+v does not name %s the leader", h, leader.name)
		}
		victimID = healthOf(h, victim.name).ID
		return nil
	})
	// Only the leader runs autopilot: even ?stale reads go to it.
	for _, path := range []string{"health", "state"} {
		resp, err := http.Get("http://" + follower.addr() + "/v1/operator/autopilot/" + path + "?stale")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("autopilot %s?stale on a follower: status %d, want 200 from the leader", path, resp.StatusCode)
		}
	}

	op := leader.client(t).Operator()
	cfg, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CleanupDeadServers = false
	if err := op.AutopilotSetConfiguration(cfg, nil); err != nil {
		t.Fatal(err)
	}

	victim.kill()
	// Its stats stop coming: unhealthy, while gossip may still call it
	// alive, and the cluster can lose no other server.
	eventually(t, 30*time.Second, func() error {
		code, h, err := rawHealth(leader)
		if err != nil {
			return err
		}
		v := healthOf(h, victim.name)
		if code != http.StatusTooManyRequests || h.Healthy || h.FailureTolerance != 0 || v == nil || v.Healthy {
			return fmt.Errorf("status %d, health %+v; want 429 with %s unhealthy", code, h, victim.name)
		}
		return nil
	})
	// Gossip declares it failed; with cleanup off, it stays in raft.
	eventually(t, 60*time.Second, func() error {
		_, h, err := rawHealth(leader)
		if err != nil {
			return err
		}
		if v := healthOf(h, victim.name); v == nil || v.SerfStatus != "failed" {
			return fmt.Errorf("health of %s: %+v, want serf status failed", victim.name, v)
		}
		return nil
	})
	if servers, err := raftServers(leader, t); err != nil || !servers[victimID] {
		t.Fatalf("raft configuration with cleanup off: %v, %v; want %s still in it", servers, err, victim.name)
	}

	// Cleanup on: autopilot removes the dead server at once.
	cfg, err = op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CleanupDeadServers = true
	if ok, err := op.AutopilotCASConfiguration(cfg, nil); err != nil || !ok {
		t.Fatalf("CAS configuration = %v, %v", ok, err)
	}
	removedAt := time.Now()
	eventually(t, 30*time.Second, func() error {
		servers, err := raftServers(leader, t)
		if err != nil {
			return err
		}
		if servers[victimID] || len(servers) != 2 {
			return fmt.Errorf("raft configuration %v, want the two live servers", servers)
		}
		return nil
	})
	t.Logf("removed from raft %v after cleanup was turned on", time.Since(removedAt).Round(time.Millisecond))
	eventually(t, 30*time.Second, func() error {
		members, err := leader.client(t).Agent().Members(false)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == victim.name && m.Status != 3 {
				return fmt.Errorf("%s has gossip status %d, want left (3)", m.Name, m.Status)
			}
		}
		// Out of the WAN pool too, where it is <node>.<dc>.
		wan, err := leader.client(t).Agent().Members(true)
		if err != nil {
			return err
		}
		for _, m := range wan {
			if m.Name == victim.name+".dc1" && m.Status != 3 {
				return fmt.Errorf("WAN member %s has status %d, want left (3)", m.Name, m.Status)
			}
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		code, h, err := rawHealth(leader)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !h.Healthy || len(h.Servers) != 2 || h.FailureTolerance != 0 {
			return fmt.Errorf("status %d, health %+v; want 200 with two healthy servers", code, h)
		}
		return nil
	})
	if _, err := leader.client(t).KV().Put(&api.KVPair{Key: "after-cleanup", Value: []byte("ok")}, nil); err != nil {
		t.Fatalf("write after the cleanup: %v", err)
	}
}
