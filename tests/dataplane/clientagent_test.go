package dataplane

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"
)

// startAgentProcess runs `trellis agent` with args (after the loopback
// addresses and system-chosen ports every agent here gets) and waits
// until it serves its HTTP API and gRPC (xDS) port.
func startAgentProcess(t testing.TB, name string, args ...string) *Agent {
	t.Helper()
	argv := append([]string{"agent", "-node", name, "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", "0", "-dns-port", "-1", "-grpc-port", "0", "-log-level", "warn"}, args...)
	_, addrs := startProcess(t, name, argv,
		regexp.MustCompile(`HTTP API: ([0-9.:]+)`), regexp.MustCompile(`gRPC \(xDS\): ([0-9.:]+)`))
	c, err := api.NewClient(&api.Config{Address: addrs[0]})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{t: t, HTTPAddr: addrs[0], GRPCAddr: addrs[1], API: c, http: &http.Client{Timeout: waitFor}}
	t.Cleanup(a.http.CloseIdleConnections)
	return a
}

// startServerAndClient starts a datacenter of one server agent (raft on
// disk, the internal RPC on its server port) and one client agent
// joined to it by gossip, and waits until the client reaches the
// catalog through the server.
func startServerAndClient(t *testing.T) (srv, client *Agent) {
	t.Helper()
	serf := freePort(t)
	srv = startAgentProcess(t, "server", "-server", "-bootstrap", "-data-dir", t.TempDir(),
		"-server-port", "0", "-serf-lan-port", strconv.Itoa(serf), "-serf-wan-port", "0")
	client = startAgentProcess(t, "client", "-data-dir", t.TempDir(), "-serf-lan-port", "0",
		"-retry-join", loopback(serf), "-retry-interval", "100ms")
	eventually(t, "the client reaches the catalog through the server", func() error {
		nodes, _, err := client.API.Catalog().Nodes(nil)
		if err != nil || len(nodes) != 2 {
			return fmt.Errorf("nodes through the client: %d (%v)", len(nodes), err)
		}
		return nil
	})
	return srv, client
}

// answers asks through addr n times, one connection each, and counts
// the instances that answered.
func answers(addr string, n int) (map[string]int, error) {
	got := map[string]int{}
	for i := range n {
		name, err := Ask(addr, "who are you? "+strconv.Itoa(i))
		if err != nil {
			return got, err
		}
		got[name]++
	}
	return got, nil
}

// A sidecar of a client agent (no state store: the agent copies what it
// needs from the servers) carries traffic and follows what changes on
// the servers: web, on the client, reaches db-1 on the server; a new
// instance of db, on the client, gets its share; db-1 turned critical
// gets none; a deny intention written on the server is enforced by
// db-2's sidecar, on the client, and its removal lets web through again.
func TestClientAgentSidecars(t *testing.T) {
	srv, client := startServerAndClient(t)

	db1 := srv.Register(ServiceOptions{Name: "db", ID: "db-1", Port: StartApp(t, "db-1").Port(), TTL: true})
	srv.StartSidecar(db1)
	web := client.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
	client.StartSidecar(web)
	up := web.Upstreams["db"]
	eventually(t, "web, on the client, reaches db-1 on the server", func() error {
		name, err := Ask(up, "hello through the client's sidecar")
		if err == nil && name != "db-1" {
			return fmt.Errorf("answered by %s", name)
		}
		return err
	})

	db2App := StartApp(t, "db-2")
	db2 := client.Register(ServiceOptions{Name: "db", ID: "db-2", Port: db2App.Port(), TTL: true})
	db2Proxy := client.StartSidecar(db2)
	seen := map[string]bool{}
	eventually(t, "web reaches the new instance db-2 as well as db-1", func() error {
		name, err := Ask(up, "anyone new?")
		if err != nil {
			return err
		}
		seen[name] = true
		if len(seen) < 2 {
			return fmt.Errorf("reached only %v", slices.Sorted(maps.Keys(seen)))
		}
		return nil
	})

	if err := srv.API.Agent().FailTTL(db1.CheckID, "test: failing"); err != nil {
		t.Fatal(err)
	}
	// Round robin over two instances would answer 10 in a row from
	// db-2 only once db-1 is out.
	eventually(t, "db-1, critical, gets no connection", func() error {
		got, err := answers(up, 10)
		if err != nil {
			return err
		}
		if got["db-2"] != 10 {
			return fmt.Errorf("answers %v", got)
		}
		return nil
	})

	srv.Intention("web", "db", api.IntentionActionDeny)
	eventually(t, "the deny intention refuses web", func() error { return refused(up) })
	conns := db2App.Conns()
	denied := db2Proxy.Stats().Sum(statDenied, "listener", publicLn)
	if err := refused(up); err != nil {
		t.Fatalf("refused once, then %v", err)
	}
	db2Proxy.WaitStat(statDenied, denied+1, "listener", publicLn)
	if got := db2App.Conns(); got != conns {
		t.Fatalf("db-2 accepted %d connections from refused requests", got-conns)
	}

	srv.DeleteIntention("web", "db")
	eventually(t, "web reaches db-2 again once the intention is removed", func() error {
		_, err := Ask(up, "back?")
		return err
	})
}
