package agent_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// TestLeafRenewedBeforeExpiry shows the agent renews a cached leaf by
// itself: it schedules the renewal between 60% and 90% of the leaf's
// lifetime, and when that time comes a blocking query on the leaf
// returns a new certificate, signed for the same service.
func TestLeafRenewedBeforeExpiry(t *testing.T) {
	waits := make(chan time.Duration, 16)
	fire := make(chan time.Time)
	a := agenttest.Start(t, agenttest.Options{Agent: agent.Options{
		LeafRenewAfter: func(d time.Duration) <-chan time.Time {
			waits <- d
			return fire
		},
	}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	first, meta, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	var wait time.Duration
	select {
	case wait = <-waits:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal was scheduled for the leaf")
	}
	life := first.ValidBefore.Sub(first.ValidAfter)
	due := time.Since(first.ValidAfter) + wait // from ValidAfter to the renewal
	if due < time.Duration(0.6*float64(life))-time.Minute || due > time.Duration(0.9*float64(life)) {
		t.Fatalf("renewal at %v of a %v leaf, want between 60%% and 90%% of it", due, life)
	}

	type result struct {
		leaf *api.LeafCert
		err  error
	}
	got := make(chan result, 1)
	go func() {
		l, _, err := c.Agent().ConnectCALeaf("web", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		got <- result{l, err}
	}()
	select {
	case fire <- time.Now():
	case <-time.After(10 * time.Second):
		t.Fatal("the agent stopped waiting for the renewal time")
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking query did not return after the renewal")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.leaf.SerialNumber == first.SerialNumber || r.leaf.ModifyIndex <= first.ModifyIndex {
		t.Fatalf("after renewal: serial %s index %d, before: serial %s index %d",
			r.leaf.SerialNumber, r.leaf.ModifyIndex, first.SerialNumber, first.ModifyIndex)
	}
	if r.leaf.ServiceURI != first.ServiceURI || r.leaf.PrivateKeyPEM == first.PrivateKeyPEM {
		t.Fatalf("renewed leaf: URI %q (was %q), same key: %v", r.leaf.ServiceURI, first.ServiceURI,
			r.leaf.PrivateKeyPEM == first.PrivateKeyPEM)
	}
	block, _ := pem.Decode([]byte(r.leaf.CertPEM))
	if block == nil {
		t.Fatal("renewed leaf has no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != first.ServiceURI {
		t.Fatalf("renewed leaf URIs = %v, want [%s]", cert.URIs, first.ServiceURI)
	}
}
