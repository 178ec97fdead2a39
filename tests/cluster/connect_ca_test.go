package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// checkLeaf verifies a leaf (and the intermediates sent with it) against
// roots, and its SPIFFE ID.
func checkLeaf(leaf *api.LeafCert, roots *api.CARootList, service string) error {
	var certs []*x509.Certificate
	for rest := []byte(leaf.CertPEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("leaf of %s: no certificate", service)
	}
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots.Roots {
		if !rp.AppendCertsFromPEM([]byte(r.RootCertPEM)) {
			return fmt.Errorf("root %s: bad PEM", r.ID)
		}
	}
	for _, c := range certs[1:] {
		ip.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("leaf of %s: %v", service, err)
	}
	want := "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/" + service
	if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != want {
		return fmt.Errorf("leaf of %s: URI SANs %v, want %s", service, certs[0].URIs, want)
	}
	return nil
}

// The CA is set up once per cluster and survives the leader: a client
// agent and a follower get leaves signed by the leader over the internal
// RPC, and after the leader is killed the new one keeps the same roots
// and signs with them.
func TestConnectCAAcrossLeaderChange(t *testing.T) {
	servers := startCluster(t, 3)
	client := startClient(t, servers)
	leader := waitLeader(t, servers, nil)
	var follower *member
	for _, s := range servers {
		if s != leader {
			follower = s
			break
		}
	}
	var roots *api.CARootList
	eventually(t, 30*time.Second, func() error {
		r, _, err := follower.client(t).Connect().CARoots(nil)
		if err != nil || r.ActiveRootID == "" {
			return fmt.Errorf("roots: %+v %v", r, err)
		}
		roots = r
		return nil
	})
	cc := client.client(t)
	eventually(t, 30*time.Second, func() error {
		croots, _, err := cc.Agent().ConnectCARoots(nil)
		if err != nil || croots.ActiveRootID != roots.ActiveRootID {
			return fmt.Errorf("client's roots: %+v, %v", croots, err)
		}
		return nil
	})
	for _, tc := range []struct {
		m       *member
		service string
	}{{client, "web"}, {follower, "db"}} {
		leaf, _, err := tc.m.client(t).Agent().ConnectCALeaf(tc.service, nil)
		if err != nil {
			t.Fatalf("leaf of %s from %s: %v", tc.service, tc.m.name, err)
		}
		if err := checkLeaf(leaf, roots, tc.service); err != nil {
			t.Fatal(err)
		}
	}
	// The sign endpoint is internal even on a client agent.
	resp, err := http.Post("http://"+client.addr()+"/v1/internal/connect/ca/sign", "application/json",
		strings.NewReader(`{"Service":"web","CSR":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("public POST to the sign path: status %d", resp.StatusCode)
	}

	leader.kill()
	waitLeader(t, servers, leader)
	eventually(t, 60*time.Second, func() error {
		r, _, err := follower.client(t).Connect().CARoots(nil)
		if err != nil {
			return err
		}
		if r.ActiveRootID != roots.ActiveRootID || r.TrustDomain != roots.TrustDomain || len(r.Roots) != 1 {
			t.Fatalf("after failover the CA changed: %+v, was %+v", r, roots)
		}
		leaf, _, err := cc.Agent().ConnectCALeaf("api", nil)
		if err != nil {
			return fmt.Errorf("leaf through the client after failover: %v", err)
		}
		return checkLeaf(leaf, roots, "api")
	})
}
