package agent_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// startAgent starts an agent in this process on 127.0.0.1, with ports
// chosen by the system, and closes it at the end of the test.
func startAgent(t *testing.T, opts agent.Options, args ...string) *agent.Agent {
	t.Helper()
	args = append([]string{"-data-dir", t.TempDir(), "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", "0", "-dns-port", "-1", "-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0",
		"-grpc-port", "-1"}, args...)
	cfg, err := config.Load(args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.New(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return a
}

// A client agent, which has no state store, builds its sidecars'
// snapshots from the servers' state: the first has the upstream's
// instance (on another node), a leaf its CA client had signed and the
// roots; an intention written on a server, and an upstream instance
// turned critical there, reach the sidecar's next snapshots.
func TestClientAgentProxySnapshots(t *testing.T) {
	srv := startAgent(t, agent.Options{}, "-server", "-bootstrap", "-node", "srv")
	var join string
	for _, m := range srv.Members(false) {
		join = net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
	}
	q := &snapshotQueue{updates: make(chan *proxycfg.Snapshot, 256), removes: make(chan string, 16)}
	client := startAgent(t, agent.Options{ProxySnapshots: q}, "-node", "client", "-retry-join", join, "-retry-interval", "100ms")

	if err := srv.AddService(&structs.ServiceDefinition{Kind: structs.ServiceKindConnectProxy, ID: "db-proxy",
		Name: "db-proxy", Port: 21001,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "db", LocalServicePort: 5432}}, false); err != nil {
		t.Fatal(err)
	}
	if err := client.AddService(webWithSidecar(&structs.ServiceDefinition{Port: 21000, Proxy: &structs.ConnectProxyConfig{
		Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}},
	}}), false); err != nil {
		t.Fatal(err)
	}

	next := func(what string, cond func(*proxycfg.Snapshot) error) *proxycfg.Snapshot {
		t.Helper()
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		last := fmt.Errorf("no snapshot")
		for {
			select {
			case s := <-q.updates:
				if s.ProxyID != "web-sidecar-proxy" {
					continue
				}
				if last = cond(s); last == nil {
					return s
				}
			case <-deadline.C:
				t.Fatalf("%s: %v", what, last)
			}
		}
	}
	dbAt := "127.0.0.1:21001"
	snap := next("a snapshot of the client's sidecar with db's instance", func(s *proxycfg.Snapshot) error {
		if len(s.Upstreams) != 1 || len(s.Upstreams[0].Endpoints) != 1 {
			return fmt.Errorf("upstreams %+v", s.Upstreams)
		}
		if ep := s.Upstreams[0].Endpoints[0]; ep.Address+":"+strconv.Itoa(ep.Port) != dbAt {
			return fmt.Errorf("db endpoint %+v, want %s", ep, dbAt)
		}
		return nil
	})
	if snap.Leaf == nil || !strings.Contains(snap.Leaf.CertPEM, "BEGIN CERTIFICATE") || len(snap.Roots) == 0 ||
		snap.Service != "web" || snap.Address != "127.0.0.1" {
		t.Fatalf("snapshot %+v: want web's, with a leaf and the roots", snap)
	}

	c, err := api.NewClient(&api.Config{Address: srv.HTTPAddrs()[0]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "db", DestinationName: "web",
		Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	next("the intention written on the server", func(s *proxycfg.Snapshot) error {
		if len(s.Intentions) != 1 || len(s.Intentions[0].Sources) != 1 || s.Intentions[0].Sources[0].Name != "db" {
			return fmt.Errorf("intentions %+v", s.Intentions)
		}
		return nil
	})
	if err := srv.ServiceMaintenance("db-proxy", true, "test"); err != nil {
		t.Fatal(err)
	}
	next("db's instance in maintenance on the server", func(s *proxycfg.Snapshot) error {
		if len(s.Upstreams) != 1 || len(s.Upstreams[0].Endpoints) != 0 {
			return fmt.Errorf("upstreams %+v, want db's without endpoints", s.Upstreams)
		}
		if !slices.ContainsFunc(s.Intentions, func(e *configentry.ServiceIntentionsConfigEntry) bool { return e.Name == "web" }) {
			return fmt.Errorf("intentions %+v lost", s.Intentions)
		}
		return nil
	})
}
