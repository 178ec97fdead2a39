package meshtest

import (
	"github.com/trellis-mesh/trellis/internal/server"
	"testing"
)

func TestTransferLeaderToChosenServer(t *testing.T) {
	c := New(t, 3)
	old := c.Leader(t)
	var target *Node
	for _, n := range c.Nodes {
		if n != old {
			target = n
			break
		}
	}
	if err := target.Server().TransferLeader(old.ID); err == nil {
		t.Error("a follower accepted a leadership transfer request")
	}
	if err := old.Server().TransferLeader(target.ID); err != nil {
		t.Fatal(err)
	}
	if got := c.LeaderExcept(t, old); got != target {
		t.Fatalf("leader after transfer = %s, want %s", got.Name, target.Name)
	}
	put(t, target, "after-transfer", "ok")
}

// A dead server removed from the configuration no longer counts toward
// quorum: the two that remain keep accepting writes with one more down.
func TestRemoveDeadPeer(t *testing.T) {
	c := New(t, 3)
	leader := c.Leader(t)
	var dead *Node
	for _, n := range c.Nodes {
		if n != leader {
			dead = n
			break
		}
	}
	c.Kill(dead)
	if err := leader.Server().RemovePeer(dead.ID, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := leader.Server().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 2 {
		t.Fatalf("configuration after remove = %d servers, want 2", len(cfg.Servers))
	}
	for _, s := range cfg.Servers {
		if s.ID == dead.ID {
			t.Fatalf("removed server still in the configuration: %+v", s)
		}
	}
	put(t, leader, "after-remove", "ok")
	if err := leader.Server().RemovePeer(dead.ID, ""); err == nil {
		t.Error("removing an unknown peer succeeded")
	}
	if err := leader.Server().RemovePeer("", ""); err == nil {
		t.Error("remove with neither id nor address succeeded")
	}
}

// Review finding: a server back with a new ID at its old address was added
// as a fourth voter next to its dead old entry, raising the quorum.
func TestAddVoterReplacesStaleIDAtSameAddress(t *testing.T) {
	c := New(t, 3)
	leader := c.Leader(t)
	var lost *Node
	for _, n := range c.Nodes {
		if n != leader {
			lost = n
			break
		}
	}
	c.Kill(lost)
	fresh := c.Replace(lost)
	if err := leader.Server().AddVoter(server.Peer{ID: fresh.ID, Address: string(fresh.Addr)}); err != nil {
		t.Fatal(err)
	}
	cfg, err := leader.Server().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 3 {
		t.Fatalf("configuration has %d servers, want 3: %+v", len(cfg.Servers), cfg.Servers)
	}
	for _, s := range cfg.Servers {
		if s.ID == lost.ID {
			t.Fatalf("the dead ID is still a voter: %+v", s)
		}
	}
	put(t, leader, "after-replace", "ok")
}
