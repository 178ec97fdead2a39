// Package cluster runs real trellis server processes on 127.0.0.x and
// checks what a cluster promises: it forms by gossip with
// bootstrap_expect, forwards to the leader, and loses no acknowledged
// write when the leader is killed.
package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

// freePort reserves a port on ip long enough to hand it to a server.
func freePort(t *testing.T, ip string) int { return testbin.FreePort(t, ip) }

type member struct {
	name, ip, dir               string
	httpPort, serfPort, rpcPort int
	dnsPort                     int      // -1 for servers; clients serve DNS
	isClient                    bool     // a client agent, not a server
	noJoin                      bool     // start without -retry-join
	wanPort                     int      // serf WAN port; 0 picks one
	extra                       []string // more agent flags

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func (m *member) addr() string { return fmt.Sprintf("%s:%d", m.ip, m.httpPort) }

func (m *member) rpcAddr() string { return fmt.Sprintf("%s:%d", m.ip, m.rpcPort) }

func (m *member) client(t *testing.T) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = m.addr()
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var listening = regexp.MustCompile(`HTTP API: `)

// start runs the member's server process, joined to the others.
func (m *member) start(t *testing.T, all []*member) {
	t.Helper()
	if err := m.tryStart(t, all); err != nil {
		t.Fatal(err)
	}
}

// errExitedEarly is a member process that ended before it served: most
// often a port picked free was taken before the agent bound it (by an
// outgoing connection from the same loopback address).
var errExitedEarly = errors.New("exited before serving")

// tryStart is start, returning errExitedEarly (wrapped) rather than
// failing the test when the process ends before it serves.
func (m *member) tryStart(t *testing.T, all []*member) error {
	t.Helper()
	args := []string{"agent", "-data-dir", m.dir,
		"-node", m.name, "-bind", m.ip, "-client", m.ip, "-http-port", fmt.Sprint(m.httpPort),
		"-serf-lan-port", fmt.Sprint(m.serfPort), "-server-port", fmt.Sprint(m.rpcPort),
		"-serf-wan-port", fmt.Sprint(m.wanPort), "-dns-port", fmt.Sprint(m.dnsPort), "-grpc-port", "-1", "-retry-interval", "200ms", "-log-level", "warn"}
	servers := 0
	for _, o := range all {
		if !o.isClient {
			servers++
		}
	}
	if !m.isClient {
		args = append(args, "-server", "-bootstrap-expect", fmt.Sprint(servers))
	}
	for _, o := range all {
		if o != m && !o.isClient && !m.noJoin {
			args = append(args, "-retry-join", fmt.Sprintf("%s:%d", o.ip, o.serfPort))
		}
	}
	args = append(args, m.extra...)
	cmd := exec.Command(binary, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if listening.MatchString(sc.Text()) {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	t.Cleanup(func() { m.kill() })
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("%s %w", m.name, errExitedEarly)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s did not serve within 30s", m.name)
	}
}

// kill ends the process as a crash would (SIGKILL) and waits for it.
func (m *member) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// startCluster starts n servers on 127.0.0.11, .12, ... and waits until
// they agree on a leader.
func startCluster(t *testing.T, n int) []*member {
	t.Helper()
	var all []*member
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		all = append(all, &member{name: fmt.Sprintf("s%d", i+1), ip: ip, dir: t.TempDir(),
			httpPort: freePort(t, ip), serfPort: freePort(t, ip), rpcPort: freePort(t, ip), dnsPort: -1})
	}
	for _, m := range all {
		m.start(t, all)
	}
	waitLeader(t, all, nil)
	return all
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		<-time.After(50 * time.Millisecond)
	}
}

// waitLeader waits until every running member names the same leader,
// other than not, and that leader accepts a write; it returns the leader.
func waitLeader(t *testing.T, all []*member, not *member) *member {
	t.Helper()
	var leader *member
	eventually(t, 60*time.Second, func() error {
		names := map[string]bool{}
		for _, m := range all {
			if m == not || !m.running() || m.isClient {
				continue
			}
			l, err := m.client(t).Status().Leader()
			if err != nil || l == "" {
				return fmt.Errorf("%s knows no leader (%v)", m.name, err)
			}
			names[l] = true
		}
		if len(names) != 1 {
			return fmt.Errorf("members disagree on the leader: %v", names)
		}
		for _, m := range all {
			if names[fmt.Sprintf("%s:%d", m.ip, m.rpcPort)] {
				leader = m
			}
		}
		if leader == nil || leader == not {
			return fmt.Errorf("leader %v is not a live member", names)
		}
		_, err := leader.client(t).KV().Put(&api.KVPair{Key: "probe", Value: []byte("1")}, nil)
		return err
	})
	return leader
}

func (m *member) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

func TestClusterFormsByGossipAndForwards(t *testing.T) {
	all := startCluster(t, 3)
	// Every member sees three alive members, and the leader has put every
	// node in the catalog with a passing serfHealth.
	for _, m := range all {
		eventually(t, 30*time.Second, seesAlive(t, m, 3))
	}
	eventually(t, 30*time.Second, func() error {
		checks, _, err := all[0].client(t).Health().State(api.HealthPassing, nil)
		if err != nil {
			return err
		}
		n := 0
		for _, c := range checks {
			if c.CheckID == "serfHealth" {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("%d passing serfHealth checks, want 3", n)
		}
		return nil
	})
	// A write on any server (followers forward it) is read back
	// consistently from every server.
	for i, m := range all {
		key := fmt.Sprintf("from/%s", m.name)
		if _, err := m.client(t).KV().Put(&api.KVPair{Key: key, Value: []byte(fmt.Sprint(i))}, nil); err != nil {
			t.Fatalf("write on %s: %v", m.name, err)
		}
		for _, r := range all {
			kv, _, err := r.client(t).KV().Get(key, &api.QueryOptions{RequireConsistent: true})
			if err != nil || kv == nil || string(kv.Value) != fmt.Sprint(i) {
				t.Fatalf("consistent read of %s on %s = %+v, %v", key, r.name, kv, err)
			}
		}
	}
	cfg, err := all[1].client(t).Operator().RaftGetConfiguration(nil)
	if err != nil || len(cfg.Servers) != 3 {
		t.Fatalf("raft configuration = %+v, %v", cfg, err)
	}
}

// Kill -9 the leader while clients write through every server: every
// write that got a 200 is there afterwards, a new leader serves within
// seconds, and the old leader, restarted, catches up.
func TestKillLeaderUnderWrites(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)

	var mu sync.Mutex
	acked := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, m := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := m.client(t)
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("w%d/%05d", w, i), fmt.Sprint(i)
				if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(val)}, nil); err == nil {
					mu.Lock()
					acked[key] = val
					mu.Unlock()
				} else {
					<-time.After(20 * time.Millisecond) // the server is down or has no leader: try again shortly
				}
			}
		}()
	}
	countAcked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	eventually(t, 30*time.Second, func() error {
		if n := countAcked(); n < 200 {
			return fmt.Errorf("%d writes acknowledged so far", n)
		}
		return nil
	})
	killedAt := time.Now()
	leader.kill()
	next := waitLeader(t, all, leader)
	t.Logf("new leader %s serving writes %v after the kill", next.name, time.Since(killedAt).Round(time.Millisecond))
	before := countAcked()
	eventually(t, 30*time.Second, func() error {
		if n := countAcked(); n < before+200 {
			return fmt.Errorf("%d writes since the failover", n-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()

	check := func(m *member, q *api.QueryOptions) error {
		pairs, _, err := m.client(t).KV().List("w", q)
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, p := range pairs {
			got[p.Key] = string(p.Value)
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range acked {
			if got[k] != v {
				return fmt.Errorf("%s: acknowledged %s=%s is %q", m.name, k, v, got[k])
			}
		}
		return nil
	}
	if err := check(next, &api.QueryOptions{RequireConsistent: true}); err != nil {
		t.Fatalf("lost an acknowledged write: %v", err)
	}
	t.Logf("%d acknowledged writes, none lost", countAcked())

	leader.start(t, all)
	eventually(t, 60*time.Second, func() error { return check(leader, &api.QueryOptions{AllowStale: true}) })
}

// When a member's agent dies, the leader turns its serfHealth critical, so
// its services drop out of passing health results.
func TestDeadMemberTurnsCritical(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	var victim *member
	for _, m := range all {
		if m != leader {
			victim = m
			break
		}
	}
	reg := &api.AgentServiceRegistration{Name: "web", ID: "web-" + victim.name, Port: 80,
		Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}}
	if err := victim.client(t).Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	c := leader.client(t)
	eventually(t, 30*time.Second, func() error {
		entries, _, err := c.Health().Service("web", "", true, nil)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("passing web instances = %d (%v), want 1", len(entries), err)
		}
		return nil
	})
	victim.kill()
	eventually(t, 60*time.Second, func() error {
		checks, _, err := c.Health().Node(victim.name, nil)
		if err != nil {
			return err
		}
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == api.HealthCritical {
				return nil
			}
		}
		return fmt.Errorf("%s's serfHealth is not critical yet: %+v", victim.name, checks)
	})
	entries, _, err := c.Health().Service("web", "", true, nil)
	if err != nil || len(entries) != 0 {
		t.Fatalf("passing web instances after its node died = %d (%v), want 0", len(entries), err)
	}
}

// A write sent to a follower while the leader is dead is held until a new
// leader is elected (Consul's rpc_hold_timeout), not failed with an
// internal error.
func TestFollowerHoldsWritesThroughFailover(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	var follower *member
	for _, m := range all {
		if m != leader {
			follower = m
			break
		}
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = follower.addr()
	cfg.HttpClient = &http.Client{Timeout: 30 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leader.kill()
	// Write once the follower has noticed: a request already on its way
	// to the dying leader has an unknown outcome and is rightly not
	// repeated (Consul does not repeat such writes either). From then on
	// it must be held until a new leader is elected.
	eventually(t, 30*time.Second, func() error {
		l, err := c.Status().Leader()
		if err != nil {
			return err
		}
		if l == leader.rpcAddr() {
			return fmt.Errorf("the follower still follows the killed leader %s", l)
		}
		return nil
	})
	start := time.Now()
	if _, err := c.KV().Put(&api.KVPair{Key: "held", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("write through a follower during the election: %v", err)
	}
	t.Logf("held for %v", time.Since(start).Round(time.Millisecond))
	kv, _, err := c.KV().Get("held", &api.QueryOptions{RequireConsistent: true})
	if err != nil || kv == nil || string(kv.Value) != "1" {
		t.Fatalf("read back = %+v, %v", kv, err)
	}
}

// `leave` on a server makes it leave gossip gracefully: the others see it
// as left, and the leader takes it out of the raft configuration, so the
// remaining two still make a quorum.
func TestLeaveRemovesServer(t *testing.T) {
	all := startCluster(t, 3)
	leader := waitLeader(t, all, nil)
	var leaving *member
	for _, m := range all {
		if m != leader {
			leaving = m
			break
		}
	}
	if err := leaving.client(t).Agent().Leave(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leaving.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not exit after leave")
	}
	c := leader.client(t)
	eventually(t, 30*time.Second, func() error {
		cfg, err := c.Operator().RaftGetConfiguration(nil)
		if err != nil {
			return err
		}
		if len(cfg.Servers) != 2 {
			return fmt.Errorf("raft configuration has %d servers, want 2", len(cfg.Servers))
		}
		members, err := c.Agent().Members(false)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == leaving.name && m.Status != 3 {
				return fmt.Errorf("%s has status %d, want left (3)", m.Name, m.Status)
			}
		}
		return nil
	})
	if _, err := c.KV().Put(&api.KVPair{Key: "after-leave", Value: []byte("ok")}, nil); err != nil {
		t.Fatalf("write after a server left: %v", err)
	}
}

// With a data dir, gossip keeps a record of the members: a server killed
// and restarted with no join address finds its cluster again by itself.
func TestRestartRejoinsFromGossipSnapshot(t *testing.T) {
	all := startCluster(t, 3)
	waitLeader(t, all, nil)
	m := all[2]
	// The members are recorded in the background, within a second of a
	// change: wait until both other servers are, which is what this test
	// restarts from.
	peers := filepath.Join(m.dir, "serf", "local.snapshot.peers")
	eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(peers)
		if err != nil {
			return err
		}
		for _, o := range all[:2] {
			if !strings.Contains(string(b), fmt.Sprintf("%s:%d\n", o.ip, o.serfPort)) {
				return fmt.Errorf("the peers file does not record %s yet:\n%s", o.name, b)
			}
		}
		return nil
	})
	m.kill()
	m.noJoin = true
	m.start(t, all)
	eventually(t, 30*time.Second, seesAlive(t, m, 3))
	waitLeader(t, all, nil)
}

// seesAlive is a condition for eventually: m's member list shows n alive.
func seesAlive(t *testing.T, m *member, n int) func() error {
	return func() error {
		members, err := m.client(t).Agent().Members(false)
		if err != nil {
			return err
		}
		alive := 0
		for _, mm := range members {
			if mm.Status == 1 {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%s sees %d alive members, want %d", m.name, alive, n)
		}
		return nil
	}
}
