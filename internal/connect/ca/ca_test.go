package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/connect"
)

const testTD = "11111111-2222-3333-4444-555555555555.consul"

func webID() connect.ServiceID {
	return connect.ServiceID{TrustDomain: testTD, Namespace: "default", Datacenter: "dc1", Service: "web"}
}

// newCA returns a built-in provider with a fresh root, loaded.
func newCA(t *testing.T, raw map[string]any) (Provider, *Root, *Config) {
	t.Helper()
	cfg, err := ParseConfig(ProviderConsul, raw)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	p, err := New(ProviderConsul, cfg)
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.GenerateRoot(testTD)
	if err != nil {
		t.Fatalf("GenerateRoot: %v", err)
	}
	if err := p.LoadRoot(root); err != nil {
		t.Fatalf("LoadRoot: %v", err)
	}
	return p, root, cfg
}

// csrFor makes a key and a CSR whose URI SAN is uri.
func csrFor(t *testing.T, uri string, dns ...string) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

func sign(t *testing.T, p Provider, id connect.ServiceID, ttl time.Duration, now time.Time) *x509.Certificate {
	t.Helper()
	csr, _ := csrFor(t, id.String())
	if err := CheckCSR(csr, id); err != nil {
		t.Fatalf("CheckCSR: %v", err)
	}
	leaf, err := p.Sign(LeafRequest(csr, id, ttl, now))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return leaf
}

// A leaf of the default built-in CA chains to its root and carries the
// service's identity.
func TestLeafChainsToRoot(t *testing.T) {
	p, root, cfg := newCA(t, nil)
	if root.KeyType != "ec" || root.KeyBits != 256 {
		t.Errorf("root key %s/%d, want ec/256", root.KeyType, root.KeyBits)
	}
	if _, ok := root.Cert.PublicKey.(*ecdsa.PublicKey); !ok || !root.Cert.IsCA {
		t.Errorf("root: key %T, IsCA %v; want ECDSA CA", root.Cert.PublicKey, root.Cert.IsCA)
	}
	if len(root.Cert.URIs) != 1 || root.Cert.URIs[0].String() != "spiffe://"+testTD {
		t.Errorf("root URI SANs %v, want spiffe://%s", root.Cert.URIs, testTD)
	}
	now := time.Now()
	leaf := sign(t, p, webID(), cfg.LeafCertTTL, now)
	if err := VerifyLeaf(leaf, []*x509.Certificate{root.Cert}, nil, now); err != nil {
		t.Fatalf("leaf does not chain to the root: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != webID().String() {
		t.Errorf("leaf URI SANs %v, want %s", leaf.URIs, webID())
	}
	if want := "web.svc.default.11111111.consul"; len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want || leaf.Subject.CommonName != want {
		t.Errorf("leaf DNS SANs %v CN %q, want %q", leaf.DNSNames, leaf.Subject.CommonName, want)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 72*time.Hour+ClockSkew {
		t.Errorf("leaf lifetime %v, want 72h + %v", got, ClockSkew)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("leaf usage: IsCA %v KeyUsage %v Ext %v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	other := sign(t, p, webID(), cfg.LeafCertTTL, now)
	if other.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two leaves share serial %v", leaf.SerialNumber)
	}
	// A leaf does not chain to another CA's root.
	_, root2, _ := newCA(t, nil)
	if err := VerifyLeaf(leaf, []*x509.Certificate{root2.Cert}, nil, now); err == nil {
		t.Error("leaf verified against an unrelated root")
	}
}

// After a rotation, leaves of the old root still verify against the
// bundle of both roots; leaves of the new root verify against the new
// root, and, through the cross-signed certificate, for a peer that only
// trusts the old root.
func TestRotationCrossSign(t *testing.T) {
	oldP, oldRoot, cfg := newCA(t, nil)
	newP, newRoot, _ := newCA(t, nil)
	now := time.Now()
	oldLeaf := sign(t, oldP, webID(), cfg.LeafCertTTL, now)
	cross, err := oldP.CrossSign(newRoot.Cert)
	if err != nil {
		t.Fatalf("CrossSign: %v", err)
	}
	newLeaf := sign(t, newP, webID(), cfg.LeafCertTTL, now)
	both := []*x509.Certificate{oldRoot.Cert, newRoot.Cert}

	if err := VerifyLeaf(oldLeaf, both, nil, now); err != nil {
		t.Errorf("old leaf against both roots: %v", err)
	}
	if err := VerifyLeaf(newLeaf, both, nil, now); err != nil {
		t.Errorf("new leaf against both roots: %v", err)
	}
	if err := newLeaf.CheckSignatureFrom(newRoot.Cert); err != nil {
		t.Errorf("new leaf is not signed by the new root: %v", err)
	}
	if err := VerifyLeaf(newLeaf, []*x509.Certificate{oldRoot.Cert}, []*x509.Certificate{cross}, now); err != nil {
		t.Errorf("new leaf for a peer trusting only the old root, with the cross-signed cert: %v", err)
	}
	if err := VerifyLeaf(newLeaf, []*x509.Certificate{oldRoot.Cert}, nil, now); err == nil {
		t.Error("new leaf verified against the old root without the cross-signed cert")
	}
	// The old leaf stops verifying when it expires, and only then.
	if err := VerifyLeaf(oldLeaf, both, nil, oldLeaf.NotAfter.Add(-time.Second)); err != nil {
		t.Errorf("old leaf just before expiry: %v", err)
	}
	if err := VerifyLeaf(oldLeaf, both, nil, oldLeaf.NotAfter.Add(time.Second)); err == nil {
		t.Error("old leaf verified after its expiry")
	}
}

func TestRSARoot(t *testing.T) {
	p, root, cfg := newCA(t, map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048})
	if k, ok := root.Cert.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("root key %T, want RSA 2048", root.Cert.PublicKey)
	}
	now := time.Now()
	leaf := sign(t, p, webID(), cfg.LeafCertTTL, now)
	if err := VerifyLeaf(leaf, []*x509.Certificate{root.Cert}, nil, now); err != nil {
		t.Fatalf("leaf of an RSA root: %v", err)
	}
}

// A root an operator supplies is used as is; a key that is not the
// certificate's is refused naming the key.
func TestSuppliedRoot(t *testing.T) {
	_, gen, _ := newCA(t, nil)
	p, root, _ := newCA(t, map[string]any{"RootCert": gen.CertPEM, "PrivateKey": gen.KeyPEM})
	if root.Cert.SerialNumber.Cmp(gen.Cert.SerialNumber) != 0 {
		t.Fatal("supplied root not used")
	}
	now := time.Now()
	if err := VerifyLeaf(sign(t, p, webID(), time.Hour, now), []*x509.Certificate{gen.Cert}, nil, now); err != nil {
		t.Fatal(err)
	}
	_, other, _ := newCA(t, nil)
	cfg, err := ParseConfig(ProviderConsul, map[string]any{"RootCert": gen.CertPEM, "PrivateKey": other.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := New(ProviderConsul, cfg)
	if _, err := bad.GenerateRoot(testTD); err == nil || !strings.HasPrefix(err.Error(), "Config.PrivateKey:") {
		t.Fatalf("mismatched key: %v, want an error naming Config.PrivateKey", err)
	}
}

// A CSR is refused unless its one URI SAN is the requesting service's
// SPIFFE ID in this trust domain and datacenter.
func TestCheckCSRRefuses(t *testing.T) {
	want := webID()
	for _, tc := range []struct {
		name, uri string
		dns       []string
		msg       string
	}{
		{"other service", "spiffe://" + testTD + "/ns/default/dc/dc1/svc/db", nil, `for service "db", but the request is for service "web"`},
		{"other trust domain", "spiffe://99999999-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web", nil, "not this cluster's"},
		{"other datacenter", "spiffe://" + testTD + "/ns/default/dc/dc2/svc/web", nil, `for datacenter "dc2"`},
		{"other namespace", "spiffe://" + testTD + "/ns/other/dc/dc1/svc/web", nil, `namespace "other"`},
		{"not a service ID", "spiffe://" + testTD + "/agent/client/dc/dc1/id/x", nil, "not a service SPIFFE ID"},
		{"foreign DNS SAN", want.String(), []string{"db.svc.default.11111111.consul"}, "is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, _ := csrFor(t, tc.uri, tc.dns...)
			err := CheckCSR(csr, want)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("CheckCSR = %v, want an error containing %q", err, tc.msg)
			}
		})
	}
	// No URI SAN at all.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	if err := CheckCSR(csr, want); err == nil || !strings.Contains(err.Error(), "exactly one URI SAN") {
		t.Errorf("CSR without URI SAN: %v", err)
	}
	// The service's own DNS SAN is fine.
	ok, _ := csrFor(t, want.String(), "web.svc.default.11111111.consul")
	if err := CheckCSR(ok, want); err != nil {
		t.Errorf("CSR with the service's DNS SAN: %v", err)
	}
	if _, err := ParseCSR("not pem"); err == nil {
		t.Error("ParseCSR accepted garbage")
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(ProviderConsul, map[string]any{"leaf_cert_ttl": "24h", "private_key_type": "RSA", "PrivateKeyBits": float64(4096)})
	if err != nil {
		t.Fatal(err)
	}
	if c.LeafCertTTL != 24*time.Hour || c.PrivateKeyType != "rsa" || c.PrivateKeyBits != 4096 || c.RootCertTTL != DefaultRootCertTTL {
		t.Errorf("parsed %+v", c)
	}
	m := c.Map()
	if m["LeafCertTTL"] != "24h" || m["RootCertTTL"] != "87600h" || m["IntermediateCertTTL"] != "8760h" || m["PrivateKeyBits"] != 4096 {
		t.Errorf("Map() = %v", m)
	}
	for _, tc := range []struct {
		name string
		raw  map[string]any
		key  string
	}{
		{"leaf TTL too short", map[string]any{"LeafCertTTL": "30m"}, "Config.LeafCertTTL:"},
		{"leaf TTL too long", map[string]any{"LeafCertTTL": "9000h"}, "Config.LeafCertTTL:"},
		{"leaf TTL not a duration", map[string]any{"LeafCertTTL": "soon"}, "Config.LeafCertTTL:"},
		{"leaf TTL wrong type", map[string]any{"LeafCertTTL": true}, "Config.LeafCertTTL:"},
		{"key type", map[string]any{"PrivateKeyType": "dsa"}, "Config.PrivateKeyType:"},
		{"ec bits", map[string]any{"PrivateKeyBits": 2048}, "Config.PrivateKeyBits:"},
		{"rsa bits", map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 1024}, "Config.PrivateKeyBits:"},
		{"bits not a number", map[string]any{"PrivateKeyBits": "many"}, "Config.PrivateKeyBits:"},
		{"intermediate too short", map[string]any{"LeafCertTTL": "72h", "IntermediateCertTTL": "100h"}, "Config.IntermediateCertTTL:"},
		{"root too short", map[string]any{"RootCertTTL": "100h"}, "Config.RootCertTTL:"},
		{"cert without key", map[string]any{"RootCert": "x"}, "Config.PrivateKey:"},
		{"unknown key", map[string]any{"LeafTTL": "1h"}, `Config: unknown key "LeafTTL"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(ProviderConsul, tc.raw)
			if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("ParseConfig(%v) = %v, want an error starting %q", tc.raw, err, tc.key)
			}
		})
	}
	if _, err := ParseConfig("vault", nil); err == nil || !strings.HasPrefix(err.Error(), "Provider:") {
		t.Errorf("unknown provider: %v", err)
	}
}
