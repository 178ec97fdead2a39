package dataplane

// The harness: the pieces a data-plane test is made of, each a real
// process or a real socket, each stopped and waited for when the test
// ends.
//
//	a := StartAgent(t)                      // trellis agent -dev
//	db := a.Register(ServiceOptions{Name: "db", Port: StartApp(t, "db").Port()})
//	web := a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
//	a.StartSidecar(db)                      // trellis connect proxy -sidecar-for db-1, /ready
//	a.StartSidecar(web)
//	eventually(t, "web reaches db", func() error { _, err := Ask(web.Upstreams["db"], "hi"); return err })
//
// Sidecars are registered with one check, an alias of their service, so
// that the mesh sends traffic to an instance exactly while its service is
// healthy (ServiceOptions.TTL gives the service a check a test can fail),
// and no health check ever connects to a public listener: what a
// sidecar's /stats counts there is the test's own doing.
//
// App is a line-echo TCP application that counts what reaches it; an L7
// test runs an HTTPApp (httpapp_test.go: answers with its name, can fail
// or hold requests on demand) or its own gRPC server instead and
// registers its port; startHTTPPool builds web and n instances of an
// http db.
// ServiceOptions.Customize sets anything else on a registration, and
// PutConfigEntry writes any config entry (service-defaults,
// service-resolver, service-router, mesh) as JSON.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

// waitFor bounds every wait of the harness: long enough for a loaded
// 2-core CI machine, short enough that a hung test says so.
const waitFor = testbin.WaitFor

func freePort(t testing.TB) int { return testbin.FreePort(t, "127.0.0.1") }

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// eventually polls cond until it returns nil, failing the test with
// cond's last error after waitFor.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	testbin.Eventually(t, what, cond)
}

// ---- processes ----

// process is the built binary running as a child of the test.
type process = testbin.Process

// startProcess runs the binary with args and waits until it has printed
// a line matching each of patterns, returning their first submatches
// (see testbin.Start).
func startProcess(t testing.TB, name string, args []string, patterns ...*regexp.Regexp) (*process, []string) {
	t.Helper()
	return testbin.Start(t, binary, name, args, patterns...)
}

// ---- the agent ----

// Agent is a dev agent (one server, everything in memory) run from the
// built binary, with its HTTP API and xDS addresses.
type Agent struct {
	t        testing.TB
	HTTPAddr string // host:port of the HTTP API
	GRPCAddr string // host:port of the xDS server
	API      *api.Client
	http     *http.Client
}

// StartAgent starts a dev agent on loopback with ports chosen by the
// system, adding args to its command line, and waits until it serves.
func StartAgent(t testing.TB, args ...string) *Agent {
	t.Helper()
	argv := append([]string{"agent", "-dev", "-node", "dp", "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", "0", "-dns-port", "-1", "-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0",
		"-grpc-port", "0", "-log-level", "warn"}, args...)
	_, addrs := startProcess(t, "agent", argv,
		regexp.MustCompile(`HTTP API: ([0-9.:]+)`), regexp.MustCompile(`gRPC \(xDS\): ([0-9.:]+)`))
	c, err := api.NewClient(&api.Config{Address: addrs[0]})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{t: t, HTTPAddr: addrs[0], GRPCAddr: addrs[1], API: c, http: &http.Client{Timeout: waitFor}}
	t.Cleanup(a.http.CloseIdleConnections)
	return a
}

// Do sends a request to the agent's HTTP API (body: nil, a string sent
// as is, or a value sent as JSON) and returns the status and the body.
func (a *Agent) Do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr+path, r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// MustDo is Do, failing the test unless the answer has status want.
func (a *Agent) MustDo(method, path string, body any, want int) []byte {
	a.t.Helper()
	code, out, err := a.Do(method, path, body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, code, out, want)
	}
	return out
}

// PutConfigEntry writes a config entry given as the JSON of PUT
// /v1/config (a map or a struct): Trellis's own fields (the mesh entry's
// DefaultIntentionPolicy) and kinds the api client may not know pass
// through.
func (a *Agent) PutConfigEntry(entry any) {
	a.t.Helper()
	a.MustDo("PUT", "/v1/config", entry, http.StatusOK)
}

// SetMeshDefaultPolicy sets the mesh entry's DefaultIntentionPolicy
// ("allow" or "deny"), which decides connections no intention matches.
func (a *Agent) SetMeshDefaultPolicy(policy string) {
	a.t.Helper()
	a.PutConfigEntry(map[string]any{"Kind": "mesh", "Name": "mesh", "DefaultIntentionPolicy": policy})
}

// Intention creates or replaces the intention from source to dest with
// action (api.IntentionActionAllow or Deny).
func (a *Agent) Intention(source, dest string, action api.IntentionAction) {
	a.t.Helper()
	if _, err := a.API.Connect().IntentionUpsert(&api.Intention{SourceName: source, DestinationName: dest, Action: action}, nil); err != nil {
		a.t.Fatalf("intention %s => %s %s: %v", source, dest, action, err)
	}
}

// DeleteIntention removes the intention from source to dest.
func (a *Agent) DeleteIntention(source, dest string) {
	a.t.Helper()
	if _, err := a.API.Connect().IntentionDeleteExact(source, dest, nil); err != nil {
		a.t.Fatalf("delete intention %s => %s: %v", source, dest, err)
	}
}

// Leaf is a certificate and key the agent's CA issued for service (the
// agent signs one for any name), for a test client to present.
func (a *Agent) Leaf(service string) tls.Certificate {
	a.t.Helper()
	l, _, err := a.API.Agent().ConnectCALeaf(service, nil)
	if err != nil {
		a.t.Fatalf("leaf of %s: %v", service, err)
	}
	cert, err := tls.X509KeyPair([]byte(l.CertPEM), []byte(l.PrivateKeyPEM))
	if err != nil {
		a.t.Fatalf("leaf of %s: %v", service, err)
	}
	return cert
}

// Roots returns the CA's roots and the active one's certificate.
func (a *Agent) Roots() (*api.CARootList, *x509.Certificate) {
	a.t.Helper()
	l, _, err := a.API.Connect().CARoots(nil)
	if err != nil {
		a.t.Fatalf("CA roots: %v", err)
	}
	for _, r := range l.Roots {
		if r.ID == l.ActiveRootID {
			return l, parseCertPEM(a.t, r.RootCertPEM)
		}
	}
	a.t.Fatalf("no active root among %d", len(l.Roots))
	return nil, nil
}

// parseCertPEM parses the first certificate of a PEM text.
func parseCertPEM(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM certificate in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// SPIFFEID is the identity the mesh gives service.
func (a *Agent) SPIFFEID(service string) string {
	a.t.Helper()
	l, _ := a.Roots()
	return "spiffe://" + l.TrustDomain + "/ns/default/dc/dc1/svc/" + service
}

// ---- services and sidecars ----

// ServiceOptions describe a service instance and its sidecar.
type ServiceOptions struct {
	Name string
	ID   string // default Name + "-1"
	Port int    // the application's port
	// Upstreams are the services the sidecar gives the application a
	// local listener for, each on a free loopback port.
	Upstreams []string
	// TTL gives the service a TTL check, passing until the test fails it
	// (Service.CheckID); the sidecar's alias check follows it.
	TTL bool
	// Customize, when set, may change the registration before it is
	// sent: weights, meta, the proxy's or an upstream's config.
	Customize func(*api.AgentServiceRegistration)
}

// Service is a registered instance with its sidecar.
type Service struct {
	ID, Name  string
	SidecarID string
	// Public is the host:port of the sidecar's public (mTLS) listener.
	Public string
	// Upstreams maps an upstream's name to the host:port of its local
	// listener in the sidecar.
	Upstreams map[string]string
	// CheckID is the service's TTL check, "" without ServiceOptions.TTL.
	CheckID string
}

// Register registers an instance and its sidecar with the agent.
func (a *Agent) Register(o ServiceOptions) *Service {
	a.t.Helper()
	s := &Service{ID: o.ID, Name: o.Name, Public: loopback(freePort(a.t)), Upstreams: map[string]string{}}
	if s.ID == "" {
		s.ID = o.Name + "-1"
	}
	s.SidecarID = s.ID + "-sidecar-proxy"
	_, pub, _ := net.SplitHostPort(s.Public)
	pubPort, _ := strconv.Atoi(pub)
	var ups []api.Upstream
	for _, u := range o.Upstreams {
		port := freePort(a.t)
		s.Upstreams[u] = loopback(port)
		ups = append(ups, api.Upstream{DestinationName: u, LocalBindAddress: "127.0.0.1", LocalBindPort: port})
	}
	reg := &api.AgentServiceRegistration{ID: s.ID, Name: o.Name, Address: "127.0.0.1", Port: o.Port,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			ID: s.SidecarID, Address: "127.0.0.1", Port: pubPort,
			Checks: api.AgentServiceChecks{{Name: "alias of " + s.ID, AliasService: s.ID}},
			Proxy:  &api.AgentServiceConnectProxyConfig{Upstreams: ups},
		}}}
	if o.TTL {
		s.CheckID = "ttl:" + s.ID
		reg.Checks = api.AgentServiceChecks{{CheckID: s.CheckID, Name: "ttl", TTL: "10m", Status: api.HealthPassing}}
	}
	if o.Customize != nil {
		o.Customize(reg)
	}
	if err := a.API.Agent().ServiceRegister(reg); err != nil {
		a.t.Fatalf("register %s: %v", s.ID, err)
	}
	return s
}

// Proxy is a `trellis connect proxy` process.
type Proxy struct {
	t    testing.TB
	proc *process
	http *http.Client
	// Admin is the host:port of its admin listener (/ready, /stats).
	Admin string
}

var adminLine = regexp.MustCompile(`admin on http://(127\.0\.0\.1:[0-9]+)`)

// StartSidecar runs the sidecar of s and waits until it has applied a
// configuration (/ready answers 200), so that its listeners are bound.
func (a *Agent) StartSidecar(s *Service) *Proxy {
	a.t.Helper()
	p, addr := startProcess(a.t, "sidecar of "+s.ID, []string{"connect", "proxy", "-sidecar-for", s.ID,
		"-http-addr", a.HTTPAddr, "-grpc-addr", a.GRPCAddr, "-admin-bind", "127.0.0.1:0", "-log-level", "debug"}, adminLine)
	px := &Proxy{t: a.t, proc: p, Admin: addr[0], http: &http.Client{Timeout: waitFor}}
	a.t.Cleanup(px.http.CloseIdleConnections)
	eventually(a.t, "sidecar of "+s.ID+" ready", px.ready)
	return px
}

func (p *Proxy) ready() error {
	resp, err := p.http.Get("http://" + p.Admin + "/ready")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/ready: %d %s", resp.StatusCode, body)
	}
	return nil
}

// Stop kills the proxy and waits for it.
func (p *Proxy) Stop() { p.proc.Stop() }

// Stats returns the proxy's metrics, from its admin /stats.
func (p *Proxy) Stats() Stats {
	p.t.Helper()
	s, err := p.stats()
	if err != nil {
		p.t.Fatalf("stats: %v", err)
	}
	return s
}

func (p *Proxy) stats() (Stats, error) {
	resp, err := p.http.Get("http://" + p.Admin + "/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/stats: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("/stats: %w", err)
	}
	return Stats(fams), nil
}

// WaitStat polls the proxy's /stats until the sum of series name that
// match where (see Stats.Sum) is want, failing the test if it is not
// within waitFor. Counters are updated a moment after the client saw
// the connection's outcome, hence the poll.
func (p *Proxy) WaitStat(name string, want float64, where ...string) {
	p.t.Helper()
	eventually(p.t, fmt.Sprintf("%s%v = %v", name, where, want), func() error {
		s, err := p.stats()
		if err != nil {
			return err
		}
		if got := s.Sum(name, where...); got != want {
			return fmt.Errorf("%s%v = %v", name, where, got)
		}
		return nil
	})
}

// Stats are a proxy's metric families by name.
type Stats map[string]*dto.MetricFamily

// Sum adds up the values of the counters and gauges called name whose
// labels match where: pairs of label name and value, a value ending in
// "*" matching by prefix ("listener", "public_listener:*").
func (s Stats) Sum(name string, where ...string) float64 {
	var sum float64
	for _, m := range s[name].GetMetric() {
		if !labelsMatch(m.GetLabel(), where) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func labelsMatch(labels []*dto.LabelPair, where []string) bool {
	for i := 0; i+1 < len(where); i += 2 {
		name, want := where[i], where[i+1]
		ok := false
		for _, l := range labels {
			if l.GetName() != name {
				continue
			}
			if prefix, found := strings.CutSuffix(want, "*"); found {
				ok = strings.HasPrefix(l.GetValue(), prefix)
			} else {
				ok = l.GetValue() == want
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Metric names of the sidecar's /stats, and the label value of its
// public listener.
const (
	statConns     = "trellis_proxy_connections_total"
	statDenied    = "trellis_proxy_connections_denied_total"
	statTLSErrors = "trellis_proxy_tls_errors_total"
	publicLn      = "public_listener:*"
)

// ---- the test application ----

// App is a test application: a TCP server that answers each line it
// reads with "<name> <line>", for as long as the connection lasts. It
// counts the connections it accepted and the bytes it read, so that a
// test can tell that a refused client never reached it.
type App struct {
	name  string
	ln    net.Listener
	conns atomic.Int64
	bytes atomic.Int64

	mu   sync.Mutex
	open map[net.Conn]struct{} // guarded by mu
	wg   sync.WaitGroup
}

// StartApp serves an App on a free loopback port until the test ends;
// its connections are closed and its goroutines waited for then.
func StartApp(t testing.TB, name string) *App {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &App{name: name, ln: ln, open: map[net.Conn]struct{}{}}
	a.wg.Go(a.accept)
	t.Cleanup(a.close)
	return a
}

// Port is the port the app listens on.
func (a *App) Port() int { return a.ln.Addr().(*net.TCPAddr).Port }

// Conns is how many connections the app accepted.
func (a *App) Conns() int64 { return a.conns.Load() }

// Bytes is how many bytes the app read.
func (a *App) Bytes() int64 { return a.bytes.Load() }

func (a *App) accept() {
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		if a.open == nil { // closing
			a.mu.Unlock()
			c.Close()
			return
		}
		a.open[c] = struct{}{}
		a.mu.Unlock()
		a.conns.Add(1)
		a.wg.Go(func() { a.serve(c) })
	}
}

func (a *App) serve(c net.Conn) {
	defer func() {
		c.Close()
		a.mu.Lock()
		delete(a.open, c)
		a.mu.Unlock()
	}()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		a.bytes.Add(int64(len(line)))
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, a.name+" "+line); err != nil {
			return
		}
	}
}

func (a *App) close() {
	a.ln.Close()
	a.mu.Lock()
	for c := range a.open {
		c.Close()
	}
	a.open = nil
	a.mu.Unlock()
	a.wg.Wait()
}

// ---- clients ----

// Session is a client connection to an App, direct or through the mesh.
type Session struct {
	c net.Conn
	r *bufio.Reader
}

// Dial opens a Session to addr.
func Dial(addr string) (*Session, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return newSession(c), nil
}

func newSession(c net.Conn) *Session { return &Session{c: c, r: bufio.NewReader(c)} }

// Ask sends line and returns the name of the app that answered it,
// checking that the answer is the line.
func (s *Session) Ask(line string) (string, error) {
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(s.c, line+"\n"); err != nil {
		return "", err
	}
	got, err := s.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	name, echoed, ok := strings.Cut(strings.TrimSuffix(got, "\n"), " ")
	if !ok || echoed != line {
		return "", fmt.Errorf("sent %q, got %q", line, got)
	}
	return name, nil
}

// Close closes the session.
func (s *Session) Close() error { return s.c.Close() }

// Ask sends line over a new connection to addr and returns the name of
// the app that answered.
func Ask(addr, line string) (string, error) {
	s, err := Dial(addr)
	if err != nil {
		return "", err
	}
	defer s.Close()
	return s.Ask(line)
}
