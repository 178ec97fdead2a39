package dataplane

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"
)

// pool is web and three instances of db, each an App answering with its
// instance ID behind its own sidecar.
type pool struct {
	a   *Agent
	dbs []*Service
	up  string // web's local listener for db
}

func startPool(t *testing.T) *pool {
	p := &pool{a: StartAgent(t)}
	for i := 1; i <= 3; i++ {
		id := "db-" + strconv.Itoa(i)
		s := p.a.Register(ServiceOptions{Name: "db", ID: id, Port: StartApp(t, id).Port(), TTL: true})
		p.dbs = append(p.dbs, s)
		p.a.StartSidecar(s)
	}
	web := p.a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
	p.a.StartSidecar(web)
	p.up = web.Upstreams["db"]
	p.reachesAll(t, "web reaches every db instance")
	return p
}

// reachesAll waits until connections from web have reached every
// instance of db.
func (p *pool) reachesAll(t *testing.T, what string) {
	t.Helper()
	seen := map[string]bool{}
	eventually(t, what, func() error {
		name, err := Ask(p.up, "who are you?")
		if err != nil {
			return err
		}
		seen[name] = true
		if len(seen) < len(p.dbs) {
			return fmt.Errorf("reached only %v", slices.Sorted(maps.Keys(seen)))
		}
		return nil
	})
}

// Connections through web's upstream listener are spread round robin over
// db's healthy instances, each behind its own sidecar.
func TestRoundRobinOverInstances(t *testing.T) {
	p := startPool(t)
	const n = 30
	got := map[string]int{}
	for i := range n {
		name, err := Ask(p.up, "request "+strconv.Itoa(i))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		got[name]++
	}
	// Round robin gives each of 3 instances n/3 of n sequential
	// connections; the bound leaves room for a policy that is round
	// robin only on average, not for one that favours an instance.
	for _, s := range p.dbs {
		if c := got[s.ID]; c < n/3-2 || c > n/3+2 {
			t.Errorf("%s got %d of %d connections, want %d±2: %v", s.ID, c, n, n/3, got)
		}
	}
}

// An instance turned critical, by a failed check or by maintenance, gets
// no connection opened a second or more after it turned (the mesh's
// promise: its sidecars are told within a second), and gets connections
// again once healthy.
func TestCriticalInstanceGetsNoNewConnections(t *testing.T) {
	p := startPool(t)
	db2, db3 := p.dbs[1], p.dbs[2]

	if err := p.a.API.Agent().FailTTL(db2.CheckID, "test: failing"); err != nil {
		t.Fatal(err)
	}
	p.drained(t, db2.ID, time.Now())
	if err := p.a.API.Agent().PassTTL(db2.CheckID, "test: healthy again"); err != nil {
		t.Fatal(err)
	}
	p.reachesAll(t, "db-2 gets connections again once its check passes")

	if err := p.a.API.Agent().EnableServiceMaintenance(db3.ID, "test: maintenance"); err != nil {
		t.Fatal(err)
	}
	p.drained(t, db3.ID, time.Now())
	if err := p.a.API.Agent().DisableServiceMaintenance(db3.ID); err != nil {
		t.Fatal(err)
	}
	p.reachesAll(t, "db-3 gets connections again after its maintenance")
}

// pushBound is how long after an instance turned critical a connection
// may still reach it.
const pushBound = time.Second

// drained opens connections through web until 30 of them were opened
// pushBound or more after critical (when instance turned critical) and
// checks that none of those reached it, nor failed.
func (p *pool) drained(t *testing.T, instance string, critical time.Time) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond) // paces the client, no more
	defer tick.Stop()
	var last time.Duration = -1 // after critical, of the last connection opened that reached instance
	after := map[string]int{}   // instances reached by connections opened after the bound
	for n := 0; n < 30; {
		opened := time.Now()
		name, err := Ask(p.up, "still there?")
		if err != nil {
			t.Fatalf("a connection opened %v after %s turned critical: %v", opened.Sub(critical), instance, err)
		}
		if opened.Sub(critical) >= pushBound {
			after[name]++
			n++
		} else if name == instance {
			last = opened.Sub(critical)
		}
		<-tick.C
	}
	if last >= 0 {
		t.Logf("%s: the last connection reaching it was opened %v after it turned critical", instance, last)
	} else {
		t.Logf("%s: no connection opened after it turned critical reached it", instance)
	}
	if after[instance] > 0 {
		t.Fatalf("%s, critical, was reached by %d of 30 connections opened %v or more after: %v", instance, after[instance], pushBound, after)
	}
	if len(after) != len(p.dbs)-1 {
		t.Fatalf("connections opened after the bound reached %v, want every healthy instance", after)
	}
}
