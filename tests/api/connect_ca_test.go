package api_test

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// pemCerts parses every certificate of a PEM text.
func pemCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", s)
	}
	return out
}

// verifyLeaf checks that a leaf (with the intermediates after it in its
// PEM) chains to one of roots.
func verifyLeaf(t *testing.T, leaf *api.LeafCert, roots []*api.CARoot) *x509.Certificate {
	t.Helper()
	certs := pemCerts(t, leaf.CertPEM)
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		for _, c := range pemCerts(t, r.RootCertPEM) {
			rp.AddCert(c)
		}
	}
	for _, c := range certs[1:] {
		ip.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf %s does not verify against the roots: %v", leaf.SerialNumber, err)
	}
	return certs[0]
}

func activeRoot(t *testing.T, l *api.CARootList) *api.CARoot {
	t.Helper()
	for _, r := range l.Roots {
		if r.ID == l.ActiveRootID {
			if !r.Active {
				t.Fatalf("root %s is ActiveRootID but not Active", r.ID)
			}
			return r
		}
	}
	t.Fatalf("no root with ActiveRootID %q in %+v", l.ActiveRootID, l.Roots)
	return nil
}

func TestConnectCA(t *testing.T) {
	a := start(t)
	conn, ag := a.c.Connect(), a.c.Agent()

	// Roots, from the servers and from the agent.
	roots, qm, err := conn.CARoots(nil)
	must(t, err)
	if len(roots.Roots) != 1 || !strings.HasSuffix(roots.TrustDomain, ".consul") || qm.LastIndex == 0 {
		t.Fatalf("CARoots = %+v, index %d", roots, qm.LastIndex)
	}
	root := activeRoot(t, roots)
	if !strings.Contains(root.RootCertPEM, "BEGIN CERTIFICATE") || root.Name == "" {
		t.Fatalf("root %+v", root)
	}
	// The private key never leaves the server.
	raw := a.do(t, "GET", "/v1/connect/ca/roots", nil).expect(t, "roots", 200)
	if strings.Contains(raw.body, "PRIVATE KEY") || strings.Contains(raw.body, `"SigningKey":`) {
		t.Fatalf("roots answer leaks a private key: %s", raw.body)
	}
	pemBundle := a.do(t, "GET", "/v1/connect/ca/roots?pem=true", nil).expect(t, "roots pem", 200)
	if ct := pemBundle.header.Get("Content-Type"); ct != "application/pem-certificate-chain" || len(pemCerts(t, pemBundle.body)) != 1 {
		t.Errorf("?pem=true: %s %q", ct, pemBundle.body)
	}
	aroots, _, err := ag.ConnectCARoots(nil)
	must(t, err)
	if aroots.ActiveRootID != roots.ActiveRootID || aroots.TrustDomain != roots.TrustDomain {
		t.Fatalf("agent roots %+v, want %+v", aroots, roots)
	}

	// A leaf: made for a key of the agent's, chained to the active root,
	// with the service's SPIFFE ID.
	leaf, lqm, err := ag.ConnectCALeaf("web", nil)
	must(t, err)
	cert := verifyLeaf(t, leaf, roots.Roots)
	wantURI := "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/web"
	if len(cert.URIs) != 1 || cert.URIs[0].String() != wantURI || leaf.ServiceURI != wantURI || leaf.Service != "web" {
		t.Fatalf("leaf URI SANs %v ServiceURI %q, want %q", cert.URIs, leaf.ServiceURI, wantURI)
	}
	if !strings.Contains(leaf.PrivateKeyPEM, "PRIVATE KEY") || lqm.LastIndex != leaf.ModifyIndex {
		t.Fatalf("leaf %+v, index %d", leaf, lqm.LastIndex)
	}
	if got := leaf.ValidBefore.Sub(leaf.ValidAfter); got < 72*time.Hour || got > 73*time.Hour {
		t.Errorf("leaf lifetime %v, want 72h (+ clock skew)", got)
	}
	// The same leaf again comes from the cache.
	again := a.do(t, "GET", "/v1/agent/connect/ca/leaf/web", nil).expect(t, "leaf again", 200)
	if again.header.Get("X-Cache") != "HIT" || !strings.Contains(again.body, leaf.SerialNumber) {
		t.Errorf("second leaf request: X-Cache %q", again.header.Get("X-Cache"))
	}
	if r := a.do(t, "GET", "/v1/agent/connect/ca/leaf/db", nil).expect(t, "leaf db", 200); r.header.Get("X-Cache") != "MISS" {
		t.Errorf("first leaf of db: X-Cache %q, want MISS", r.header.Get("X-Cache"))
	}

	// The configuration.
	cfg, _, err := conn.CAGetConfig(nil)
	must(t, err)
	if cfg.Provider != "consul" || cfg.Config["LeafCertTTL"] != "72h" || cfg.ModifyIndex == 0 {
		t.Fatalf("CAGetConfig = %+v", cfg)
	}
	parsed, err := api.ParseConsulCAConfig(cfg.Config)
	must(t, err)
	if parsed.LeafCertTTL != 72*time.Hour || parsed.RootCertTTL != 87600*time.Hour {
		t.Errorf("ParseConsulCAConfig = %+v", parsed)
	}

	// Bad configurations: 400 naming the field, nothing changes.
	for _, tc := range []struct {
		name string
		cfg  *api.CAConfig
		want string
	}{
		{"leaf TTL too short", &api.CAConfig{Provider: "consul", Config: map[string]any{"LeafCertTTL": "30m"}}, "LeafCertTTL"},
		{"key type", &api.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKeyType": "dsa"}}, "PrivateKeyType"},
		{"unknown provider", &api.CAConfig{Provider: "nope", Config: map[string]any{}}, "Provider"},
		{"state set", &api.CAConfig{Provider: "consul", State: map[string]string{"a": "b"}}, "State"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := conn.CASetConfig(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CASetConfig = %v, want a 400 naming %s", err, tc.want)
			}
		})
	}
	a.do(t, "PUT", "/v1/connect/ca/configuration", "{not json").expect(t, "malformed body", 400)
	after, _, err := conn.CAGetConfig(nil)
	must(t, err)
	if after.ModifyIndex != cfg.ModifyIndex {
		t.Fatalf("refused configurations changed it: %+v", after)
	}

	// The internal sign endpoint is not reachable from the public API.
	a.do(t, "PUT", "/v1/internal/connect/ca/sign", `{"Service":"web","CSR":"x"}`).expect(t, "public sign", 404)

	// A blocking leaf query returns with a leaf of the new root once a
	// key change rotates the root.
	type result struct {
		leaf *api.LeafCert
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, _, err := ag.ConnectCALeaf("web", &api.QueryOptions{WaitIndex: leaf.ModifyIndex, WaitTime: time.Minute})
		done <- result{l, err}
	}()
	// A TTL-only change does not rotate.
	cfg.Config["LeafCertTTL"] = "48h"
	_, err = conn.CASetConfig(cfg, nil)
	must(t, err)
	if r, _, err := conn.CARoots(nil); err != nil || len(r.Roots) != 1 || r.ActiveRootID != roots.ActiveRootID {
		t.Fatalf("a TTL change rotated the root: %+v, %v", r, err)
	}
	_, err = conn.CASetConfig(&api.CAConfig{Provider: "consul", Config: map[string]any{
		"LeafCertTTL": "48h", "PrivateKeyType": "rsa", "PrivateKeyBits": 2048}}, nil)
	must(t, err)
	rotated, _, err := conn.CARoots(nil)
	must(t, err)
	newRoot := activeRoot(t, rotated)
	if len(rotated.Roots) != 2 || newRoot.ID == root.ID || rotated.TrustDomain != roots.TrustDomain {
		t.Fatalf("after rotation: %+v", rotated)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(time.Minute):
		t.Fatal("blocking leaf query did not return after the rotation")
	}
	must(t, res.err)
	if res.leaf.ModifyIndex <= leaf.ModifyIndex || res.leaf.SerialNumber == leaf.SerialNumber {
		t.Fatalf("leaf after rotation %+v, was %+v", res.leaf, leaf)
	}
	newCert := verifyLeaf(t, res.leaf, []*api.CARoot{newRoot})
	if err := newCert.CheckSignatureFrom(pemCerts(t, newRoot.RootCertPEM)[0]); err != nil {
		t.Errorf("leaf after rotation is not from the new root: %v", err)
	}
	// A peer that still trusts only the old root verifies it through the
	// cross-signed certificate sent with it; old leaves still verify.
	verifyLeaf(t, res.leaf, []*api.CARoot{root})
	verifyLeaf(t, leaf, rotated.Roots)
}

func TestConnectCADisabled(t *testing.T) {
	a := start(t, agenttest.Options{Args: []string{"-hcl", "connect { enabled = false }"}})
	for _, path := range []string{"/v1/connect/ca/roots", "/v1/connect/ca/configuration", "/v1/agent/connect/ca/roots", "/v1/agent/connect/ca/leaf/web"} {
		r := a.do(t, "GET", path, nil).expect(t, path, 500)
		if !strings.Contains(r.body, "Connect must be enabled in order to use this endpoint") {
			t.Errorf("%s: %q", path, r.body)
		}
	}
}
