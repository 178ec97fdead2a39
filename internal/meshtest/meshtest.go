// Package meshtest runs clusters of Trellis servers inside one test
// process: raft over in-memory transports that a test can cut and heal,
// servers that can be killed and restarted from their data dirs, and a
// check at cleanup that every goroutine they started has ended.
//
//	c := meshtest.New(t, 3)
//	leader := c.Leader(t)
//	c.Partition(leader)         // the old leader is alone
//	next := c.LeaderExcept(t, leader)
//	c.Heal()
package meshtest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
)

// electionTimeout is short so that failovers take a fraction of a second,
// and long enough that a loaded 2-core machine does not flap.
const electionTimeout = 200 * time.Millisecond

// Node is one server of a cluster.
type Node struct {
	Name string
	ID   string
	Addr raft.ServerAddress

	dir string

	mu     sync.Mutex
	server *server.Server       // guarded by mu; nil while killed
	trans  *raft.InmemTransport // guarded by mu
}

// Server returns the node's running server, or nil while it is killed.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.server
}

// Store returns the running server's state store, or nil.
func (n *Node) Store() *state.Store {
	if s := n.Server(); s != nil {
		return s.Store()
	}
	return nil
}

// Cluster is a set of servers that bootstrapped one raft group.
type Cluster struct {
	t     testing.TB
	Nodes []*Node

	mu      sync.Mutex
	cut     map[[2]raft.ServerAddress]bool // guarded by mu: links the test has cut
	goStart int
}

// New starts n servers as one cluster and registers their shutdown, and
// the goroutine check, with t.Cleanup.
func New(t testing.TB, n int) *Cluster {
	t.Helper()
	c := NewUnbootstrapped(t, 0)
	var peers []raft.Server
	for range n {
		node := c.newNode()
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(node.ID), Address: node.Addr})
	}
	for _, node := range c.Nodes {
		c.startNode(node, peers, false)
	}
	return c
}

// NewUnbootstrapped starts n servers that wait to be bootstrapped (as with
// bootstrap_expect) or added to a cluster.
func NewUnbootstrapped(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, cut: make(map[[2]raft.ServerAddress]bool), goStart: runtime.NumGoroutine()}
	t.Cleanup(c.shutdown)
	for range n {
		c.startNode(c.newNode(), nil, true)
	}
	return c
}

// Add starts one more server that waits to be added to the cluster.
func (c *Cluster) Add() *Node {
	n := c.newNode()
	c.startNode(n, nil, true)
	return n
}

// Replace starts a server with a new ID and an empty data dir at the
// address of old, which must be killed: a machine that lost its disk.
func (c *Cluster) Replace(old *Node) *Node {
	n := c.newNode()
	n.Addr = old.Addr
	c.startNode(n, nil, true)
	return n
}

func (c *Cluster) newNode() *Node {
	i := len(c.Nodes) + 1
	n := &Node{
		Name: fmt.Sprintf("server-%d", i),
		ID:   fmt.Sprintf("00000000-0000-0000-0000-%012d", i),
		Addr: raft.ServerAddress(fmt.Sprintf("127.0.0.1:%d", 18300+i)), // a name only: nothing listens
		dir:  c.t.TempDir(),
	}
	c.Nodes = append(c.Nodes, n)
	return n
}

// Peers lists every node as a raft peer.
func (c *Cluster) Peers() []server.Peer {
	var out []server.Peer
	for _, n := range c.Nodes {
		out = append(out, server.Peer{ID: n.ID, Address: string(n.Addr)})
	}
	return out
}

func (c *Cluster) startNode(n *Node, peers []raft.Server, noBootstrap bool) {
	c.t.Helper()
	_, trans := raft.NewInmemTransport(n.Addr)
	s, err := server.New(server.Config{
		NodeID: n.ID, NodeName: n.Name, DataDir: n.dir, Transport: trans,
		Bootstrap: peers, NoBootstrap: noBootstrap, ElectionTimeout: electionTimeout,
	}, state.New())
	if err != nil {
		c.t.Fatalf("meshtest: start %s: %v", n.Name, err)
	}
	n.mu.Lock()
	n.server, n.trans = s, trans
	n.mu.Unlock()
	c.connect()
}

// connect wires every pair of live transports whose link is not cut.
func (c *Cluster) connect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if a == b {
				continue
			}
			ta, tb := a.transport(), b.transport()
			if ta == nil || tb == nil || c.cut[[2]raft.ServerAddress{a.Addr, b.Addr}] {
				continue
			}
			ta.Connect(b.Addr, tb)
		}
	}
}

func (n *Node) transport() *raft.InmemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.server == nil {
		return nil
	}
	return n.trans
}

// Kill stops a node's server, as a crash would; its data dir stays for
// Restart.
func (c *Cluster) Kill(n *Node) {
	c.t.Helper()
	n.mu.Lock()
	s := n.server
	n.server = nil
	n.mu.Unlock()
	if s == nil {
		return
	}
	for _, o := range c.Nodes {
		if t := o.transport(); t != nil {
			t.Disconnect(n.Addr)
		}
	}
	if err := s.Shutdown(); err != nil {
		c.t.Logf("meshtest: shutdown %s: %v", n.Name, err)
	}
}

// Restart starts a killed node again from its data dir; it rejoins the
// cluster it was part of.
func (c *Cluster) Restart(n *Node) {
	c.t.Helper()
	if n.Server() != nil {
		c.t.Fatalf("meshtest: restart %s: it is running", n.Name)
	}
	c.startNode(n, nil, true)
}

// Partition cuts every link between the nodes in group and the others,
// both ways.
func (c *Cluster) Partition(group ...*Node) {
	in := make(map[*Node]bool)
	for _, n := range group {
		in[n] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if in[a] == in[b] {
				continue
			}
			c.cut[[2]raft.ServerAddress{a.Addr, b.Addr}] = true
			if t := a.transport(); t != nil {
				t.Disconnect(b.Addr)
			}
		}
	}
}

// Heal restores every cut link.
func (c *Cluster) Heal() {
	c.mu.Lock()
	c.cut = make(map[[2]raft.ServerAddress]bool)
	c.mu.Unlock()
	c.connect()
}

// Leader waits until exactly one running node leads and returns it.
func (c *Cluster) Leader(t testing.TB) *Node {
	t.Helper()
	return c.LeaderExcept(t)
}

// LeaderExcept waits until one running node other than those given leads
// and returns it; the nodes given may still think they lead (a partitioned
// old leader does until its lease runs out).
func (c *Cluster) LeaderExcept(t testing.TB, not ...*Node) *Node {
	t.Helper()
	skip := make(map[*Node]bool)
	for _, n := range not {
		skip[n] = true
	}
	var leader *Node
	Eventually(t, 30*time.Second, func() error {
		leader = nil
		var leaders []string
		for _, n := range c.Nodes {
			if s := n.Server(); s != nil && !skip[n] && s.IsLeader() {
				leader = n
				leaders = append(leaders, n.Name)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("%d leaders %v", len(leaders), leaders)
		}
		return nil
	})
	return leader
}

// WaitApplied waits until every running node's store has reached index.
func (c *Cluster) WaitApplied(t testing.TB, index uint64) {
	t.Helper()
	Eventually(t, 30*time.Second, func() error {
		for _, n := range c.Nodes {
			if st := n.Store(); st != nil && st.LatestIndex() < index {
				return fmt.Errorf("%s is at %d, want %d", n.Name, st.LatestIndex(), index)
			}
		}
		return nil
	})
}

// Eventually polls cond until it returns nil, failing t with cond's last
// error when the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshtest: not within %v: %v", timeout, err)
		}
		<-time.After(5 * time.Millisecond) // poll again
	}
}

// shutdown stops every server, then checks that the goroutines they
// started have ended.
func (c *Cluster) shutdown() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > c.goStart {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			c.t.Errorf("meshtest: %d goroutines still running after shutdown (started with %d):\n%s",
				runtime.NumGoroutine(), c.goStart, leakReport(string(buf)))
			return
		}
		<-time.After(5 * time.Millisecond)
	}
}

// leakReport keeps the goroutine stacks that mention raft or Trellis.
func leakReport(all string) string {
	var out []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "hashicorp/raft") || strings.Contains(g, "trellis") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
