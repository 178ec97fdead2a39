package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// startClient starts a client agent on 127.0.0.20 joined to the servers.
func startClient(t *testing.T, servers []*member) *member {
	t.Helper()
	ip := "127.0.0.20"
	c := &member{name: "client1", ip: ip, dir: t.TempDir(), isClient: true}
	all := append(append([]*member{}, servers...), c)
	// A port picked free can be taken before the agent binds it (UDP
	// for DNS is only hoped free): on an early exit, new ports.
	for attempt := 1; ; attempt++ {
		c.httpPort, c.serfPort, c.rpcPort = freePort(t, ip), freePort(t, ip), freePort(t, ip)
		c.dnsPort = freePort(t, ip)
		err := c.tryStart(t, all)
		if err == nil {
			return c
		}
		if !errors.Is(err, errExitedEarly) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; again with other ports", err)
	}
}

// A client agent keeps no raft state: it registers and checks its services
// through the servers, serves the API and DNS from them, and carries on
// when a server it talked to dies.
func TestClientAgent(t *testing.T) {
	servers := startCluster(t, 3)
	client := startClient(t, servers)
	c := client.client(t)

	reg := &api.AgentServiceRegistration{Name: "web", ID: "web1", Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "web1-ttl", TTL: "10m", Status: api.HealthPassing}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		entries, _, err := c.Health().Service("web", "", true, nil)
		if err != nil || len(entries) != 1 || entries[0].Node.Node != client.name {
			return fmt.Errorf("passing web through the client = %d entries (%v)", len(entries), err)
		}
		return nil
	})
	// Headers the servers use among themselves are ignored from outside:
	// a forged "forwarded" mark must not make the client serve state it
	// does not have.
	req, err := http.NewRequest("GET", "http://"+client.addr()+"/v1/catalog/nodes", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Trellis-Forwarded", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("forged forwarded header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("forged forwarded header: status %d, want 200 (served through a server)", resp.StatusCode)
	}

	// KV and sessions through the client; a session defaults to the
	// client's node.
	if _, err := c.KV().Put(&api.KVPair{Key: "via-client", Value: []byte("yes")}, nil); err != nil {
		t.Fatal(err)
	}
	if kv, _, err := servers[0].client(t).KV().Get("via-client", &api.QueryOptions{RequireConsistent: true}); err != nil || kv == nil {
		t.Fatalf("write through the client not on the servers: %+v %v", kv, err)
	}
	sid, _, err := c.Session().Create(&api.SessionEntry{Name: "c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, _, err := c.Session().Info(sid, nil); err != nil || s == nil || s.Node != client.name {
		t.Fatalf("session through the client = %+v, %v; want node %s", s, err, client.name)
	}
	// DNS on the client answers from the servers.
	m := new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV)
	eventually(t, 30*time.Second, func() error {
		r, err := dns.Exchange(m, net.JoinHostPort(client.ip, fmt.Sprint(client.dnsPort)))
		if err != nil || len(r.Answer) != 1 {
			return fmt.Errorf("DNS through the client: %v %v", r, err)
		}
		if srv := r.Answer[0].(*dns.SRV); srv.Port != 8080 {
			return fmt.Errorf("SRV port %d", srv.Port)
		}
		return nil
	})

	// Kill servers one at a time down to a quorum of two: the client's
	// check updates still reach the catalog through a live server.
	servers[0].kill()
	waitLeader(t, servers, servers[0])
	if err := c.Agent().UpdateTTL("web1-ttl", "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		checks, _, err := servers[1].client(t).Health().Checks("web", nil)
		if err != nil || len(checks) != 1 || checks[0].Status != api.HealthCritical {
			return fmt.Errorf("web checks on a server = %+v (%v), want critical", checks, err)
		}
		return nil
	})
	if svcs, _, err := servers[2].client(t).Catalog().Service("web", "", nil); err != nil || len(svcs) != 1 {
		t.Fatalf("web lost from the catalog after a server died: %+v %v", svcs, err)
	}
}
