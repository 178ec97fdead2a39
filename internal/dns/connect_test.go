package dns

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func proxySvc(id, dest, addr string, port int) *structs.NodeService {
	return &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: id, Service: id, Address: addr, Port: port,
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: dest}}
}

// connectCatalog is webCatalog with two web sidecars (one critical), a
// native instance of api, and a proxy of another service.
func connectCatalog() *fakeCatalog {
	c := webCatalog()
	c.addService("node-1", proxySvc("web-1-sidecar-proxy", "web", "", 21000), structs.HealthPassing)
	c.addService("node-2", proxySvc("web-2-sidecar-proxy", "web", "10.0.0.8", 21001), structs.HealthPassing)
	c.addService("node-2", proxySvc("web-x-sidecar-proxy", "web", "10.0.0.9", 21002), structs.HealthCritical)
	c.addService("node-2", proxySvc("db-sidecar-proxy", "db", "", 21003), structs.HealthPassing)
	c.addService("node-1", &structs.NodeService{ID: "api-1", Service: "api", Port: 9000,
		Connect: &structs.ServiceConnect{Native: true}}, structs.HealthPassing)
	return c
}

func TestConnectLookup(t *testing.T) {
	s := startServer(t, baseConfig(), connectCatalog())

	r := ask(t, "udp", s.Addr(), "web.connect.consul.", dns.TypeA)
	wantRcode(t, r, dns.RcodeSuccess)
	got := addrs(r.Answer)
	slices.Sort(got)
	// The healthy proxies, at their own address or their node's; not
	// web itself, not the critical proxy.
	if want := []string{"10.0.0.1", "10.0.0.8"}; !slices.Equal(got, want) {
		t.Errorf("A answers %v, want %v", got, want)
	}

	r = ask(t, "tcp", s.Addr(), "web.connect.consul.", dns.TypeSRV)
	wantRcode(t, r, dns.RcodeSuccess)
	var ports []int
	for _, srv := range srvs(r.Answer) {
		ports = append(ports, int(srv.Port))
	}
	slices.Sort(ports)
	if want := []int{21000, 21001}; !slices.Equal(ports, want) {
		t.Errorf("SRV ports %v, want the proxies' %v", ports, want)
	}

	// A native instance answers for itself.
	r = ask(t, "udp", s.Addr(), "api.connect.dc1.consul.", dns.TypeSRV)
	if s := srvs(r.Answer); len(s) != 1 || s[0].Port != 9000 {
		t.Errorf("api.connect SRV = %v, want the native instance on 9000", r.Answer)
	}

	// A service without proxies, or a tagged form, is NXDOMAIN.
	for _, name := range []string{"v6.connect.consul.", "nope.connect.consul.", "primary.web.connect.consul."} {
		wantRcode(t, ask(t, "udp", s.Addr(), name, dns.TypeA), dns.RcodeNameError)
	}
}
