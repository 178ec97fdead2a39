package cluster

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/snapshot"
	"github.com/trellis-mesh/trellis/internal/state"
)

// GET /v1/snapshot?stale is answered by a follower from what it has
// applied, even with no leader left; without ?stale it needs the leader.
func TestStaleSnapshotOnFollower(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	if _, err := leader.client(t).KV().Put(&api.KVPair{Key: "kept", Value: []byte("v")}, nil); err != nil {
		t.Fatal(err)
	}
	var follower *member
	for _, m := range all {
		if m != leader {
			follower = m
			break
		}
	}
	c := follower.client(t)
	// The follower has the write once a stale read shows it.
	eventually(t, 10*time.Second, func() error {
		kv, _, err := c.KV().Get("kept", &api.QueryOptions{AllowStale: true})
		if err != nil || kv == nil {
			return fmt.Errorf("follower has not applied the write yet: %v, %v", kv, err)
		}
		return nil
	})
	for _, m := range all {
		if m != follower {
			m.kill()
		}
	}
	// No quorum: the follower knows no leader any more. It holds the
	// request for one for a while (rpc_hold_timeout) before it answers.
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = follower.addr()
	cfg.HttpClient = &http.Client{Timeout: 30 * time.Second}
	patient, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		_, _, err := patient.Snapshot().Save(nil)
		if err == nil || !strings.Contains(err.Error(), "No cluster leader") {
			return fmt.Errorf("snapshot without ?stale and without a leader: %v, want No cluster leader", err)
		}
		return nil
	})
	rc, _, err := c.Snapshot().Save(&api.QueryOptions{AllowStale: true})
	if err != nil {
		t.Fatalf("stale snapshot on a leaderless follower: %v", err)
	}
	defer rc.Close()
	arch, err := snapshot.Read(rc)
	if err != nil {
		t.Fatalf("the stale snapshot is not a valid archive: %v", err)
	}
	defer arch.Close()
	st, err := arch.State()
	if err != nil {
		t.Fatal(err)
	}
	store := state.New()
	if err := store.Restore(st); err != nil {
		t.Fatal(err)
	}
	rt := store.Read()
	defer rt.Abort()
	if _, e, err := rt.KVGet(nil, "kept"); err != nil || e == nil || string(e.Value) != "v" {
		t.Fatalf("kept in the stale snapshot = %v, %v; want v", e, err)
	}
}
