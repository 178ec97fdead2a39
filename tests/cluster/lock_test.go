package cluster

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// A lock taken with api.Lock through one server keeps mutual exclusion
// across a leader failover: its holder keeps it (its session lives on
// under the new leader), a contender through another server cannot take
// it, and gets it once the holder lets go.
func TestAPILockAcrossFailover(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	var followers []*member
	for _, m := range all {
		if m != leader {
			followers = append(followers, m)
		}
	}
	patient := func(m *member) *api.Client {
		cfg := api.DefaultNonPooledConfig()
		cfg.Address = m.addr()
		cfg.HttpClient = &http.Client{Timeout: 30 * time.Second}
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	holder, contender := patient(followers[0]), patient(followers[1])
	// A session belongs to the agent's node: wait until the catalog has
	// both followers' nodes.
	eventually(t, 30*time.Second, func() error {
		for _, f := range followers {
			n, _, err := holder.Catalog().Node(f.name, nil)
			if err != nil {
				return err
			}
			if n == nil {
				return fmt.Errorf("node %s is not in the catalog yet", f.name)
			}
		}
		return nil
	})

	// Consul's advice for locks that must outlive a leader election:
	// retry the monitoring query instead of giving the lock up.
	held, err := holder.LockOpts(&api.LockOptions{Key: "service/leader", SessionTTL: "30s",
		MonitorRetries: 20, MonitorRetryTime: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := held.Lock(nil)
	if err != nil || lost == nil {
		t.Fatalf("first lock: %v, %v", lost, err)
	}
	defer held.Unlock()

	leader.kill()
	waitLeader(t, all, leader)

	other, err := contender.LockOpts(&api.LockOptions{Key: "service/leader", SessionTTL: "30s",
		LockTryOnce: true, LockWaitTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := other.Lock(nil); err != nil || ch != nil {
		t.Fatalf("a second holder took the lock after the failover: %v, %v", ch, err)
	}
	select {
	case <-lost:
		t.Fatal("the holder lost its lock in the failover")
	default:
	}
	kv, _, err := contender.KV().Get("service/leader", &api.QueryOptions{RequireConsistent: true})
	if err != nil || kv == nil || kv.Session == "" {
		t.Fatalf("lock key after the failover = %+v, %v; want it held by a session", kv, err)
	}

	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	ch, err := other.Lock(nil)
	if err != nil || ch == nil {
		t.Fatalf("the contender could not take the released lock: %v, %v", ch, err)
	}
	other.Unlock()
}
