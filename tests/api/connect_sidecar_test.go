package api_test

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// askDNS sends one question to the agent's DNS server over UDP.
func askDNS(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("DNS %s: %v", name, err)
	}
	return r
}

func TestConnectSidecar(t *testing.T) {
	t.Parallel()
	a := start(t)
	// The sidecar's default TCP check dials its port: listen there, as
	// the proxy would, so that the sidecar turns healthy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	ups := []api.Upstream{{DestinationName: "db", LocalBindPort: 9191}}
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Port:  port,
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: ups},
		}},
	}))

	svcs, err := a.c.Agent().Services()
	must(t, err)
	sc := svcs["web-sidecar-proxy"]
	if sc == nil || svcs["web"] == nil {
		t.Fatalf("agent services = %v, want web and web-sidecar-proxy", svcs)
	}
	if sc.Kind != api.ServiceKindConnectProxy || sc.Service != "web-sidecar-proxy" || sc.Port != port {
		t.Errorf("sidecar kind %q service %q port %d", sc.Kind, sc.Service, sc.Port)
	}
	p := sc.Proxy
	if p == nil || p.DestinationServiceName != "web" || p.DestinationServiceID != "web" ||
		p.LocalServiceAddress != "127.0.0.1" || p.LocalServicePort != 8080 || !reflect.DeepEqual(p.Upstreams, ups) {
		t.Errorf("sidecar proxy = %+v", p)
	}

	cat, meta, err := a.c.Catalog().Connect("web", "", nil)
	must(t, err)
	if len(cat) != 1 || cat[0].ServiceID != "web-sidecar-proxy" || cat[0].ServicePort != port ||
		cat[0].ServiceProxy == nil || cat[0].ServiceProxy.DestinationServiceName != "web" {
		t.Fatalf("Catalog().Connect(web) = %+v", cat)
	}
	if plain, _, err := a.c.Catalog().Connect("db", "", nil); err != nil || len(plain) != 0 {
		t.Errorf("Catalog().Connect(db) = %v, %v, want none", plain, err)
	}

	// Healthy once the listening check has run; the alias of web (no
	// checks) is passing.
	waitFor(t, 15*time.Second, func() error {
		entries, _, err := a.c.Health().Connect("web", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Service.ID != "web-sidecar-proxy" {
			return errorf("Health().Connect(web, passing) = %d entries", len(entries))
		}
		return nil
	})

	answer := askDNS(t, a.DNSAddr, "web.connect.consul.", dns.TypeSRV)
	var srvPorts []uint16
	for _, rr := range answer.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			srvPorts = append(srvPorts, srv.Port)
		}
	}
	if len(srvPorts) != 1 || int(srvPorts[0]) != port {
		t.Errorf("web.connect.consul SRV = %v, want the sidecar's port %d", answer.Answer, port)
	}
	answer = askDNS(t, a.DNSAddr, "web.connect.consul.", dns.TypeA)
	if len(answer.Answer) != 1 || answer.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("web.connect.consul A = %v", answer.Answer)
	}

	// A blocked connect query wakes when the parent (and with it the
	// sidecar) is deregistered. It follows the index as a client does:
	// a check result synced meanwhile also wakes it, with the proxy.
	_, meta, err = a.c.Catalog().Connect("web", "", nil)
	must(t, err)
	woke := make(chan []*api.CatalogService, 1)
	go func() {
		idx := meta.LastIndex
		for {
			out, m, err := a.c.Catalog().Connect("web", "", &api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second})
			if err != nil {
				t.Error(err)
				woke <- nil
				return
			}
			if len(out) == 0 || m.LastIndex == idx {
				woke <- out
				return
			}
			idx = m.LastIndex
		}
	}()
	must(t, a.c.Agent().ServiceDeregister("web"))
	select {
	case out := <-woke:
		if len(out) != 0 {
			t.Errorf("blocking Catalog().Connect after deregistration = %+v, want none", out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking Catalog().Connect did not wake on deregistration")
	}
	svcs, err = a.c.Agent().Services()
	must(t, err)
	if len(svcs) != 0 {
		t.Errorf("agent services after deregistering web = %v, want none", svcs)
	}
	entries, _, err := a.c.Health().Connect("web", "", false, nil)
	must(t, err)
	if len(entries) != 0 {
		t.Errorf("Health().Connect(web) after deregistration = %d entries", len(entries))
	}
	if r := askDNS(t, a.DNSAddr, "web.connect.consul.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("web.connect.consul after deregistration: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

// Bad connect-proxy registrations are refused with a 400 naming the field,
// on the agent and the catalog endpoints, and register nothing.
func TestConnectProxyValidation(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct {
		path, body, want string
	}{
		{"/v1/agent/service/register", `{"Kind": "connect-proxy", "Name": "p", "Port": 21000}`, "Proxy.DestinationServiceName"},
		{"/v1/agent/service/register", `{"kind": "connect-proxy", "name": "p", "port": 21000,
			"proxy": {"destination_service_name": "web", "upstreams": [{"local_bind_port": 1}]}}`, "Proxy.Upstreams[0].DestinationName"},
		{"/v1/agent/service/register", `{"Name": "web", "Port": 1, "Connect": {"SidecarService": {"Connect": {"SidecarService": {}}}}}`, "nested SidecarService"},
		{"/v1/agent/service/register", `{"Name": "web", "Port": 1, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "db"}]}}}}`, "LocalBindPort"},
		{"/v1/catalog/register", `{"Node": "n1", "Address": "10.0.0.1", "Service": {"Kind": "connect-proxy", "Service": "p", "Port": 1}}`, "Proxy.DestinationServiceName"},
	} {
		r := a.do(t, "PUT", tc.path, tc.body).expect(t, tc.path+" "+tc.want, 400)
		if !strings.Contains(r.body, tc.want) {
			t.Errorf("%s: body %q, want it to name %q", tc.path, r.body, tc.want)
		}
	}
	svcs, err := a.c.Agent().Services()
	must(t, err)
	if len(svcs) != 0 {
		t.Errorf("agent services after refused registrations = %v", svcs)
	}
	names, _, err := a.c.Catalog().Services(nil)
	must(t, err)
	for n := range names {
		if n != "consul" {
			t.Errorf("catalog has %q after refused registrations", n)
		}
	}
}
