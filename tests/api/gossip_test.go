package api_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/membership"
)

func fastGossip(name string) agenttest.Options {
	timing := membership.FastTiming()
	return agenttest.Options{Args: []string{"-node", name}, Agent: agent.Options{GossipTiming: &timing, ReconcileInterval: 200 * time.Millisecond}}
}

func memberStatus(t *testing.T, c *api.Client, name string) (int, bool) {
	t.Helper()
	members, err := c.Agent().Members(false)
	must(t, err)
	for _, m := range members {
		if m.Name == name {
			return m.Status, true
		}
	}
	return 0, false
}

// PUT /v1/agent/join joins another agent's pool; when that agent dies,
// force-leave marks it left, and with ?prune forgets it.
func TestJoinAndForceLeave(t *testing.T) {
	t.Parallel()
	a := start(t, fastGossip("agent-a"))
	b := start(t, fastGossip("agent-b"))
	self, err := b.c.Agent().Self()
	must(t, err)
	m := self["Member"]
	addr := fmt.Sprintf("%v:%v", m["Addr"], m["Port"])
	must(t, a.c.Agent().Join(addr, false))
	if st, ok := memberStatus(t, a.c, "agent-b"); !ok || st != 1 {
		t.Fatalf("after join, agent-b status = %d (present %v), want alive", st, ok)
	}
	if err := a.c.Agent().Join("127.0.0.1:1", false); err == nil {
		t.Error("joining an address where nothing listens succeeded")
	}

	// A user event fired on one agent reaches the other by gossip.
	_, _, err = a.c.Event().Fire(&api.UserEvent{Name: "deploy", Payload: []byte("v2")}, nil)
	must(t, err)
	waitFor(t, 20*time.Second, func() error {
		events, _, err := b.c.Event().List("deploy", nil)
		if err != nil || len(events) != 1 || string(events[0].Payload) != "v2" {
			return fmt.Errorf("events on agent-b = %+v (%v)", events, err)
		}
		return nil
	})

	must(t, b.Close()) // dies without leaving: the others see it fail
	waitFor(t, 20*time.Second, func() error {
		if st, _ := memberStatus(t, a.c, "agent-b"); st != 4 {
			return fmt.Errorf("agent-b status %d, want failed (4)", st)
		}
		return nil
	})
	// The leader marks the dead member's node critical.
	waitFor(t, 20*time.Second, func() error {
		checks, _, err := a.c.Health().Node("agent-b", nil)
		if err != nil {
			return err
		}
		for _, c := range checks {
			if c.CheckID == "serfHealth" && c.Status == api.HealthCritical {
				return nil
			}
		}
		return fmt.Errorf("agent-b serfHealth not critical: %+v", checks)
	})
	must(t, a.c.Agent().ForceLeave("agent-b"))
	waitFor(t, 20*time.Second, func() error {
		if st, _ := memberStatus(t, a.c, "agent-b"); st != 3 {
			return fmt.Errorf("agent-b status %d, want left (3)", st)
		}
		return nil
	})
	// A member that left is removed from the catalog.
	waitFor(t, 20*time.Second, func() error {
		if n, _, err := a.c.Catalog().Node("agent-b", nil); err != nil || n != nil {
			return fmt.Errorf("agent-b still in the catalog (%v)", err)
		}
		return nil
	})
	must(t, a.c.Agent().ForceLeaveOptions("agent-b", api.ForceLeaveOpts{Prune: true}, nil))
	waitFor(t, 20*time.Second, func() error {
		if _, ok := memberStatus(t, a.c, "agent-b"); ok {
			return fmt.Errorf("agent-b still listed after prune")
		}
		return nil
	})
	a.do(t, "PUT", "/v1/agent/force-leave/nobody", nil).expect(t, "unknown node", 404)
}

// As Consul's, ?wan selects the WAN pool only with a value: a bare ?wan
// is the LAN pool.
func TestMembersWANByValue(t *testing.T) {
	t.Parallel()
	a := start(t)
	for path, want := range map[string]string{
		"/v1/agent/members":       "test-node",
		"/v1/agent/members?wan":   "test-node",
		"/v1/agent/members?wan=1": "test-node.dc1",
	} {
		var ms []api.AgentMember
		if err := json.Unmarshal([]byte(a.do(t, "GET", path, nil).expect(t, path, 200).body), &ms); err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Name != want {
			t.Errorf("GET %s = %+v, want one member %s", path, ms, want)
		}
	}
}
