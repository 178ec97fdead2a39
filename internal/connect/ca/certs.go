package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/connect"
)

// ClockSkew is how far back a certificate's NotBefore is set, so that a
// peer whose clock lags a little still accepts it.
const ClockSkew = time.Minute

// RootName is the Name of the roots Trellis generates.
const RootName = "Trellis CA Primary Cert"

// GenerateKey makes a private key of keyType ("ec" or "rsa") and bits.
func GenerateKey(keyType string, bits int) (crypto.Signer, error) {
	switch keyType {
	case "ec":
		var c elliptic.Curve
		switch bits {
		case 224:
			c = elliptic.P224()
		case 256:
			c = elliptic.P256()
		case 384:
			c = elliptic.P384()
		case 521:
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("ca: ec key of %d bits: want 224, 256, 384 or 521", bits)
		}
		return ecdsa.GenerateKey(c, rand.Reader)
	case "rsa":
		if bits < 2048 {
			return nil, fmt.Errorf("ca: rsa key of %d bits: want at least 2048", bits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	}
	return nil, fmt.Errorf("ca: key type %q: want ec or rsa", keyType)
}

// KeyInfo returns the type ("ec" or "rsa") and size of a public key.
func KeyInfo(pub crypto.PublicKey) (string, int, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ec", k.Curve.Params().BitSize, nil
	case *rsa.PublicKey:
		return "rsa", k.N.BitLen(), nil
	}
	return "", 0, fmt.Errorf("ca: unsupported public key type %T: want ECDSA or RSA", pub)
}

// EncodeKey returns a private key as PEM: "EC PRIVATE KEY" for ECDSA,
// "RSA PRIVATE KEY" for RSA, as Consul writes them.
func EncodeKey(k crypto.Signer) (string, error) {
	var block *pem.Block
	switch t := k.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(t)
		if err != nil {
			return "", err
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(t)}
	default:
		return "", fmt.Errorf("ca: unsupported key type %T", k)
	}
	return string(pem.EncodeToMemory(block)), nil
}

// ParseKey reads a PEM private key: EC, PKCS#1 RSA or PKCS#8.
func ParseKey(s string) (crypto.Signer, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		if s, ok := k.(crypto.Signer); ok {
			if _, _, err := KeyInfo(s.Public()); err != nil {
				return nil, err
			}
			return s, nil
		}
		return nil, fmt.Errorf("unsupported PKCS#8 key %T", k)
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

// EncodeCert returns a certificate as PEM.
func EncodeCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// ParseCert reads the first PEM certificate of s.
func ParseCert(s string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return x509.ParseCertificate(block.Bytes)
}

// ParseCSR reads a PEM certificate request and checks its signature.
func ParseCSR(s string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM CERTIFICATE REQUEST block found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("signature does not verify: %v", err)
	}
	return csr, nil
}

// HexString writes b as colon-separated lowercase hex, as Consul writes
// serials, key IDs and fingerprints.
func HexString(b []byte) string {
	var sb strings.Builder
	for i, x := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x", x)
	}
	return sb.String()
}

// Fingerprint is a root's ID: the SHA-1 of its DER, as colon-separated hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw)
	return HexString(sum[:])
}

// serial returns a random positive serial of 128 bits: unique without
// coordination among leaders.
func serial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// TrustDomainPrefix is the first label of a trust domain, cut to 8
// characters: the part of a cluster ID that names it in DNS SANs.
func TrustDomainPrefix(trustDomain string) string {
	p, _, _ := strings.Cut(trustDomain, ".")
	if len(p) > 8 {
		p = p[:8]
	}
	return strings.ToLower(p)
}

// LeafDNSName is the DNS SAN (and common name) of a service's leaf:
// "<service>.svc.<namespace>.<first 8 characters of the cluster ID>.consul",
// as Consul's leaf common names. It is "" when the service name is not a
// valid DNS label, in which case the leaf has no DNS SAN.
func LeafDNSName(id connect.ServiceID) string {
	ns := id.Namespace
	if ns == "" {
		ns = connect.DefaultNamespace
	}
	svc := strings.ToLower(id.Service)
	if !isDNSLabel(svc) {
		return ""
	}
	return fmt.Sprintf("%s.svc.%s.%s.consul", svc, ns, TrustDomainPrefix(id.TrustDomain))
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// CheckCSR checks that csr asks for want's identity and nothing else:
// exactly one URI SAN, equal to want's SPIFFE ID (trust domain, namespace,
// datacenter and service); no IP or email SANs; no DNS SAN but the
// service's own (LeafDNSName); an ECDSA or RSA (2048 bits or more) key.
// Its error says why, for a 400. The CSR's signature is checked by
// ParseCSR.
func CheckCSR(csr *x509.CertificateRequest, want connect.ServiceID) error {
	if len(csr.URIs) != 1 {
		return fmt.Errorf("CSR must have exactly one URI SAN, the service's SPIFFE ID %s; it has %d", want, len(csr.URIs))
	}
	got, err := connect.ServiceIDFromURI(csr.URIs[0])
	if err != nil {
		return fmt.Errorf("CSR URI SAN %q is not a service SPIFFE ID: %v", csr.URIs[0], err)
	}
	switch {
	case !strings.EqualFold(got.TrustDomain, want.TrustDomain):
		return fmt.Errorf("CSR SPIFFE ID %s is in trust domain %q, not this cluster's %q", csr.URIs[0], got.TrustDomain, want.TrustDomain)
	case got.Datacenter != want.Datacenter:
		return fmt.Errorf("CSR SPIFFE ID %s is for datacenter %q, not %q", csr.URIs[0], got.Datacenter, want.Datacenter)
	case got.Namespace != connect.DefaultNamespace:
		return fmt.Errorf("CSR SPIFFE ID %s is for namespace %q, not %q", csr.URIs[0], got.Namespace, connect.DefaultNamespace)
	case got.Service != want.Service:
		return fmt.Errorf("CSR SPIFFE ID %s is for service %q, but the request is for service %q", csr.URIs[0], got.Service, want.Service)
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return errors.New("CSR must not have IP or email SANs")
	}
	dns := LeafDNSName(want)
	for _, n := range csr.DNSNames {
		if !strings.EqualFold(n, dns) {
			return fmt.Errorf("CSR DNS SAN %q is not allowed: a leaf of service %q may only carry %q", n, want.Service, dns)
		}
	}
	typ, bits, err := KeyInfo(csr.PublicKey)
	if err != nil {
		return fmt.Errorf("CSR key: %v", err)
	}
	if typ == "rsa" && bits < 2048 {
		return fmt.Errorf("CSR key: rsa key of %d bits is too weak: want at least 2048", bits)
	}
	return nil
}

// LeafTemplate is what a provider signs: a checked CSR's key for a
// service identity, valid from NotBefore to NotAfter.
type LeafTemplate struct {
	PublicKey crypto.PublicKey
	ID        connect.ServiceID
	NotBefore time.Time
	NotAfter  time.Time
}

// LeafRequest builds the template of a leaf for csr, valid for ttl from
// now (with ClockSkew before).
func LeafRequest(csr *x509.CertificateRequest, id connect.ServiceID, ttl time.Duration, now time.Time) *LeafTemplate {
	return &LeafTemplate{PublicKey: csr.PublicKey, ID: id, NotBefore: now.Add(-ClockSkew), NotAfter: now.Add(ttl)}
}

// leafCert is the x509 template of a leaf: URI SAN the SPIFFE ID, DNS SAN
// and common name LeafDNSName, usable for TLS servers and clients.
func leafCert(t *LeafTemplate) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	dns := LeafDNSName(t.ID)
	cn := dns
	if cn == "" || len(cn) > 64 {
		cn = t.ID.Service
		if len(cn) > 64 {
			cn = cn[:64]
		}
	}
	c := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn},
		URIs:                  []*url.URL{t.ID.URI()},
		NotBefore:             t.NotBefore,
		NotAfter:              t.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	if dns != "" {
		c.DNSNames = []string{dns}
	}
	return c, nil
}

// rootCert is the x509 template of a root for trustDomain: a CA whose URI
// SAN is spiffe://<trust domain>.
func rootCert(trustDomain string, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	// Root serials are shown as a uint64 (CARoot.SerialNumber): keep 63
	// bits.
	sn.Rsh(sn, 65)
	if sn.Sign() == 0 {
		sn.SetInt64(1)
	}
	return &x509.Certificate{
		SerialNumber: sn,
		Subject: pkix.Name{
			// Unique per root, so that the old and the new root of a
			// rotation never share a subject.
			CommonName:   fmt.Sprintf("pri-%x.ca.%s.consul", sn.Uint64()&0xffffffff, TrustDomainPrefix(trustDomain)),
			Organization: []string{"Trellis"},
		},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// KeyID is a CA certificate's key ID: its SubjectKeyId, or for one
// without (a supplied root may have none) the SHA-1 of its public key
// (RFC 5280 4.2.1.2, method 1, as Go computes it for the roots it
// generates). Leaves name it as their AuthorityKeyId, and the root's
// CARoot.SigningKeyID is it, so a root without a SubjectKeyId still has
// an ID that agents can tell apart from the next root's.
func KeyID(c *x509.Certificate) []byte {
	if len(c.SubjectKeyId) > 0 {
		return c.SubjectKeyId
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.PublicKey.RightAlign())
	return sum[:]
}

// SameKey reports whether a private key is the one of pub.
func SameKey(k crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := k.Public().(equaler)
	return ok && e.Equal(pub)
}

// VerifyLeaf checks that leaf chains to one of roots, through
// intermediates, for a TLS client or server.
func VerifyLeaf(leaf *x509.Certificate, roots, intermediates []*x509.Certificate, now time.Time) error {
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rp.AddCert(r)
	}
	for _, c := range intermediates {
		ip.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// CertsEqual reports whether two PEM texts hold the same first
// certificate.
func CertsEqual(a, b string) bool {
	ca, err1 := ParseCert(a)
	cb, err2 := ParseCert(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca.Raw, cb.Raw)
}
