package cluster

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// startDC starts a one-server datacenter (plus a client agent when
// withClient) on the given addresses; the server joins the WAN pool
// through wanJoin, if set.
func startDC(t *testing.T, dc, serverIP, clientIP string, wanJoin string) (srv, client *member) {
	t.Helper()
	srv = &member{name: "srv-" + dc, ip: serverIP, dir: t.TempDir(), dnsPort: -1,
		httpPort: freePort(t, serverIP), serfPort: freePort(t, serverIP), rpcPort: freePort(t, serverIP),
		wanPort: freePort(t, serverIP), extra: []string{"-datacenter", dc, "-retry-interval-wan", "200ms"}}
	if wanJoin != "" {
		srv.extra = append(srv.extra, "-retry-join-wan", wanJoin)
	}
	all := []*member{srv}
	if clientIP != "" {
		client = &member{name: "client-" + dc, ip: clientIP, dir: t.TempDir(), isClient: true,
			httpPort: freePort(t, clientIP), serfPort: freePort(t, clientIP), rpcPort: freePort(t, clientIP),
			dnsPort: freePort(t, clientIP), wanPort: -1, extra: []string{"-datacenter", dc}}
		all = append(all, client)
	}
	srv.start(t, all)
	waitLeader(t, []*member{srv}, nil)
	if client != nil {
		client.start(t, all)
	}
	return srv, client
}

func (m *member) wanAddr() string { return fmt.Sprintf("%s:%d", m.ip, m.wanPort) }

// Two datacenters federated over the WAN pool: each server sees the other
// datacenter's server, lists datacenters its own first, forwards ?dc=
// reads, writes and blocking queries there (from a client agent too), and
// answers DNS for the other datacenter's services. An unknown datacenter
// is "No path to datacenter"; PUT /v1/agent/join?wan=1 joins a third.
func TestTwoDatacenters(t *testing.T) {
	s2, _ := startDC(t, "dc2", "127.0.0.42", "", "")
	s1, c1 := startDC(t, "dc1", "127.0.0.41", "127.0.0.43", s2.wanAddr())
	a1, a2, ac := s1.client(t), s2.client(t), c1.client(t)

	eventually(t, 30*time.Second, func() error {
		for _, c := range []*api.Client{a1, a2} {
			ms, err := c.Agent().Members(true)
			if err != nil {
				return err
			}
			var alive []string
			for _, m := range ms {
				if m.Status == 1 { // alive
					alive = append(alive, m.Name)
				}
			}
			slices.Sort(alive)
			if !slices.Equal(alive, []string{"srv-dc1.dc1", "srv-dc2.dc2"}) {
				return fmt.Errorf("alive WAN members %v, want srv-dc1.dc1 and srv-dc2.dc2", alive)
			}
		}
		return nil
	})
	if ms, err := ac.Agent().Members(true); err != nil || len(ms) != 0 {
		t.Errorf("a client agent's WAN members = %v, %v; want none: it is not in the WAN pool", ms, err)
	}
	for _, tt := range []struct {
		c    *api.Client
		want []string
	}{{a1, []string{"dc1", "dc2"}}, {a2, []string{"dc2", "dc1"}}, {ac, []string{"dc1", "dc2"}}} {
		dcs, err := tt.c.Catalog().Datacenters()
		if err != nil || !slices.Equal(dcs, tt.want) {
			t.Errorf("datacenters = %v, %v; want %v", dcs, err, tt.want)
		}
	}

	// A service registered in dc2 is read from dc1, on the server and
	// through the client agent.
	reg := &api.AgentServiceRegistration{Name: "web", ID: "web-a", Port: 8080,
		Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}}
	if err := a2.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	in2 := &api.QueryOptions{Datacenter: "dc2"}
	var idx uint64
	for _, c := range []*api.Client{a1, ac} {
		entries, meta, err := c.Health().Service("web", "", true, in2)
		if err != nil || len(entries) != 1 || entries[0].Node.Datacenter != "dc2" || entries[0].Service.ID != "web-a" {
			t.Fatalf("web in dc2, asked in dc1: %v, %v; want web-a of dc2", entries, err)
		}
		idx = meta.LastIndex
	}
	if entries, _, err := a1.Health().Service("web", "", false, nil); err != nil || len(entries) != 0 {
		t.Fatalf("web in dc1 = %v, %v; want none: it lives in dc2", entries, err)
	}

	// A blocking query on dc2, asked in dc1, wakes at dc2's change.
	woke := make(chan error, 1)
	go func() {
		entries, _, err := ac.Health().Service("web", "", true,
			&api.QueryOptions{Datacenter: "dc2", WaitIndex: idx, WaitTime: time.Minute})
		if err == nil && len(entries) != 2 {
			err = fmt.Errorf("woke with %d instances, want 2", len(entries))
		}
		woke <- err
	}()
	reg2 := *reg
	reg2.ID, reg2.Port = "web-b", 8081
	if err := a2.Agent().ServiceRegister(&reg2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a blocking query on dc2 did not wake at dc2's change")
	}

	// Writes with ?dc= land in that datacenter only.
	if _, err := ac.KV().Put(&api.KVPair{Key: "where", Value: []byte("dc2")}, &api.WriteOptions{Datacenter: "dc2"}); err != nil {
		t.Fatal(err)
	}
	if kv, _, err := a2.KV().Get("where", nil); err != nil || kv == nil || string(kv.Value) != "dc2" {
		t.Fatalf("dc2's KV after a write from dc1: %v, %v", kv, err)
	}
	if kv, _, err := a1.KV().Get("where", nil); err != nil || kv != nil {
		t.Fatalf("dc1's KV = %v, %v; want nothing: the write went to dc2", kv, err)
	}

	// DNS on the client agent answers for dc2's services.
	eventually(t, 10*time.Second, func() error {
		m := new(dns.Msg)
		m.SetQuestion("web.service.dc2.consul.", dns.TypeSRV)
		r, err := dns.Exchange(m, net.JoinHostPort(c1.ip, fmt.Sprint(c1.dnsPort)))
		if err != nil {
			return err
		}
		var got []string
		for _, rr := range r.Answer {
			if srv, ok := rr.(*dns.SRV); ok {
				got = append(got, fmt.Sprintf("%s:%d", srv.Target, srv.Port))
			}
		}
		slices.Sort(got)
		want := []string{"srv-dc2.node.dc2.consul.:8080", "srv-dc2.node.dc2.consul.:8081"}
		if !slices.Equal(got, want) {
			return fmt.Errorf("SRV web.service.dc2.consul = %v (rcode %d), want %v", got, r.Rcode, want)
		}
		return nil
	})

	// An unknown datacenter has no path, from a server or a client.
	for _, c := range []*api.Client{a1, ac} {
		_, _, err := c.KV().Get("where", &api.QueryOptions{Datacenter: "dc3"})
		if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "No path to datacenter") {
			t.Errorf("KV get in dc3 = %v, want 500 No path to datacenter", err)
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("web.service.dc3.consul.", dns.TypeA)
	if r, err := dns.Exchange(m, net.JoinHostPort(c1.ip, fmt.Sprint(c1.dnsPort))); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("DNS in dc3: %v, %v; want NXDOMAIN", r, err)
	}

	// A third datacenter joins through the API.
	s3, _ := startDC(t, "dc3", "127.0.0.44", "", "")
	if err := ac.Agent().Join(s3.wanAddr(), true); err == nil || !strings.Contains(err.Error(), "Must be a server") {
		t.Errorf("WAN join on a client agent: %v, want Must be a server to join WAN cluster", err)
	}
	if err := a1.Agent().Join(s3.wanAddr(), true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		for _, c := range []*api.Client{a1, a2, s3.client(t)} {
			dcs, err := c.Catalog().Datacenters()
			if err != nil {
				return err
			}
			if len(dcs) != 3 {
				return fmt.Errorf("datacenters %v, want 3", dcs)
			}
		}
		return nil
	})
	if _, err := a1.KV().Put(&api.KVPair{Key: "where", Value: []byte("dc3")}, &api.WriteOptions{Datacenter: "dc3"}); err != nil {
		t.Fatalf("write to dc3 after the join: %v", err)
	}

	// /v1/coordinate/datacenters lists every datacenter's servers.
	eventually(t, 30*time.Second, func() error {
		maps, err := a1.Coordinate().Datacenters()
		if err != nil {
			return err
		}
		var got []string
		for _, dm := range maps {
			for _, c := range dm.Coordinates {
				got = append(got, dm.Datacenter+"/"+c.Node)
			}
		}
		slices.Sort(got)
		if want := []string{"dc1/srv-dc1.dc1", "dc2/srv-dc2.dc2", "dc3/srv-dc3.dc3"}; !slices.Equal(got, want) {
			return fmt.Errorf("coordinate datacenters %v, want %v", got, want)
		}
		return nil
	})
}
