package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// snapshotQueue is a proxycfg.Publisher that queues what it gets.
type snapshotQueue struct {
	updates chan *proxycfg.Snapshot
	removes chan string
}

func (q *snapshotQueue) Update(s *proxycfg.Snapshot) { q.updates <- s }
func (q *snapshotQueue) Remove(id string)            { q.removes <- id }

// A sidecar registered on a dev agent gets a snapshot with a leaf signed
// by the agent's CA, the roots and its upstream's instances; removing it
// removes its snapshot.
func TestAgentProxySnapshots(t *testing.T) {
	q := &snapshotQueue{updates: make(chan *proxycfg.Snapshot, 256), removes: make(chan string, 16)}
	a := agenttest.Start(t, agenttest.Options{Agent: agent.Options{ProxySnapshots: q}})

	// db's proxy, registered with no checks: healthy.
	if err := a.AddService(&structs.ServiceDefinition{Kind: structs.ServiceKindConnectProxy, ID: "db-proxy",
		Name: "db-proxy", Port: 21001,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "db", LocalServicePort: 5432}}, false); err != nil {
		t.Fatal(err)
	}
	if err := a.AddService(webWithSidecar(&structs.ServiceDefinition{Port: 21000, Proxy: &structs.ConnectProxyConfig{
		Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}},
	}}), false); err != nil {
		t.Fatal(err)
	}

	deadline := time.After(10 * time.Second)
	var snap *proxycfg.Snapshot
	for snap == nil {
		select {
		case s := <-q.updates:
			if s.ProxyID == "web-sidecar-proxy" && len(s.Upstreams) == 1 && len(s.Upstreams[0].Endpoints) == 1 {
				snap = s
			}
		case <-deadline:
			t.Fatal("no snapshot of web-sidecar-proxy with db's instance")
		}
	}
	if snap.Service != "web" || snap.Port != 21000 || snap.LocalPort != 8080 || snap.Protocol != "tcp" || !snap.DefaultAllow {
		t.Errorf("snapshot %+v, want web's sidecar on 21000 to 8080, tcp, default allow", snap)
	}
	if snap.Leaf == nil || !strings.Contains(snap.Leaf.CertPEM, "BEGIN CERTIFICATE") || len(snap.Roots) == 0 ||
		!strings.HasSuffix(snap.TrustDomain, ".consul") {
		t.Errorf("leaf %+v, roots %d, trust domain %q: want a signed leaf and the roots", snap.Leaf, len(snap.Roots), snap.TrustDomain)
	}
	if ep := snap.Upstreams[0].Endpoints[0]; ep.Port != 21001 || ep.Address != a.Config.AdvertiseAddr || ep.Weight != 1 {
		t.Errorf("db endpoint %+v, want the db proxy at %s:21001", ep, a.Config.AdvertiseAddr)
	}

	if err := a.RemoveService("web-sidecar-proxy"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case id := <-q.removes:
			if id == "web-sidecar-proxy" {
				return
			}
		case <-q.updates:
		case <-deadline:
			t.Fatal("no Remove of web-sidecar-proxy")
		}
	}
}
