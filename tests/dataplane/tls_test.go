package dataplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

// testCA is a certificate authority made by the test: either a stranger
// to the mesh, or, given to the agent as its CA's supplied root, the
// mesh's own CA with its key in the test's hands.
type testCA struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	certPEM, keyPEM string
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key,
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))}
}

// leaf issues a client and server certificate naming spiffeID, as the
// mesh's leaves do.
func (ca *testCA) leaf(t testing.TB, spiffeID string) tls.Certificate {
	t.Helper()
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "test leaf"},
		URIs: []*url.URL{u}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dialTLS opens a TLS connection to a sidecar's public listener as a
// client presenting cert (nil: none), checking the server with verify
// (nil: not at all, when the test looks at what the server accepts). The
// handshake is complete on return; with TLS 1.3 the server may still
// refuse the client's certificate, which the client learns on its first
// read.
func dialTLS(addr string, cert *tls.Certificate, verify func(tls.ConnectionState) error) (*Session, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, VerifyConnection: verify}
	if cert != nil {
		// Sent whatever CAs the server says it accepts: a client with a
		// stranger's certificate must be refused by the server, not
		// spared by its own TLS stack.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return newSession(c), nil
}

// verifyServer accepts a server whose leaf chains to roots and names
// exactly spiffeID, as a sidecar checks its upstream.
func verifyServer(roots *x509.CertPool, spiffeID string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no server certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return err
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
			return fmt.Errorf("server names %v, want %s", leaf.URIs, spiffeID)
		}
		return nil
	}
}

// serverLeaf is the leaf a sidecar's public listener presents, read in
// a handshake that the client aborts as soon as it has it, so that the
// probe never reaches the application (the sidecar counts it as a TLS
// error).
func serverLeaf(addr string) (*x509.Certificate, error) {
	var leaf *x509.Certificate
	cfg := &tls.Config{InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				leaf = cs.PeerCertificates[0]
			}
			return errors.New("probe done")
		}}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err == nil {
		c.Close()
		return nil, errors.New("the probe's handshake was not aborted")
	}
	if leaf == nil {
		return nil, err
	}
	return leaf, nil
}
