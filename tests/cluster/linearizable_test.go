package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/tests/lincheck"
)

// TestLinearizableUnderLeaderKill records a concurrent history of KV puts,
// consistent gets and CAS through all three servers while the leader is
// killed and restarted, and checks it with porcupine: any history that is
// not linearizable fails the test.
func TestLinearizableUnderLeaderKill(t *testing.T) {
	all := startCluster(t, 3)
	clients := make([]*api.Client, len(all))
	for i, m := range all {
		clients[i] = m.client(t)
	}
	rec := lincheck.Start(4, func(rng *rand.Rand) *api.Client {
		i := rng.IntN(len(all))
		if !all[i].running() {
			return nil
		}
		return clients[i]
	})
	count := rec.Count
	eventually(t, 30*time.Second, func() error {
		if n := count(); n < 200 {
			return fmt.Errorf("%d operations so far", n)
		}
		return nil
	})
	leader := waitLeader(t, all, nil)
	leader.kill()
	waitLeader(t, all, leader)
	before := count()
	eventually(t, 30*time.Second, func() error {
		if n := count(); n < before+200 {
			return fmt.Errorf("%d operations since the kill", n-before)
		}
		return nil
	})
	leader.start(t, all)
	before = count()
	eventually(t, 60*time.Second, func() error {
		if n := count(); n < before+200 {
			return fmt.Errorf("%d operations since the restart", n-before)
		}
		return nil
	})
	rec.Stop()
	res, ops, pending := rec.Check(2 * time.Minute)
	t.Logf("%d operations checked (%d with an unknown outcome): %v", ops, pending, res)
	switch res {
	case porcupine.Illegal:
		t.Fatalf("the history is not linearizable")
	case porcupine.Unknown:
		t.Fatalf("the checker could not decide within its time limit")
	}
}
