package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"
)

// suppliedPair makes a self-signed CA certificate and its key, PEM, of
// key (nil: a new P-256 key), valid from notBefore to notAfter, with
// usage as its key usage.
func suppliedPair(t *testing.T, key crypto.Signer, notBefore, notAfter time.Time, usage x509.KeyUsage) (certPEM, keyPEM string) {
	t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: usage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return EncodeCert(cert), keyPEM
}

func rsaKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A supplied root's key type and size are the configuration's, as
// stored (Map), and a type or size given that contradicts it is refused
// naming the key.
func TestSuppliedRootKeyType(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM := suppliedPair(t, rsaKey(t), now.Add(-time.Hour), now.Add(10*DefaultRootCertTTL), x509.KeyUsageCertSign)
	cfg, err := ParseConfig(ProviderConsul, map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrivateKeyType != "rsa" || cfg.PrivateKeyBits != 2048 {
		t.Fatalf("config of an RSA-2048 root: %s/%d", cfg.PrivateKeyType, cfg.PrivateKeyBits)
	}
	if m := cfg.Map(); m["PrivateKeyType"] != "rsa" || m["PrivateKeyBits"] != 2048 {
		t.Fatalf("stored config of an RSA-2048 root: %v", m)
	}
	p, _ := New(ProviderConsul, cfg)
	root, err := p.GenerateRoot(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if root.KeyType != "rsa" || root.KeyBits != 2048 {
		t.Fatalf("root %s/%d", root.KeyType, root.KeyBits)
	}
	// Agreeing values are fine.
	if _, err := ParseConfig(ProviderConsul, map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM,
		"PrivateKeyType": "RSA", "PrivateKeyBits": 2048}); err != nil {
		t.Fatalf("agreeing key type and bits: %v", err)
	}
	for _, tc := range []struct {
		raw  map[string]any
		want string
	}{
		{map[string]any{"PrivateKeyType": "ec"}, "Config.PrivateKeyType:"},
		{map[string]any{"PrivateKeyType": "ec", "PrivateKeyBits": 256}, "Config.PrivateKeyType:"},
		{map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 4096}, "Config.PrivateKeyBits:"},
		{map[string]any{"PrivateKeyBits": 4096}, "Config.PrivateKeyBits:"},
	} {
		tc.raw["RootCert"], tc.raw["PrivateKey"] = certPEM, keyPEM
		if _, err := ParseConfig(ProviderConsul, tc.raw); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%v) = %v, want an error starting %q", tc.raw["PrivateKeyType"], err, tc.want)
		}
	}
}

// InheritKey keeps the active root's key for a configuration silent
// about it, and only then.
func TestInheritKey(t *testing.T) {
	for _, tc := range []struct {
		raw      map[string]any
		typ      string
		bits     int
		wantType string
		wantBits int
	}{
		{map[string]any{}, "rsa", 4096, "rsa", 4096},
		{map[string]any{"PrivateKeyType": "rsa"}, "rsa", 4096, "rsa", 4096},
		{map[string]any{"PrivateKeyType": "ec"}, "rsa", 4096, "ec", 256},
		{map[string]any{"PrivateKeyBits": 384}, "ec", 256, "ec", 384},
		{map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}, "rsa", 4096, "rsa", 2048},
	} {
		c, err := ParseConfig(ProviderConsul, tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		c.InheritKey(tc.typ, tc.bits)
		if c.PrivateKeyType != tc.wantType || c.PrivateKeyBits != tc.wantBits {
			t.Errorf("%v with active %s/%d: %s/%d, want %s/%d", tc.raw, tc.typ, tc.bits,
				c.PrivateKeyType, c.PrivateKeyBits, tc.wantType, tc.wantBits)
		}
	}
}

// A supplied root must be valid now and for at least LeafCertTTL more,
// and allowed to sign certificates.
func TestSuppliedRootValidity(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name      string
		from, to  time.Time
		usage     x509.KeyUsage
		wantError string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), x509.KeyUsageCertSign, "expired"},
		{"not yet valid", now.Add(time.Hour), now.Add(1000 * time.Hour), x509.KeyUsageCertSign, "not valid yet"},
		{"ends within LeafCertTTL", now.Add(-time.Hour), now.Add(10 * time.Hour), x509.KeyUsageCertSign, "LeafCertTTL"},
		{"no keyCertSign", now.Add(-time.Hour), now.Add(1000 * time.Hour), x509.KeyUsageDigitalSignature, "keyCertSign"},
		{"valid", now.Add(-time.Hour), now.Add(1000 * time.Hour), x509.KeyUsageCertSign, ""},
		{"no key usage", now.Add(-time.Hour), now.Add(1000 * time.Hour), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM := suppliedPair(t, nil, tc.from, tc.to, tc.usage)
			cfg, err := ParseConfig(ProviderConsul, map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM, "LeafCertTTL": "24h"})
			if err != nil {
				t.Fatal(err)
			}
			p, _ := New(ProviderConsul, cfg)
			_, err = p.GenerateRoot(testTD)
			if tc.wantError == "" {
				if err != nil {
					t.Fatalf("GenerateRoot: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "Config.RootCert:") || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("GenerateRoot = %v, want a Config.RootCert error about %q", err, tc.wantError)
			}
		})
	}
}

// Sign refuses a leaf its root, near or past its end, would leave with
// NotAfter not after NotBefore.
func TestSignAfterRootEnd(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM := suppliedPair(t, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour), x509.KeyUsageCertSign)
	cert, _ := ParseCert(certPEM)
	cfg, _ := ParseConfig(ProviderConsul, nil)
	p, _ := New(ProviderConsul, cfg)
	// LoadRoot takes a stored root as it is: one that has expired since.
	if err := p.LoadRoot(&Root{Cert: cert, CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t, webID().String())
	leaf, err := p.Sign(LeafRequest(csr, webID(), time.Hour, now))
	if err == nil {
		t.Fatalf("leaf signed by an expired root, valid %s to %s", leaf.NotBefore, leaf.NotAfter)
	}
}

// withoutSKI re-signs a certificate made by Go (which always gives a CA
// certificate a SubjectKeyId) with that extension removed.
func withoutSKI(t *testing.T, certPEM string, key crypto.Signer) string {
	t.Helper()
	cert, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	var tbs struct {
		Raw          asn1.RawContent
		Version      int `asn1:"optional,explicit,default:0,tag:0"`
		SerialNumber *big.Int
		SigAlg       pkix.AlgorithmIdentifier
		Issuer       asn1.RawValue
		Validity     asn1.RawValue
		Subject      asn1.RawValue
		PublicKey    asn1.RawValue
		Extensions   []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
	}
	if _, err := asn1.Unmarshal(cert.RawTBSCertificate, &tbs); err != nil {
		t.Fatal(err)
	}
	var keep []pkix.Extension
	for _, e := range tbs.Extensions {
		if !e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 14}) {
			keep = append(keep, e)
		}
	}
	tbs.Extensions, tbs.Raw = keep, nil
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbsDER)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, tbs.SigAlg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.SubjectKeyId) != 0 || out.CheckSignatureFrom(out) != nil {
		t.Fatal("withoutSKI: bad certificate")
	}
	return EncodeCert(out)
}

// A supplied root without a SubjectKeyId still has a key ID, its key's,
// that its leaves name as their AuthorityKeyId: two such roots are told
// apart.
func TestSuppliedRootWithoutSKI(t *testing.T) {
	now := time.Now()
	var ids [][]byte
	for range 2 {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		certPEM, keyPEM := suppliedPair(t, key, now.Add(-time.Hour), now.Add(1000*time.Hour), x509.KeyUsageCertSign)
		certPEM = withoutSKI(t, certPEM, key)
		p, root, _ := newCA(t, map[string]any{"RootCert": certPEM, "PrivateKey": keyPEM})
		id := KeyID(root.Cert)
		if len(id) == 0 {
			t.Fatal("no key ID for a root without SubjectKeyId")
		}
		leaf := sign(t, p, webID(), time.Hour, now)
		if !bytes.Equal(leaf.AuthorityKeyId, id) {
			t.Fatalf("leaf AuthorityKeyId %x, want the root's key ID %x", leaf.AuthorityKeyId, id)
		}
		if err := VerifyLeaf(leaf, []*x509.Certificate{root.Cert}, nil, now); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if bytes.Equal(ids[0], ids[1]) {
		t.Fatal("two roots of different keys have the same key ID")
	}
	// A root with a SubjectKeyId keeps it as its ID.
	_, gen, _ := newCA(t, nil)
	if !bytes.Equal(KeyID(gen.Cert), gen.Cert.SubjectKeyId) {
		t.Fatal("KeyID of a root with a SubjectKeyId is not it")
	}
}
