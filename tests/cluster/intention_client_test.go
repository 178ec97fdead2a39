package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// A client agent has no raft state: it answers authorize from its cache
// of the servers' intentions, which follows writes made anywhere.
func TestClientAgentAuthorize(t *testing.T) {
	servers := startCluster(t, 1)
	client := startClient(t, servers)
	c := client.client(t)
	uri := "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
	authorized := func() (bool, error) {
		r, err := c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: uri})
		if err != nil {
			return false, err
		}
		return r.Authorized, nil
	}
	eventually(t, 30*time.Second, func() error {
		if ok, err := authorized(); err != nil || !ok {
			return fmt.Errorf("authorize before any intention = %v, %v; want allowed", ok, err)
		}
		return nil
	})
	if _, err := servers[0].client(t).Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db",
		Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if ok, err := authorized(); err != nil || ok {
			return fmt.Errorf("authorize on the client after a deny on a server = %v, %v; want denied", ok, err)
		}
		return nil
	})
	// The mesh entry's default reaches the client's cache too: with
	// DefaultIntentionPolicy deny, a pair no intention covers is denied.
	toCache := func() (*api.AgentAuthorize, error) {
		return c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "cache", ClientCertURI: uri})
	}
	if r, err := toCache(); err != nil || !r.Authorized {
		t.Fatalf("authorize web -> cache before the mesh default = %+v, %v; want allowed", r, err)
	}
	if _, err := servers[0].client(t).Raw().Write("/v1/config", map[string]string{"Kind": "mesh", "DefaultIntentionPolicy": "deny"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if r, err := toCache(); err != nil || r.Authorized || r.Reason != "Default behavior configured by the mesh config entry" {
			return fmt.Errorf("authorize web -> cache on the client after a mesh deny = %+v, %v; want denied by the mesh", r, err)
		}
		return nil
	})
}
