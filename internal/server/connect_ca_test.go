package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/ca"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// fakeClock is a settable clock for the CA.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startCA starts a server with connect enabled (in dir, or in memory
// when dir is "") and waits until it has set the CA up.
func startCA(t *testing.T, dir string, clock *fakeClock) *Server {
	t.Helper()
	opts := &ConnectCAOptions{Datacenter: "dc1", Config: map[string]any{"leaf_cert_ttl": "24h"}}
	if clock != nil {
		opts.Now = clock.Now
	}
	s, err := New(Config{NodeID: testNodeID, NodeName: "n1", DataDir: dir, ConnectCA: opts}, state.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() error {
		_, err := s.ConnectCAConfiguration()
		return err
	})
	return s
}

func waitUntil(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met: %v", err)
		}
		<-time.After(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

func caRoots(t *testing.T, s *Server) (uint64, []*structs.CARoot) {
	t.Helper()
	r := s.Store().Read()
	defer r.Abort()
	idx, roots, err := r.CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	return idx, roots
}

func testCSR(t *testing.T, uri string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func serviceURI(t *testing.T, s *Server, svc string) string {
	t.Helper()
	cfg, err := s.ConnectCAConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	return connect.ServiceID{TrustDomain: connect.TrustDomain(cfg.ClusterID), Datacenter: "dc1", Service: svc}.String()
}

func signLeaf(t *testing.T, s *Server, svc string) (*structs.IssuedCert, *x509.Certificate) {
	t.Helper()
	ic, err := s.ConnectCASign(testCSR(t, serviceURI(t, s, svc)), svc)
	if err != nil {
		t.Fatalf("sign %s: %v", svc, err)
	}
	leaf, err := ca.ParseCert(ic.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ic, leaf
}

func rootCerts(t *testing.T, roots []*structs.CARoot) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, r := range roots {
		c, err := ca.ParseCert(r.RootCert)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// The leader sets the CA up, signs leaves that chain to the active root,
// refuses CSRs for another identity, changes the leaf TTL without a new
// root, rotates on a key change (cross-signing), and prunes the old root
// once its leaves have expired.
func TestConnectCALifecycle(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	s := startCA(t, "", clock)
	cfg, _ := s.ConnectCAConfiguration()
	if cfg.Provider != "consul" || cfg.Config["LeafCertTTL"] != "24h" || cfg.ClusterID == "" {
		t.Fatalf("initial configuration %+v", cfg)
	}
	_, roots := caRoots(t, s)
	if len(roots) != 1 || !roots[0].Active || roots[0].SigningKey == "" || roots[0].PrivateKeyType != "ec" {
		t.Fatalf("initial roots %+v", roots)
	}
	ic, leaf := signLeaf(t, s, "web")
	if err := ca.VerifyLeaf(leaf, rootCerts(t, roots), nil, clock.Now()); err != nil {
		t.Fatalf("leaf does not chain to the root: %v", err)
	}
	if ic.ServiceURI != serviceURI(t, s, "web") || ic.ValidBefore.Sub(ic.ValidAfter) != 24*time.Hour+ca.ClockSkew {
		t.Errorf("issued %+v", ic)
	}

	// Wrong identities are refused as bad requests.
	td := connect.TrustDomain(cfg.ClusterID)
	for name, uri := range map[string]string{
		"other service":      serviceURI(t, s, "db"),
		"other trust domain": "spiffe://00000000-0000-0000-0000-000000000000.consul/ns/default/dc/dc1/svc/web",
		"other datacenter":   "spiffe://" + td + "/ns/default/dc/dc2/svc/web",
	} {
		if _, err := s.ConnectCASign(testCSR(t, uri), "web"); !structs.IsBadRequest(err) {
			t.Errorf("%s: sign = %v, want a bad request", name, err)
		}
	}
	if _, err := s.ConnectCASign("garbage", "web"); !structs.IsBadRequest(err) || !strings.HasPrefix(err.Error(), "CSR:") {
		t.Errorf("garbage CSR: %v", err)
	}

	// Bad configurations change nothing.
	before := cfg.ModifyIndex
	for _, bad := range []*structs.CAConfiguration{
		{Provider: "consul", Config: map[string]any{"LeafCertTTL": "10m"}},
		{Provider: "vault", Config: map[string]any{}},
		{Provider: "consul", State: map[string]string{"x": "y"}},
		{Provider: "consul", ClusterID: "other"},
	} {
		if err := s.ConnectCASetConfiguration(bad); !structs.IsBadRequest(err) {
			t.Errorf("set %+v = %v, want a bad request", bad, err)
		}
	}
	if c, _ := s.ConnectCAConfiguration(); c.ModifyIndex != before {
		t.Fatalf("a refused configuration changed the stored one: %+v", c)
	}

	// A TTL change keeps the root.
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul", Config: map[string]any{"LeafCertTTL": "48h"}}); err != nil {
		t.Fatal(err)
	}
	if _, r2 := caRoots(t, s); len(r2) != 1 || r2[0].ID != roots[0].ID {
		t.Fatalf("a TTL change rotated the root: %+v", r2)
	}
	if _, l := signLeaf(t, s, "web"); l.NotAfter.Sub(l.NotBefore) != 48*time.Hour+ca.ClockSkew {
		t.Errorf("leaf lifetime after the TTL change: %v", l.NotAfter.Sub(l.NotBefore))
	}

	// A key type change rotates.
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul",
		Config: map[string]any{"LeafCertTTL": "48h", "PrivateKeyType": "rsa", "PrivateKeyBits": 2048}}); err != nil {
		t.Fatal(err)
	}
	_, rotated := caRoots(t, s)
	if len(rotated) != 2 {
		t.Fatalf("after rotation: %d roots", len(rotated))
	}
	old, neu := rotated[0], rotated[1]
	if old.ID != roots[0].ID || old.Active || old.RotatedOutAt.IsZero() || !neu.Active || neu.PrivateKeyType != "rsa" || len(neu.IntermediateCerts) != 1 {
		t.Fatalf("after rotation: old %+v new %+v", old, neu)
	}
	_, newLeaf := signLeaf(t, s, "web")
	certs := rootCerts(t, rotated)
	if err := newLeaf.CheckSignatureFrom(certs[1]); err != nil {
		t.Errorf("new leaf not from the new root: %v", err)
	}
	if err := ca.VerifyLeaf(leaf, certs, nil, clock.Now()); err != nil {
		t.Errorf("old leaf against the roots after rotation: %v", err)
	}
	cross, _ := ca.ParseCert(neu.IntermediateCerts[0])
	if err := ca.VerifyLeaf(newLeaf, certs[:1], []*x509.Certificate{cross}, clock.Now()); err != nil {
		t.Errorf("new leaf for a peer trusting only the old root: %v", err)
	}

	// Pruned once its last leaf has expired, not before.
	if _, err := s.pruneCARoots(nil); err != nil {
		t.Fatal(err)
	}
	if _, r := caRoots(t, s); len(r) != 2 {
		t.Fatalf("old root pruned early: %d roots", len(r))
	}
	clock.Add(48*time.Hour + 2*ca.ClockSkew)
	if _, err := s.pruneCARoots(nil); err != nil {
		t.Fatal(err)
	}
	if _, r := caRoots(t, s); len(r) != 1 || r[0].ID != neu.ID {
		t.Fatalf("after the prune: %+v", r)
	}
}

// A server that restarts over its data dir, and so leads again with the
// CA stored, keeps the CA: same cluster ID, same roots.
func TestConnectCASurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := startCA(t, dir, nil)
	cfg, _ := s.ConnectCAConfiguration()
	_, roots := caRoots(t, s)
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	s2 := startCA(t, dir, nil)
	cfg2, _ := s2.ConnectCAConfiguration()
	_, roots2 := caRoots(t, s2)
	if cfg2.ClusterID != cfg.ClusterID || len(roots2) != 1 || roots2[0].ID != roots[0].ID || roots2[0].SigningKey != roots[0].SigningKey {
		t.Fatalf("after restart: %+v %+v, want %+v %+v", cfg2, roots2, cfg, roots)
	}
	if _, leaf := signLeaf(t, s2, "web"); leaf.CheckSignatureFrom(rootCerts(t, roots)[0]) != nil {
		t.Fatal("leaf after restart not from the stored root")
	}
}

// Without connect, the CA calls answer Consul's error.
func TestConnectCADisabled(t *testing.T) {
	s := startInMemory(t)
	if _, err := s.ConnectCAConfiguration(); err != ErrConnectNotEnabled {
		t.Errorf("config: %v", err)
	}
	if _, err := s.ConnectCASign("x", "web"); err != ErrConnectNotEnabled {
		t.Errorf("sign: %v", err)
	}
	if idx := s.Store().MaxIndex("connect-ca-config", "connect-ca-roots"); idx != 0 {
		t.Errorf("CA written with connect disabled, index %d", idx)
	}
}

// operatorRoot makes a self-signed CA certificate and its key, PEM, of
// an RSA-2048 key, valid from notBefore to notAfter.
func operatorRoot(t *testing.T, notBefore, notAfter time.Time, usage x509.KeyUsage) (certPEM, keyPEM string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: usage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

// wantBadRequest checks that err is a bad request naming field.
func wantBadRequest(t *testing.T, what string, err error, field string) {
	t.Helper()
	if !structs.IsBadRequest(err) || !strings.Contains(err.Error(), field) {
		t.Errorf("%s: %v, want a bad request naming %s", what, err, field)
	}
}

// A supplied RSA root is stored with its own key type and size, so that
// the configuration read back and written again (with a TTL changed), or
// a configuration silent about the key, keeps it; a key type or size that
// contradicts the supplied root is refused naming the field.
func TestConnectCASuppliedRootRoundTrip(t *testing.T) {
	s := startCA(t, "", nil)
	certPEM, keyPEM := operatorRoot(t, time.Now().Add(-time.Hour), time.Now().Add(24*365*time.Hour), x509.KeyUsageCertSign)
	for field, raw := range map[string]map[string]any{
		"PrivateKeyType": {"PrivateKeyType": "ec"},
		"PrivateKeyBits": {"PrivateKeyBits": 4096, "PrivateKeyType": "rsa"},
	} {
		raw["RootCert"], raw["PrivateKey"] = certPEM, keyPEM
		err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul", Config: raw})
		wantBadRequest(t, "contradicting "+field, err, field)
	}
	if _, roots := caRoots(t, s); len(roots) != 1 {
		t.Fatalf("a refused configuration rotated: %d roots", len(roots))
	}
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul",
		Config: map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM}}); err != nil {
		t.Fatal(err)
	}
	_, roots := caRoots(t, s)
	supplied := activeRoot(roots)
	if !ca.CertsEqual(supplied.RootCert, certPEM) || supplied.PrivateKeyType != "rsa" || supplied.PrivateKeyBits != 2048 {
		t.Fatalf("active root after supplying one: %+v", supplied)
	}
	checkStored := func(step string) {
		t.Helper()
		cfg, err := s.ConnectCAConfiguration()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config["PrivateKeyType"] != "rsa" || fmt.Sprint(cfg.Config["PrivateKeyBits"]) != "2048" {
			t.Fatalf("%s: stored %v, want the supplied root's rsa/2048", step, cfg.Config)
		}
		if _, roots := caRoots(t, s); activeRoot(roots).ID != supplied.ID {
			t.Fatalf("%s: rotated away from the supplied root to %s/%d", step,
				activeRoot(roots).PrivateKeyType, activeRoot(roots).PrivateKeyBits)
		}
	}
	checkStored("after supplying")

	// GET → PUT with LeafCertTTL changed.
	cfg, _ := s.ConnectCAConfiguration()
	back := map[string]any{}
	for k, v := range cfg.Config {
		back[k] = v
	}
	back["LeafCertTTL"] = "48h"
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: cfg.Provider, Config: back}); err != nil {
		t.Fatal(err)
	}
	checkStored("config read back and written")
	// Silent about the key.
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul", Config: map[string]any{"LeafCertTTL": "36h"}}); err != nil {
		t.Fatal(err)
	}
	checkStored("config without a key type")
	if c, _ := s.ConnectCAConfiguration(); c.Config["LeafCertTTL"] != "36h" {
		t.Fatalf("LeafCertTTL not changed: %v", c.Config)
	}
	// Asking for another key still rotates.
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul",
		Config: map[string]any{"PrivateKeyType": "ec", "PrivateKeyBits": 256}}); err != nil {
		t.Fatal(err)
	}
	if _, roots := caRoots(t, s); activeRoot(roots).ID == supplied.ID || activeRoot(roots).PrivateKeyType != "ec" {
		t.Fatalf("asking for an ec key did not rotate: %+v", activeRoot(roots))
	}
}

// A supplied root that is not valid now, ends within LeafCertTTL, or may
// not sign certificates is refused naming RootCert, and leaves the roots
// as they were.
func TestConnectCASuppliedRootValidity(t *testing.T) {
	s := startCA(t, "", nil)
	now := time.Now()
	for name, tc := range map[string]struct {
		from, to time.Time
		usage    x509.KeyUsage
	}{
		"expired":           {now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), x509.KeyUsageCertSign},
		"not yet valid":     {now.Add(24 * time.Hour), now.Add(1000 * time.Hour), x509.KeyUsageCertSign},
		"within leaf TTL":   {now.Add(-time.Hour), now.Add(12 * time.Hour), x509.KeyUsageCertSign},
		"cannot sign certs": {now.Add(-time.Hour), now.Add(1000 * time.Hour), x509.KeyUsageDigitalSignature},
	} {
		certPEM, keyPEM := operatorRoot(t, tc.from, tc.to, tc.usage)
		err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Provider: "consul",
			Config: map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM, "LeafCertTTL": "24h"}})
		wantBadRequest(t, name, err, "RootCert")
	}
	if _, roots := caRoots(t, s); len(roots) != 1 || roots[0].PrivateKeyType != "ec" {
		t.Fatalf("refused roots changed the roots: %+v", roots)
	}
	// The leaves of the root in use are still fine.
	if _, leaf := signLeaf(t, s, "web"); !leaf.NotAfter.After(leaf.NotBefore) {
		t.Fatalf("leaf valid %s to %s", leaf.NotBefore, leaf.NotAfter)
	}
}

// The active root supplied again is kept without a rotation, but only
// with its own key: another PrivateKey is refused naming it.
func TestConnectCAActiveRootOtherKey(t *testing.T) {
	s := startCA(t, "", nil)
	certPEM, keyPEM := operatorRoot(t, time.Now().Add(-time.Hour), time.Now().Add(24*365*time.Hour), x509.KeyUsageCertSign)
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Config: map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM}}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := s.ConnectCAConfiguration()
	_, otherKey := operatorRoot(t, time.Now().Add(-time.Hour), time.Now().Add(24*365*time.Hour), x509.KeyUsageCertSign)
	err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Config: map[string]any{"RootCert": certPEM, "PrivateKey": otherKey}})
	wantBadRequest(t, "active RootCert with another PrivateKey", err, "PrivateKey")
	if c, _ := s.ConnectCAConfiguration(); c.ModifyIndex != cfg.ModifyIndex {
		t.Fatal("a refused configuration was stored")
	}
	// With its own key: accepted, no rotation.
	if err := s.ConnectCASetConfiguration(&structs.CAConfiguration{Config: map[string]any{"RootCert": certPEM,
		"PrivateKey": keyPEM, "LeafCertTTL": "48h"}}); err != nil {
		t.Fatal(err)
	}
	if _, roots := caRoots(t, s); len(roots) != 2 || !ca.CertsEqual(activeRoot(roots).RootCert, certPEM) {
		t.Fatalf("the active root supplied again rotated: %d roots", len(roots))
	}
}
