package dns

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// fakeCatalog is an in-memory Catalog. Service and node names are matched
// case-insensitively, as the Catalog contract asks.
type fakeCatalog struct {
	mu       sync.Mutex
	nodes    map[string]*structs.Node               // by lower-case name
	services map[string][]*structs.CheckServiceNode // by lower-case name
	checks   map[string][]*structs.HealthCheck      // node-level, by node
	err      error                                  // returned by every call when set
	remote   map[string]*fakeCatalog                // other datacenters' catalogs, by name
	calls    []string
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{
		nodes:    make(map[string]*structs.Node),
		services: make(map[string][]*structs.CheckServiceNode),
		checks:   make(map[string][]*structs.HealthCheck),
	}
}

// dc returns the catalog of datacenter dc: c itself for dc1.
func (c *fakeCatalog) dc(dc string) (*fakeCatalog, error) {
	if dc == "dc1" {
		return c, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.remote[dc]; r != nil {
		return r, nil
	}
	return nil, ErrNoDatacenter
}

func (c *fakeCatalog) HealthService(dc, name string) ([]*structs.CheckServiceNode, error) {
	c, err := c.dc(dc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "service "+name)
	if c.err != nil {
		return nil, c.err
	}
	var out []*structs.CheckServiceNode
	for _, e := range c.services[strings.ToLower(name)] {
		cp := *e
		cp.Checks = append(append([]*structs.HealthCheck(nil), c.checks[e.Node.Node]...), e.Checks...)
		out = append(out, &cp)
	}
	return out, nil
}

// HealthConnect returns the instances whose ConnectTarget is name.
func (c *fakeCatalog) HealthConnect(dc, name string) ([]*structs.CheckServiceNode, error) {
	c, err := c.dc(dc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "connect "+name)
	if c.err != nil {
		return nil, c.err
	}
	var out []*structs.CheckServiceNode
	for _, entries := range c.services {
		for _, e := range entries {
			if strings.EqualFold(e.Service.ConnectTarget(), name) {
				cp := *e
				cp.Checks = append(append([]*structs.HealthCheck(nil), c.checks[e.Node.Node]...), e.Checks...)
				out = append(out, &cp)
			}
		}
	}
	return out, nil
}

func (c *fakeCatalog) Node(dc, name string) (*structs.Node, error) {
	c, err := c.dc(dc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "node "+name)
	if c.err != nil {
		return nil, c.err
	}
	return c.nodes[strings.ToLower(name)], nil
}

func (c *fakeCatalog) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// addNode registers a node with a passing serfHealth check.
func (c *fakeCatalog) addNode(name, addr string, meta map[string]string) *structs.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := &structs.Node{Node: name, Address: addr, Datacenter: "dc1", Meta: meta}
	c.nodes[strings.ToLower(name)] = n
	c.checks[name] = []*structs.HealthCheck{{
		Node: name, CheckID: structs.SerfCheckID, Name: structs.SerfCheckName, Status: structs.HealthPassing,
	}}
	return n
}

// setNodeCheck sets the status of the node's serfHealth check.
func (c *fakeCatalog) setNodeCheck(node, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks[node][0].Status = status
}

// addService registers svc on node with one service check per status.
func (c *fakeCatalog) addService(node string, svc *structs.NodeService, statuses ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[strings.ToLower(node)]
	if n == nil {
		panic("fakeCatalog: unknown node " + node)
	}
	if svc.ID == "" {
		svc.ID = fmt.Sprintf("%s-%d", svc.Service, len(c.services[strings.ToLower(svc.Service)]))
	}
	e := &structs.CheckServiceNode{Node: n, Service: svc}
	for i, st := range statuses {
		e.Checks = append(e.Checks, &structs.HealthCheck{
			Node: node, CheckID: fmt.Sprintf("service:%s:%d", svc.ID, i), Status: st,
			ServiceID: svc.ID, ServiceName: svc.Service,
		})
	}
	key := strings.ToLower(svc.Service)
	c.services[key] = append(c.services[key], e)
}

// addInstances registers n passing instances of service, each on its own
// node node-<i> at 10.1.<i/250>.<i%250+1>.
func (c *fakeCatalog) addInstances(service string, n int) {
	for i := range n {
		node := fmt.Sprintf("%s-node-%d", service, i)
		c.addNode(node, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), nil)
		c.addService(node, &structs.NodeService{Service: service, Port: 8000 + i}, structs.HealthPassing)
	}
}

func baseConfig() Config {
	return Config{Datacenter: "dc1", NodeName: "agent-1"}
}

// startServer runs a server for cat on 127.0.0.1:0, closed at cleanup.
func startServer(t testing.TB, cfg Config, cat Catalog) *Server {
	t.Helper()
	s, err := New(cfg, cat)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// exchange sends m to addr over network ("udp" or "tcp").
func exchange(t testing.TB, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %v: %v", network, m.Question, err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}

// ask queries name/qtype over network with RD set and no EDNS0.
func ask(t testing.TB, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return exchange(t, network, addr, m)
}

// wantRcode fails unless r has rcode.
func wantRcode(t testing.TB, r *dns.Msg, rcode int) {
	t.Helper()
	if r.Rcode != rcode {
		t.Fatalf("rcode %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode], r)
	}
}

// wantSOA fails unless r's authority section is the SOA of domain.
func wantSOA(t testing.TB, r *dns.Msg, domain string) {
	t.Helper()
	if len(r.Ns) != 1 {
		t.Fatalf("authority %v, want one SOA", r.Ns)
	}
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok {
		t.Fatalf("authority %v, want SOA", r.Ns[0])
	}
	now := uint32(time.Now().Unix())
	if soa.Hdr.Name != domain || soa.Ns != "ns."+domain || soa.Mbox != "hostmaster."+domain ||
		soa.Refresh != 3600 || soa.Retry != 600 || soa.Expire != 86400 || soa.Minttl != 0 ||
		soa.Serial+60 < now || soa.Serial > now+60 {
		t.Fatalf("SOA %v, want ns.%[2]s hostmaster.%[2]s <now> 3600 600 86400 0", soa, domain)
	}
}

// addrs returns the A/AAAA addresses of rrs as strings, in order.
func addrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

func srvs(rrs []dns.RR) []*dns.SRV {
	var out []*dns.SRV
	for _, rr := range rrs {
		if srv, ok := rr.(*dns.SRV); ok {
			out = append(out, srv)
		}
	}
	return out
}

// recorder is a dns.ResponseWriter that keeps what is written. The remote
// address decides whether the server treats it as UDP or TCP.
type recorder struct {
	remote net.Addr
	msgs   []*dns.Msg
	pack   bool // pack each message, as the real writer does
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	if r.pack {
		if _, err := m.Pack(); err != nil {
			return err
		}
	}
	r.msgs = append(r.msgs, m)
	return nil
}
func (r *recorder) Write(b []byte) (int, error) { return 0, errors.New("recorder: raw write") }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

var (
	udpClient = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	tcpClient = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
)
