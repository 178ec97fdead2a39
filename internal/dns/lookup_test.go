package dns

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// webCatalog has service web on node-1 (node address 10.0.0.1) and on
// node-2 with its own address 10.0.0.7, and service v6 on node-3 (::1).
func webCatalog() *fakeCatalog {
	c := newFakeCatalog()
	c.addNode("node-1", "10.0.0.1", map[string]string{"rack": "a", "rfc1035-spf": "v=spf1 -all"})
	c.addNode("node-2", "10.0.0.2", nil)
	c.addNode("node-3", "2001:db8::3", nil)
	c.addService("node-1", &structs.NodeService{ID: "web-1", Service: "web", Port: 8080, Tags: []string{"primary", "v1.2"},
		Weights: structs.Weights{Passing: 10, Warning: 1}}, structs.HealthPassing)
	c.addService("node-2", &structs.NodeService{ID: "web-2", Service: "web", Address: "10.0.0.7", Port: 8081, Tags: []string{"secondary"}},
		structs.HealthPassing)
	c.addService("node-3", &structs.NodeService{ID: "v6-1", Service: "v6", Port: 9000}, structs.HealthPassing)
	return c
}

func TestServiceAddressRecords(t *testing.T) {
	s := startServer(t, baseConfig(), webCatalog())
	for _, network := range []string{"udp", "tcp"} {
		tests := []struct {
			name  string
			qtype uint16
			want  []string
		}{
			{"web.service.consul.", dns.TypeA, []string{"10.0.0.1", "10.0.0.7"}},
			{"web.service.consul.", dns.TypeANY, []string{"10.0.0.1", "10.0.0.7"}},
			{"web.service.consul.", dns.TypeAAAA, nil},
			{"v6.service.consul.", dns.TypeAAAA, []string{"2001:db8::3"}},
			{"v6.service.consul.", dns.TypeA, nil},
			{"v6.service.consul.", dns.TypeANY, []string{"2001:db8::3"}},
			{"WEB.Service.CONSUL.", dns.TypeA, []string{"10.0.0.1", "10.0.0.7"}},
		}
		for _, tt := range tests {
			t.Run(network+"/"+tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
				r := ask(t, network, s.Addr(), tt.name, tt.qtype)
				wantRcode(t, r, dns.RcodeSuccess)
				if !r.Authoritative {
					t.Error("AA not set")
				}
				got := addrs(r.Answer)
				slices.Sort(got)
				if !slices.Equal(got, tt.want) {
					t.Errorf("answers %v, want %v", got, tt.want)
				}
				for _, rr := range r.Answer {
					if rr.Header().Name != tt.name {
						t.Errorf("owner %q, want the question's %q", rr.Header().Name, tt.name)
					}
				}
				if len(tt.want) == 0 {
					wantSOA(t, r, "consul.")
				}
			})
		}
	}
}

func TestServiceSRV(t *testing.T) {
	cat := webCatalog()
	cat.addService("node-3", &structs.NodeService{ID: "web-3", Service: "web", Port: 8082,
		Weights: structs.Weights{Passing: 5, Warning: 2}}, structs.HealthWarning)
	s := startServer(t, baseConfig(), cat)

	r := ask(t, "udp", s.Addr(), "web.service.consul.", dns.TypeSRV)
	wantRcode(t, r, dns.RcodeSuccess)
	type srvKey struct {
		target       string
		port, weight uint16
	}
	var got []srvKey
	for _, srv := range srvs(r.Answer) {
		if srv.Priority != 1 {
			t.Errorf("%v: priority %d, want 1", srv, srv.Priority)
		}
		got = append(got, srvKey{srv.Target, srv.Port, srv.Weight})
	}
	slices.SortFunc(got, func(a, b srvKey) int { return int(a.port) - int(b.port) })
	want := []srvKey{
		{"node-1.node.dc1.consul.", 8080, 10},  // node's address: node target, passing weight
		{"0a000007.addr.dc1.consul.", 8081, 1}, // own address: addr target; weight 0 becomes 1
		{"node-3.node.dc1.consul.", 8082, 2},   // in warning: warning weight
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SRV %v\nwant %v", got, want)
	}
	extra := map[string]string{}
	for _, rr := range r.Extra {
		extra[rr.Header().Name] = addrs([]dns.RR{rr})[0]
	}
	wantExtra := map[string]string{
		"node-1.node.dc1.consul.":   "10.0.0.1",
		"0a000007.addr.dc1.consul.": "10.0.0.7",
		"node-3.node.dc1.consul.":   "2001:db8::3",
	}
	if len(extra) != len(wantExtra) || len(r.Extra) != len(wantExtra) {
		t.Fatalf("additional %v, want %v", r.Extra, wantExtra)
	}
	for k, v := range wantExtra {
		if extra[k] != v {
			t.Errorf("additional %s = %q, want %q", k, extra[k], v)
		}
	}

	// The targets resolve.
	for name, want := range wantExtra {
		qtype := dns.TypeA
		if want == "2001:db8::3" {
			qtype = dns.TypeAAAA
		}
		r := ask(t, "udp", s.Addr(), name, qtype)
		if got := addrs(r.Answer); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, want %s", name, got, want)
		}
	}
}

func TestSRVGlueIsSharedPerNode(t *testing.T) {
	cat := newFakeCatalog()
	cat.addNode("node-1", "10.0.0.1", nil)
	cat.addService("node-1", &structs.NodeService{ID: "a", Service: "db", Port: 1}, structs.HealthPassing)
	cat.addService("node-1", &structs.NodeService{ID: "b", Service: "db", Port: 2}, structs.HealthPassing)
	s := startServer(t, baseConfig(), cat)

	r := ask(t, "udp", s.Addr(), "db.service.consul.", dns.TypeSRV)
	if len(srvs(r.Answer)) != 2 || len(r.Extra) != 1 {
		t.Fatalf("want 2 SRV and one A glue, got\n%v", r)
	}
	// Two instances at one address are one A record.
	r = ask(t, "udp", s.Addr(), "db.service.consul.", dns.TypeA)
	if got := addrs(r.Answer); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("A %v, want [10.0.0.1]", got)
	}
}

func TestServiceNameForms(t *testing.T) {
	s := startServer(t, Config{Datacenter: "dc1", NodeName: "agent-1", AltDomain: "mesh.example"}, webCatalog())
	tests := []struct {
		name  string
		rcode int
		ports []uint16
	}{
		{"web.service.consul.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"primary.web.service.consul.", dns.RcodeSuccess, []uint16{8080}},
		{"PRIMARY.web.service.consul.", dns.RcodeSuccess, []uint16{8080}},
		{"v1.2.web.service.consul.", dns.RcodeSuccess, []uint16{8080}}, // a tag with a dot
		{"secondary.web.service.consul.", dns.RcodeSuccess, []uint16{8081}},
		{"nosuchtag.web.service.consul.", dns.RcodeSuccess, nil},
		{"_web._tcp.service.consul.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"_web._primary.service.consul.", dns.RcodeSuccess, []uint16{8080}},
		{"_web._secondary.service.dc1.consul.", dns.RcodeSuccess, []uint16{8081}},
		{"web.service.dc1.consul.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"web.service.DC1.consul.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"web.service.dc1.dc.consul.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"primary.web.service.dc1.consul.", dns.RcodeSuccess, []uint16{8080}},
		{"web.service.mesh.example.", dns.RcodeSuccess, []uint16{8080, 8081}},
		{"web.service.dc2.consul.", dns.RcodeNameError, nil},
		{"web.service.dc1.extra.consul.", dns.RcodeNameError, nil},
		{"nosuch.service.consul.", dns.RcodeNameError, nil},
		{"service.consul.", dns.RcodeNameError, nil},
		{"web.query.consul.", dns.RcodeNameError, nil},
		{"web.consul.", dns.RcodeNameError, nil},
		{"web.service.mesh.example.consul.", dns.RcodeNameError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ask(t, "udp", s.Addr(), tt.name, dns.TypeSRV)
			wantRcode(t, r, tt.rcode)
			var ports []uint16
			for _, srv := range srvs(r.Answer) {
				ports = append(ports, srv.Port)
			}
			slices.Sort(ports)
			if !slices.Equal(ports, tt.ports) {
				t.Errorf("ports %v, want %v", ports, tt.ports)
			}
			if len(tt.ports) == 0 {
				domain := "consul."
				if dns.IsSubDomain("mesh.example.", tt.name) {
					domain = "mesh.example."
				}
				wantSOA(t, r, domain)
			}
		})
	}
}

func TestAltDomainAnswersInAltDomain(t *testing.T) {
	s := startServer(t, Config{Datacenter: "dc1", NodeName: "agent-1", AltDomain: "Mesh.Example"}, webCatalog())
	r := ask(t, "tcp", s.Addr(), "web.service.mesh.example.", dns.TypeSRV)
	for _, srv := range srvs(r.Answer) {
		if !dns.IsSubDomain("dc1.mesh.example.", srv.Target) {
			t.Errorf("target %s not in the alt domain", srv.Target)
		}
	}
	r = ask(t, "udp", s.Addr(), "node-1.node.mesh.example.", dns.TypeA)
	if got := addrs(r.Answer); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("node in alt domain: %v", got)
	}
}

func TestNodeLookup(t *testing.T) {
	cat := webCatalog()
	cat.addNode("ext", "db.example.com", nil)
	s := startServer(t, Config{Datacenter: "dc1", NodeName: "agent-1", NodeTTL: 30 * time.Second}, cat)
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"node-1.node.consul.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"Node-1.NODE.dc1.consul.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"node-1.node.dc1.dc.consul.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.1"}},
		{"node-1.node.consul.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"node-3.node.consul.", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::3"}},
		{"node-3.node.consul.", dns.TypeANY, dns.RcodeSuccess, []string{"2001:db8::3"}},
		{"nosuch.node.consul.", dns.TypeA, dns.RcodeNameError, nil},
		{"node-1.node.dc2.consul.", dns.TypeA, dns.RcodeNameError, nil},
		{"node.consul.", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			r := ask(t, "udp", s.Addr(), tt.name, tt.qtype)
			wantRcode(t, r, tt.rcode)
			if got := addrs(r.Answer); !slices.Equal(got, tt.want) {
				t.Errorf("answers %v, want %v", got, tt.want)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != 30 {
					t.Errorf("TTL %d, want NodeTTL 30", rr.Header().Ttl)
				}
			}
			if len(tt.want) == 0 {
				wantSOA(t, r, "consul.")
			}
		})
	}

	t.Run("TXT meta", func(t *testing.T) {
		r := ask(t, "udp", s.Addr(), "node-1.node.consul.", dns.TypeTXT)
		if len(r.Answer) != 1 {
			t.Fatalf("want one TXT, got %v", r.Answer)
		}
		got := r.Answer[0].(*dns.TXT).Txt
		if want := []string{"rack=a", "v=spf1 -all"}; !slices.Equal(got, want) {
			t.Errorf("TXT %q, want %q", got, want)
		}
	})
	t.Run("host name address is a CNAME", func(t *testing.T) {
		r := ask(t, "udp", s.Addr(), "ext.node.consul.", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "db.example.com." {
			t.Errorf("want CNAME db.example.com., got %v", r.Answer)
		}
	})
}

func TestNXDOMAINHasSOA(t *testing.T) {
	s := startServer(t, Config{Datacenter: "dc1", NodeName: "agent-1", AltDomain: "alt."}, webCatalog())
	for _, name := range []string{"nosuch.service.consul.", "nosuch.node.consul.", "foo.bar.consul.", "nosuch.service.alt.", "zz.addr.consul."} {
		t.Run(name, func(t *testing.T) {
			r := ask(t, "udp", s.Addr(), name, dns.TypeA)
			wantRcode(t, r, dns.RcodeNameError)
			if !r.Authoritative || len(r.Answer) != 0 {
				t.Errorf("want authoritative and no answers, got\n%v", r)
			}
			domain := "consul."
			if dns.IsSubDomain("alt.", name) {
				domain = "alt."
			}
			wantSOA(t, r, domain)
		})
	}
}

func TestApexSOAAndNS(t *testing.T) {
	cat := webCatalog()
	cat.addNode("agent-1", "10.0.0.100", nil)
	s := startServer(t, baseConfig(), cat)

	r := ask(t, "udp", s.Addr(), "consul.", dns.TypeSOA)
	wantRcode(t, r, dns.RcodeSuccess)
	if len(r.Answer) != 1 {
		t.Fatalf("SOA answer %v", r.Answer)
	}
	r.Ns = r.Answer // reuse the SOA checks
	wantSOA(t, r, "consul.")

	r = ask(t, "udp", s.Addr(), "CONSUL.", dns.TypeNS)
	wantRcode(t, r, dns.RcodeSuccess)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "agent-1.node.dc1.consul." {
		t.Fatalf("NS answer %v, want agent-1.node.dc1.consul.", r.Answer)
	}
	if got := addrs(r.Extra); !slices.Equal(got, []string{"10.0.0.100"}) {
		t.Fatalf("NS glue %v, want [10.0.0.100]", got)
	}

	r = ask(t, "udp", s.Addr(), "consul.", dns.TypeA)
	wantRcode(t, r, dns.RcodeSuccess)
	if len(r.Answer) != 0 {
		t.Fatalf("apex A: %v", r.Answer)
	}
	wantSOA(t, r, "consul.")
}

func TestHealthFiltering(t *testing.T) {
	cat := newFakeCatalog()
	add := func(node, addr, status string) {
		cat.addNode(node, addr, nil)
		cat.addService(node, &structs.NodeService{ID: "api-" + node, Service: "api", Port: 80}, status)
	}
	add("passing", "10.0.1.1", structs.HealthPassing)
	add("warning", "10.0.1.2", structs.HealthWarning)
	add("critical", "10.0.1.3", structs.HealthCritical)
	add("maint", "10.0.1.4", structs.HealthMaint)
	add("node-down", "10.0.1.5", structs.HealthPassing)
	cat.setNodeCheck("node-down", structs.HealthCritical) // serfHealth failing drops all its services
	// One failing and one passing check on the same instance: critical wins.
	cat.addNode("mixed", "10.0.1.6", nil)
	cat.addService("mixed", &structs.NodeService{ID: "api-mixed", Service: "api", Port: 80},
		structs.HealthPassing, structs.HealthCritical)
	// A critical check of another service on the node does not count.
	cat.addNode("other", "10.0.1.7", nil)
	cat.addService("other", &structs.NodeService{ID: "api-other", Service: "api", Port: 80}, structs.HealthPassing)
	cat.mu.Lock()
	cat.checks["other"] = append(cat.checks["other"], &structs.HealthCheck{
		Node: "other", CheckID: "x", Status: structs.HealthCritical, ServiceID: "unrelated"})
	cat.mu.Unlock()
	// A service whose only instance is critical exists but has no answer.
	cat.addService("critical", &structs.NodeService{ID: "down-1", Service: "down", Port: 80}, structs.HealthCritical)

	for _, tt := range []struct {
		onlyPassing bool
		want        []string
	}{
		{false, []string{"10.0.1.1", "10.0.1.2", "10.0.1.7"}},
		{true, []string{"10.0.1.1", "10.0.1.7"}},
	} {
		name := "warning included"
		if tt.onlyPassing {
			name = "only passing"
		}
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.OnlyPassing = tt.onlyPassing
			cfg.UDPAnswerLimit = 10
			s := startServer(t, cfg, cat)
			r := ask(t, "udp", s.Addr(), "api.service.consul.", dns.TypeA)
			got := addrs(r.Answer)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("healthy %v, want %v", got, tt.want)
			}

			r = ask(t, "udp", s.Addr(), "down.service.consul.", dns.TypeA)
			wantRcode(t, r, dns.RcodeSuccess) // the service exists
			if len(r.Answer) != 0 {
				t.Errorf("all-critical service answered %v", r.Answer)
			}
			wantSOA(t, r, "consul.")
		})
	}
}

func TestTTLs(t *testing.T) {
	cat := newFakeCatalog()
	cat.addNode("n1", "10.0.0.1", nil)
	for _, svc := range []string{"web", "web-admin", "db", "cache"} {
		cat.addService("n1", &structs.NodeService{Service: svc, Port: 80}, structs.HealthPassing)
	}
	tests := []struct {
		ttls map[string]time.Duration
		svc  string
		want uint32
	}{
		{nil, "web", 0},
		{map[string]time.Duration{"*": 5 * time.Second}, "web", 5},
		{map[string]time.Duration{"*": 5 * time.Second, "Web": 30 * time.Second}, "web", 30},
		{map[string]time.Duration{"*": 5 * time.Second, "web": 30 * time.Second}, "db", 5},
		{map[string]time.Duration{"web": 30 * time.Second}, "db", 0},
		{map[string]time.Duration{"web*": 20 * time.Second, "web-a*": 40 * time.Second}, "web-admin", 40},
		{map[string]time.Duration{"web*": 20 * time.Second, "*": time.Second}, "web", 20},
		{map[string]time.Duration{"*": 1500 * time.Millisecond}, "cache", 1},
	}
	for _, tt := range tests {
		cfg := baseConfig()
		cfg.ServiceTTL = tt.ttls
		cfg.NodeTTL = 7 * time.Second
		s, err := New(cfg, cat)
		if err != nil {
			t.Fatal(err)
		}
		for _, qtype := range []uint16{dns.TypeA, dns.TypeSRV} {
			w := &recorder{remote: udpClient}
			req := new(dns.Msg).SetQuestion(tt.svc+".service.consul.", qtype)
			s.ServeDNS(w, req)
			r := w.msgs[0]
			if len(r.Answer) == 0 {
				t.Fatalf("%v %s: no answer", tt.ttls, tt.svc)
			}
			for _, rr := range append(r.Answer, r.Extra...) {
				if rr.Header().Ttl != tt.want {
					t.Errorf("ServiceTTL %v, %s %s: TTL %d, want %d", tt.ttls, tt.svc, dns.TypeToString[qtype], rr.Header().Ttl, tt.want)
				}
			}
		}
		s.Close()
	}
}

func TestCatalogErrorIsServfail(t *testing.T) {
	cat := webCatalog()
	cat.setErr(errors.New("state store unavailable"))
	s := startServer(t, baseConfig(), cat)
	for _, name := range []string{"web.service.consul.", "node-1.node.consul."} {
		wantRcode(t, ask(t, "udp", s.Addr(), name, dns.TypeA), dns.RcodeServerFailure)
	}
}

func TestServiceHostNameAddress(t *testing.T) {
	cat := newFakeCatalog()
	cat.addNode("n1", "10.0.0.1", nil)
	cat.addService("n1", &structs.NodeService{Service: "ext", Address: "api.example.com", Port: 443}, structs.HealthPassing)
	s := startServer(t, baseConfig(), cat)

	r := ask(t, "udp", s.Addr(), "ext.service.consul.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "api.example.com." {
		t.Fatalf("A: want CNAME api.example.com., got %v", r.Answer)
	}
	r = ask(t, "udp", s.Addr(), "ext.service.consul.", dns.TypeSRV)
	if got := srvs(r.Answer); len(got) != 1 || got[0].Target != "api.example.com." || len(r.Extra) != 0 {
		t.Fatalf("SRV: want target api.example.com. without glue, got\n%v", r)
	}
}

// Names in another datacenter are answered from that datacenter's catalog,
// with SRV targets in it; an unknown datacenter is NXDOMAIN.
func TestOtherDatacenter(t *testing.T) {
	local := newFakeCatalog()
	local.addNode("node-1", "10.0.0.1", nil)
	local.addService("node-1", &structs.NodeService{ID: "web-1", Service: "web", Port: 80}, structs.HealthPassing)
	dc2 := newFakeCatalog()
	dc2.addNode("far-1", "10.2.0.1", nil)
	dc2.addService("far-1", &structs.NodeService{ID: "web-far", Service: "web", Port: 8080}, structs.HealthPassing)
	dc2.addNode("far-2", "10.2.0.2", nil)
	dc2.addService("far-2", &structs.NodeService{ID: "web-sick", Service: "web", Port: 8080}, structs.HealthCritical)
	local.remote = map[string]*fakeCatalog{"dc2": dc2}
	s := startServer(t, baseConfig(), local)

	for _, name := range []string{"web.service.dc2.consul.", "web.service.DC2.dc.consul."} {
		r := ask(t, "udp", s.Addr(), name, dns.TypeA)
		wantRcode(t, r, dns.RcodeSuccess)
		if got := addrs(r.Answer); !slices.Equal(got, []string{"10.2.0.1"}) {
			t.Errorf("%s A = %v, want only dc2's healthy instance [10.2.0.1]", name, got)
		}
	}
	r := ask(t, "udp", s.Addr(), "web.service.dc2.consul.", dns.TypeSRV)
	if got := srvs(r.Answer); len(got) != 1 || got[0].Target != "far-1.node.dc2.consul." || got[0].Port != 8080 {
		t.Errorf("SRV in dc2 = %v, want far-1.node.dc2.consul.:8080", got)
	}
	r = ask(t, "udp", s.Addr(), "far-2.node.dc2.consul.", dns.TypeA)
	if got := addrs(r.Answer); !slices.Equal(got, []string{"10.2.0.2"}) {
		t.Errorf("node in dc2 = %v, want [10.2.0.2]", got)
	}
	r = ask(t, "udp", s.Addr(), "web.service.consul.", dns.TypeA)
	if got := addrs(r.Answer); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("local web = %v, want [10.0.0.1]", got)
	}
	for _, name := range []string{"web.service.dc3.consul.", "node-1.node.dc3.consul."} {
		wantRcode(t, ask(t, "udp", s.Addr(), name, dns.TypeA), dns.RcodeNameError)
	}
}
