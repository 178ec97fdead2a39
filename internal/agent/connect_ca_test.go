package agent_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"runtime"
	"strings"
	"sync"
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

// leafManagers counts the goroutines keeping a cached leaf.
func leafManagers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, line := range strings.Split(string(buf), "\n") {
		if strings.Contains(line, "(*caClient).manageLeaf(") && !strings.HasPrefix(line, "created by") {
			count++
		}
	}
	return count
}

// waitFor polls cond until it holds, for at most 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

// TestLeafEvictedWhenIdle shows a cached leaf nobody asks for is
// dropped after the idle time (72 hours after its last request), its
// goroutine ending, and that a later request signs a new one; a leaf
// asked for meanwhile is kept.
func TestLeafEvictedWhenIdle(t *testing.T) {
	idle := make(chan time.Duration, 16)
	fire := make(chan time.Time)
	a := agenttest.Start(t, agenttest.Options{Agent: agent.Options{
		LeafIdleAfter: func(d time.Duration) <-chan time.Time {
			idle <- d
			return fire
		},
	}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	armed := func() time.Duration {
		t.Helper()
		select {
		case d := <-idle:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("no idle timer was armed")
		}
		return 0
	}
	fireIdle := func() {
		t.Helper()
		select {
		case fire <- time.Now():
		case <-time.After(10 * time.Second):
			t.Fatal("the leaf's goroutine is not waiting on its idle timer")
		}
	}
	base := leafManagers()
	first, _, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := armed(); d != 72*time.Hour {
		t.Fatalf("idle timer of a new leaf: %v, want 72h", d)
	}
	// Asked for again: the timer firing re-arms it, for what is left of
	// the 72 hours since this request.
	if _, _, err := c.Agent().ConnectCALeaf("web", nil); err != nil {
		t.Fatal(err)
	}
	fireIdle()
	if d := armed(); d <= 71*time.Hour || d > 72*time.Hour {
		t.Fatalf("idle timer re-armed for %v, want just under 72h", d)
	}
	if n := leafManagers(); n != base+1 {
		t.Fatalf("%d leaf goroutines after a used leaf's idle timer fired, want %d", n, base+1)
	}
	// Not asked for since: dropped, goroutine and all.
	fireIdle()
	waitFor(t, "the idle leaf's goroutine to end", func() bool { return leafManagers() == base })
	again, meta, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.SerialNumber == first.SerialNumber || again.PrivateKeyPEM == first.PrivateKeyPEM {
		t.Fatal("the leaf after eviction is the cached one")
	}
	if meta.CacheHit {
		t.Error("the leaf after eviction was reported as a cache hit")
	}
	if d := armed(); d != 72*time.Hour {
		t.Fatalf("idle timer of the new entry: %v, want 72h", d)
	}
	if n := leafManagers(); n != base+1 {
		t.Fatalf("%d leaf goroutines after a new request, want %d", n, base+1)
	}
}

// TestLeafReissuedAfterRotationDuringSigning holds a first leaf between
// the leader's signing (with the old root) and the agent caching it,
// rotates the root meanwhile and waits until the agent sees the new
// roots: the cached leaf must still be re-issued by the new root, with
// no renewal timer firing.
func TestLeafReissuedAfterRotationDuringSigning(t *testing.T) {
	signed := make(chan struct{})
	release := make(chan struct{})
	var hold, unhold sync.Once
	a := agenttest.Start(t, agenttest.Options{Agent: agent.Options{
		LeafRenewAfter: func(time.Duration) <-chan time.Time { return nil }, // never due
		LeafSigned: func(string) {
			hold.Do(func() {
				close(signed)
				<-release
			})
		},
	}})
	letGo := func() { unhold.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the agent closes
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	oldRoots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		leaf *api.LeafCert
		err  error
	}
	got := make(chan result, 1)
	go func() {
		l, _, err := c.Agent().ConnectCALeaf("web", nil)
		got <- result{l, err}
	}()
	select {
	case <-signed:
	case <-time.After(20 * time.Second):
		t.Fatal("the leaf was not signed")
	}
	if _, err := c.Connect().CASetConfig(&api.CAConfig{Provider: "consul",
		Config: map[string]any{"PrivateKeyType": "ec", "PrivateKeyBits": 384}}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to see the new root", func() bool {
		r, _, err := c.Agent().ConnectCARoots(nil)
		return err == nil && r.ActiveRootID != oldRoots.ActiveRootID
	})
	letGo()
	var r result
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no leaf")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	rootCert := func(roots *api.CARootList, id string) *x509.Certificate {
		t.Helper()
		for _, root := range roots.Roots {
			if root.ID == id {
				block, _ := pem.Decode([]byte(root.RootCertPEM))
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				return cert
			}
		}
		t.Fatalf("no root %s", id)
		return nil
	}
	leafCert := func(l *api.LeafCert) *x509.Certificate {
		t.Helper()
		block, _ := pem.Decode([]byte(l.CertPEM))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	if err := leafCert(r.leaf).CheckSignatureFrom(rootCert(oldRoots, oldRoots.ActiveRootID)); err != nil {
		t.Fatalf("the first leaf is not from the old root, the test did not hold it right: %v", err)
	}
	next, _, err := c.Agent().ConnectCALeaf("web", &api.QueryOptions{WaitIndex: r.leaf.ModifyIndex, WaitTime: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if next.ModifyIndex <= r.leaf.ModifyIndex {
		t.Fatal("the leaf signed by the old root was not re-issued after the rotation")
	}
	newRoots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := leafCert(next).CheckSignatureFrom(rootCert(newRoots, newRoots.ActiveRootID)); err != nil {
		t.Fatalf("the re-issued leaf is not from the new root: %v", err)
	}
}

// Leaf keys follow the CA's key type: an RSA-2048 CA gives RSA-2048
// leaves, as Consul's agents make them.
func TestLeafKeyFollowsCAKeyType(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-hcl",
		`connect { ca_config { private_key_type = "rsa" private_key_bits = 2048 } }`}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(leaf.CertPEM))
	if block == nil {
		t.Fatal("no PEM certificate in the leaf")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 {
		t.Fatalf("leaf key %T, want RSA-2048", cert.PublicKey)
	}
	if cert.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("leaf signed with %v, want SHA256WithRSA from the RSA root", cert.SignatureAlgorithm)
	}
}
