package api_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/hashicorp/consul/api"
)

// The whole path with the CA's own certificates: the agent issues web's
// leaf, the leaf verifies against the agent's roots, and authorize, given
// the URI SAN read from that certificate, follows web's intentions to db.
func TestConnectAuthorizeWithIssuedLeaf(t *testing.T) {
	a := start(t)
	ag := a.c.Agent()
	leaf, _, err := ag.ConnectCALeaf("web", nil)
	must(t, err)
	roots, _, err := ag.ConnectCARoots(nil)
	must(t, err)

	pool := x509.NewCertPool()
	for _, r := range roots.Roots {
		if !pool.AppendCertsFromPEM([]byte(r.RootCertPEM)) {
			t.Fatalf("root %s does not parse", r.ID)
		}
	}
	pair, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatalf("leaf certificate and key do not pair: %v", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	must(t, err)
	inter := x509.NewCertPool()
	for rest := []byte(leaf.CertPEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && c.IsCA {
			inter.AddCert(c)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("web's leaf does not verify as a client certificate: %v", err)
	}
	if len(cert.URIs) != 1 {
		t.Fatalf("leaf URIs = %v, want one SPIFFE ID", cert.URIs)
	}
	uri := cert.URIs[0].String()
	serial := leaf.SerialNumber

	authorize := func(target string) *api.AgentAuthorize {
		t.Helper()
		res, err := ag.ConnectAuthorize(&api.AgentAuthorizeParams{Target: target, ClientCertURI: uri, ClientCertSerial: serial})
		must(t, err)
		return res
	}
	if r := authorize("db"); !r.Authorized {
		t.Fatalf("no intentions: %+v, want allowed by default", r)
	}
	_, err = a.c.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil)
	must(t, err)
	if r := authorize("db"); r.Authorized || r.Reason != "Matched L4 intention: web => db (deny)" {
		t.Fatalf("after a deny intention: %+v", r)
	}
	if r := authorize("cache"); !r.Authorized {
		t.Fatalf("another destination: %+v, want allowed by default", r)
	}
	_, err = a.c.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow}, nil)
	must(t, err)
	if r := authorize("db"); !r.Authorized || r.Reason != "Matched L4 intention: web => db (allow)" {
		t.Fatalf("after the intention became allow: %+v", r)
	}
}
