package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// A sidecar's public listener lets through only clients with a leaf of
// the mesh's CA naming a service of its trust domain that the intentions
// allow; everyone else is refused before the application sees a byte,
// and the sidecar counts why.
func TestPublicListenerRefusesStrangers(t *testing.T) {
	a := StartAgent(t)
	// The mesh's CA is one whose key the test holds, so that it can
	// issue what the agent never would: a leaf of another trust domain.
	meshCA := newTestCA(t, "mesh root")
	if _, err := a.API.Connect().CASetConfig(&api.CAConfig{Provider: "consul",
		Config: map[string]any{"RootCert": meshCA.certPEM, "PrivateKey": meshCA.keyPEM}}, nil); err != nil {
		t.Fatalf("supply the CA's root: %v", err)
	}
	a.Intention("evil", "db", api.IntentionActionDeny)
	app := StartApp(t, "db")
	db := a.Register(ServiceOptions{Name: "db", Port: app.Port()})
	px := a.StartSidecar(db)

	webID := a.SPIFFEID("web")
	if _, root := a.Roots(); !root.Equal(meshCA.cert) {
		t.Fatalf("the CA's active root is %q, not the supplied one", root.Subject)
	}
	stranger := newTestCA(t, "stranger root").leaf(t, webID)
	otherDomain := meshCA.leaf(t, strings.Replace(webID, "spiffe://", "spiffe://not-", 1))
	evil := a.Leaf("evil")

	// TLS refusals: the server closes the handshake with an alert, which
	// a TLS 1.3 client reads after its own Finished.
	tlsRefused := []struct {
		name  string
		cert  *tls.Certificate
		alert string
	}{
		{"no client certificate", nil, "certificate required"},
		{"a certificate of another CA", &stranger, "unknown certificate authority"},
		{"the mesh CA's certificate of another trust domain", &otherDomain, "bad certificate"},
	}
	for _, tc := range tlsRefused {
		t.Run(tc.name, func(t *testing.T) {
			err := exchange(db.Public, tc.cert, nil)
			t.Logf("refused: %v", err)
			if err == nil || !strings.Contains(err.Error(), "remote error: tls: "+tc.alert) {
				t.Fatalf("got %v, want the TLS alert %q from the sidecar", err, tc.alert)
			}
		})
	}
	t.Run("plaintext", func(t *testing.T) {
		s, err := Dial(db.Public)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(s.c, "hello in the clear\n"); err != nil {
			t.Fatal(err)
		}
		// The sidecar may answer with a TLS alert record, never with the
		// application's bytes; and it closes the connection.
		got, err := io.ReadAll(s.c)
		t.Logf("refused: read %q, %v", got, err)
		if isTimeout(err) {
			t.Fatalf("the connection was not closed: %v", err)
		}
		if strings.Contains(string(got), "db ") {
			t.Fatalf("a plaintext client got the application's answer %q", got)
		}
	})
	t.Run("a leaf of the mesh for a denied service", func(t *testing.T) {
		err := exchange(db.Public, &evil, nil)
		t.Logf("refused: %v", err)
		if err == nil || isTimeout(err) || strings.Contains(err.Error(), "remote error: tls:") {
			t.Fatalf("got %v, want the connection closed after the handshake", err)
		}
	})
	if n, b := app.Conns(), app.Bytes(); n != 0 || b != 0 {
		t.Fatalf("the app accepted %d connections and read %d bytes from refused clients", n, b)
	}
	px.WaitStat(statTLSErrors, float64(len(tlsRefused)+1), "listener", publicLn)
	px.WaitStat(statDenied, 1, "listener", publicLn)

	// The allowed client also checks that it talks to db, under the
	// supplied root.
	roots := x509.NewCertPool()
	roots.AddCert(meshCA.cert)
	web := a.Leaf("web")
	if err := exchange(db.Public, &web, verifyServer(roots, a.SPIFFEID("db"))); err != nil {
		t.Fatalf("an allowed client: %v", err)
	}
	if n := app.Conns(); n != 1 {
		t.Fatalf("the app accepted %d connections, want the allowed client's only", n)
	}
	px.WaitStat(statConns, float64(len(tlsRefused)+3), "listener", publicLn)
}

// exchange connects to a public listener over TLS presenting cert
// (checking the server with verify, if set) and asks the app behind it
// one question.
func exchange(addr string, cert *tls.Certificate, verify func(tls.ConnectionState) error) error {
	s, err := dialTLS(addr, cert, verify)
	if err != nil {
		return err
	}
	defer s.Close()
	name, err := s.Ask("let me in")
	if err == nil && name != "db" {
		return errors.New("answered by " + name)
	}
	return err
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
