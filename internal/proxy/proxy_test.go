package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/ca"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

const td = "11111111-2222-3333-4444-555555555555.consul"

// testCA is a built-in CA provider with its root.
type testCA struct {
	p    ca.Provider
	root *ca.Root
}

func newCA(t testing.TB, trustDomain string) *testCA {
	t.Helper()
	cfg, err := ca.ParseConfig(ca.ProviderConsul, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.New(ca.ProviderConsul, cfg)
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.GenerateRoot(trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.LoadRoot(root); err != nil {
		t.Fatal(err)
	}
	return &testCA{p: p, root: root}
}

// leaf signs a leaf for service in trustDomain (which need not be the
// CA's: the provider signs what it is given).
func (c *testCA) leaf(t testing.TB, trustDomain, service string) *proxycfg.Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := connect.ServiceID{TrustDomain: trustDomain, Datacenter: "dc1", Service: service}
	now := time.Now()
	cert, err := c.p.Sign(&ca.LeafTemplate{PublicKey: key.Public(), ID: id, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &proxycfg.Leaf{CertPEM: ca.EncodeCert(cert), PrivateKeyPEM: keyPEM, ValidBefore: cert.NotAfter}
}

func (c *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root.Cert)
	return p
}

// echo is a local application: it echoes until EOF, then closes its
// write side. accepted counts its connections.
type echo struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newEcho(t *testing.T) *echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			e.wg.Go(func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func (e *echo) port() int { return e.ln.Addr().(*net.TCPAddr).Port }

// placeholderPort stands for "any": generate wants a port, and the tests
// rewrite every listener's to 0 so that the system picks a free one.
const placeholderPort = 1

func snapshot(service string, leaf *proxycfg.Leaf, roots []string, localPort int) *proxycfg.Snapshot {
	return &proxycfg.Snapshot{
		ProxyID: service + "-sidecar-proxy", Service: service, Datacenter: "dc1", TrustDomain: td,
		Address: "127.0.0.1", Port: placeholderPort, LocalAddress: "127.0.0.1", LocalPort: localPort,
		Protocol: "tcp", Leaf: leaf, Roots: roots,
	}
}

func upstream(service string, eps ...net.Addr) proxycfg.Upstream {
	u := proxycfg.Upstream{Name: service, LocalBindPort: placeholderPort, Protocol: "tcp"}
	for _, a := range eps {
		ta := a.(*net.TCPAddr)
		u.Endpoints = append(u.Endpoints, proxycfg.Endpoint{Address: ta.IP.String(), Port: ta.Port, Weight: 1})
	}
	return u
}

func publicName() string { return generate.PublicListenerName("127.0.0.1", placeholderPort) }

func upstreamName(u proxycfg.Upstream) string { return generate.UpstreamListenerName(u) }

// configOf generates snap's resources, route configurations included,
// listeners on port 0. Tests, benchmarks and the contract test share it.
func configOf(tb testing.TB, snap *proxycfg.Snapshot) Config {
	tb.Helper()
	rs, err := generate.Resources(snap)
	if err != nil {
		tb.Fatal(err)
	}
	var cfg Config
	for _, r := range rs[resource.ListenerType] {
		l := proto.Clone(r).(*listenerv3.Listener)
		l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 0}
		cfg.Listeners = append(cfg.Listeners, l)
	}
	for _, r := range rs[resource.ClusterType] {
		cfg.Clusters = append(cfg.Clusters, r.(*clusterv3.Cluster))
	}
	for _, r := range rs[resource.EndpointType] {
		cfg.Endpoints = append(cfg.Endpoints, r.(*endpointv3.ClusterLoadAssignment))
	}
	for _, r := range rs[resource.RouteType] {
		cfg.Routes = append(cfg.Routes, r.(*routev3.RouteConfiguration))
	}
	for _, r := range rs[resource.SecretType] {
		cfg.Secrets = append(cfg.Secrets, r.(*tlsv3.Secret))
	}
	return cfg
}

func newProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	p := New(Options{})
	t.Cleanup(func() { p.Close() })
	if err := p.Apply(cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !p.Ready() {
		t.Fatal("not Ready after Apply")
	}
	return p
}

func addr(t *testing.T, p *Proxy, name string) net.Addr {
	t.Helper()
	a := p.ListenerAddr(name)
	if a == nil {
		t.Fatalf("no listener %q", name)
	}
	return a
}

// roundTrip sends msg, half-closes and reads until EOF: the echo of msg
// through a working path. Deadlines only bound a failing test.
func roundTrip(c net.Conn, msg string) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func dialTCP(t *testing.T, a net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// echoOnce checks one message both ways over c, keeping c open.
func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v; want %q", buf, err, msg)
	}
}

// mesh is web's and db's proxies: app → web's upstream listener → db's
// public listener → db's echo.
type mesh struct {
	ca       *testCA
	db       *Proxy
	dbSnap   *proxycfg.Snapshot
	dbApp    *echo
	web      *Proxy
	webSnap  *proxycfg.Snapshot
	upstream net.Addr
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{ca: newCA(t, td)}
	roots := []string{m.ca.root.CertPEM}
	m.dbApp = newEcho(t)
	m.dbSnap = snapshot("db", m.ca.leaf(t, td, "db"), roots, m.dbApp.port())
	m.dbSnap.DefaultAllow = true
	m.db = newProxy(t, configOf(t, m.dbSnap))
	m.webSnap = snapshot("web", m.ca.leaf(t, td, "web"), roots, newEcho(t).port())
	m.webSnap.Upstreams = []proxycfg.Upstream{upstream("db", addr(t, m.db, publicName()))}
	m.web = newProxy(t, configOf(t, m.webSnap))
	m.upstream = addr(t, m.web, upstreamName(m.webSnap.Upstreams[0]))
	return m
}

func TestMeshRoundTrip(t *testing.T) {
	m := newMesh(t)
	// The echo replies only after its EOF, and the client sees EOF only
	// after the echo's: both half-closes crossed both proxies.
	got, err := roundTrip(dialTCP(t, m.upstream), "hello through the mesh")
	if err != nil || got != "hello through the mesh" {
		t.Fatalf("round trip = %q, %v; want the message back", got, err)
	}
	if n := m.dbApp.accepted.Load(); n != 1 {
		t.Errorf("db app accepted %d connections, want 1", n)
	}
}

// dialPublic connects to a public listener as a client presenting leaf
// (none if nil), trusting pool.
func dialPublic(t *testing.T, a net.Addr, leaf *proxycfg.Leaf, pool *x509.CertPool) *tls.Conn {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool, InsecureSkipVerify: true}
	if leaf != nil {
		cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.Dial("tcp", a.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refused reports whether the proxy refused a connection: in TLS 1.3 the
// client's handshake ends before the server has checked its certificate,
// so refusal shows as no echo.
func refused(c net.Conn) bool {
	got, _ := roundTrip(c, "ping")
	return got != "ping"
}

func TestIntentions(t *testing.T) {
	authority := newCA(t, td)
	allowWeb := &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: "db",
		Sources: []*configentry.SourceIntention{{Name: "web", Action: configentry.ActionAllow}}}
	denyWeb := &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: "db",
		Sources: []*configentry.SourceIntention{{Name: "web", Action: configentry.ActionDeny}}}
	for _, tc := range []struct {
		name         string
		defaultAllow bool
		ixns         []*configentry.ServiceIntentionsConfigEntry
		caller       string
		wantRefused  bool
	}{
		{"allow intention", false, []*configentry.ServiceIntentionsConfigEntry{allowWeb}, "web", false},
		{"allow intention, other caller, default deny", false, []*configentry.ServiceIntentionsConfigEntry{allowWeb}, "api", true},
		{"default deny", false, nil, "web", true},
		{"default allow", true, nil, "web", false},
		{"deny intention", true, []*configentry.ServiceIntentionsConfigEntry{denyWeb}, "web", true},
		{"deny intention, other caller, default allow", true, []*configentry.ServiceIntentionsConfigEntry{denyWeb}, "api", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newEcho(t)
			snap := snapshot("db", authority.leaf(t, td, "db"), []string{authority.root.CertPEM}, app.port())
			snap.DefaultAllow, snap.Intentions = tc.defaultAllow, tc.ixns
			p := newProxy(t, configOf(t, snap))
			c := dialPublic(t, addr(t, p, publicName()), authority.leaf(t, td, tc.caller), authority.pool())
			if got := refused(c); got != tc.wantRefused {
				t.Errorf("refused = %v, want %v", got, tc.wantRefused)
			}
			if tc.wantRefused && app.accepted.Load() != 0 {
				t.Errorf("a refused connection reached the app")
			}
		})
	}
}

func TestRefusesBadClients(t *testing.T) {
	authority := newCA(t, td)
	app := newEcho(t)
	snap := snapshot("db", authority.leaf(t, td, "db"), []string{authority.root.CertPEM}, app.port())
	snap.DefaultAllow = true
	p := newProxy(t, configOf(t, snap))
	pub := addr(t, p, publicName())

	if refused(dialPublic(t, pub, authority.leaf(t, td, "web"), authority.pool())) {
		t.Fatal("a good client was refused: the cases below would prove nothing")
	}
	other := newCA(t, td)
	for _, tc := range []struct {
		name string
		leaf *proxycfg.Leaf
	}{
		{"other CA", other.leaf(t, td, "web")},
		{"no certificate", nil},
		{"other trust domain", authority.leaf(t, "99999999-2222-3333-4444-555555555555.consul", "web")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !refused(dialPublic(t, pub, tc.leaf, authority.pool())) {
				t.Error("connection was not refused")
			}
		})
	}
	if n := app.accepted.Load(); n != 1 {
		t.Errorf("app accepted %d connections, want only the good client's", n)
	}
}

func TestEndpointsMove(t *testing.T) {
	m := newMesh(t)
	held := dialTCP(t, m.upstream)
	echoOnce(t, held, "before")

	app2 := newEcho(t)
	snap2 := *m.dbSnap // a second db instance
	snap2.LocalPort = app2.port()
	db2 := newProxy(t, configOf(t, &snap2))
	web := *m.webSnap
	web.Upstreams = []proxycfg.Upstream{upstream("db", addr(t, db2, publicName()))}
	if err := m.web.Apply(configOf(t, &web)); err != nil {
		t.Fatal(err)
	}
	if a := addr(t, m.web, upstreamName(web.Upstreams[0])); a.String() != m.upstream.String() {
		t.Errorf("upstream listener moved from %s to %s on an endpoint change", m.upstream, a)
	}
	if got, err := roundTrip(dialTCP(t, m.upstream), "after"); err != nil || got != "after" {
		t.Fatalf("round trip after the move = %q, %v", got, err)
	}
	if n1, n2 := m.dbApp.accepted.Load(), app2.accepted.Load(); n1 != 1 || n2 != 1 {
		t.Errorf("accepted: old instance %d, new %d; want 1 and 1", n1, n2)
	}
	echoOnce(t, held, "still there")
	held.Close()
}

func TestLeafRotation(t *testing.T) {
	m := newMesh(t)
	held := dialTCP(t, m.upstream)
	echoOnce(t, held, "before")

	snap := *m.dbSnap
	snap.Leaf = m.ca.leaf(t, td, "db")
	if err := m.db.Apply(configOf(t, &snap)); err != nil {
		t.Fatal(err)
	}
	want, err := ca.ParseCert(snap.Leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := dialPublic(t, addr(t, m.db, publicName()), m.ca.leaf(t, td, "web"), m.ca.pool())
	if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(want) {
		t.Errorf("next handshake presented serial %s, want the rotated leaf's %s", got.SerialNumber, want.SerialNumber)
	}
	c.Close()
	echoOnce(t, held, "after rotation")
	if got, err := roundTrip(dialTCP(t, m.upstream), "new"); err != nil || got != "new" {
		t.Fatalf("round trip after rotation = %q, %v", got, err)
	}
	held.Close()
}

func TestBadConfigRefused(t *testing.T) {
	m := newMesh(t)
	held := dialTCP(t, m.upstream)
	echoOnce(t, held, "before")
	good := configOf(t, m.webSnap)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"unknown filter", func(c *Config) {
			l := c.Listeners[1]
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, durationpb.New(time.Second))}
		}},
		{"missing secret", func(c *Config) { c.Secrets = c.Secrets[:1] }},
		{"missing cluster", func(c *Config) { c.Clusters = c.Clusters[:1] }},
		{"missing endpoints", func(c *Config) { c.Endpoints = nil }},
		{"bad certificate", func(c *Config) {
			c.Secrets[0].GetTlsCertificate().CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "junk"}}
		}},
		{"address in use", func(c *Config) {
			c.Listeners[1].Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(m.upstream.(*net.TCPAddr).Port)}
			c.Listeners[0].Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(m.upstream.(*net.TCPAddr).Port)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cloneConfig(good)
			tc.mutate(&cfg)
			if err := m.web.Apply(cfg); err == nil {
				t.Fatal("Apply accepted a bad Config")
			}
			if a := m.web.ListenerAddr(upstreamName(m.webSnap.Upstreams[0])); a == nil || a.String() != m.upstream.String() {
				t.Fatalf("upstream listener is %v after a refused Apply, want %s", a, m.upstream)
			}
			if got, err := roundTrip(dialTCP(t, m.upstream), "ok"); err != nil || got != "ok" {
				t.Fatalf("round trip after a refused Apply = %q, %v", got, err)
			}
		})
	}
	echoOnce(t, held, "after")
	held.Close()
}

func cloneConfig(c Config) Config {
	var out Config
	for _, l := range c.Listeners {
		out.Listeners = append(out.Listeners, proto.Clone(l).(*listenerv3.Listener))
	}
	for _, x := range c.Clusters {
		out.Clusters = append(out.Clusters, proto.Clone(x).(*clusterv3.Cluster))
	}
	for _, x := range c.Endpoints {
		out.Endpoints = append(out.Endpoints, proto.Clone(x).(*endpointv3.ClusterLoadAssignment))
	}
	for _, x := range c.Secrets {
		out.Secrets = append(out.Secrets, proto.Clone(x).(*tlsv3.Secret))
	}
	return out
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCloseEndsConnections(t *testing.T) {
	m := newMesh(t)
	held := dialTCP(t, m.upstream)
	echoOnce(t, held, "before")
	if err := m.web.Close(); err != nil {
		t.Fatal(err)
	}
	held.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := held.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("read after Close = %v, want EOF or reset", err)
	}
	if m.web.ListenerAddr(upstreamName(m.webSnap.Upstreams[0])) != nil {
		t.Error("listener still known after Close")
	}
	if _, err := net.Dial("tcp", m.upstream.String()); err == nil {
		t.Error("upstream listener still accepts after Close")
	}
	if err := m.web.Apply(configOf(t, m.webSnap)); err == nil {
		t.Error("Apply after Close succeeded")
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}
