// Package dataplane runs the whole mesh as real processes: a dev agent,
// `trellis connect proxy` sidecars and test applications, with traffic
// carried over mTLS and intentions, health and the CA deciding where it
// may go. harness_test.go has the pieces; each test builds its mesh from
// them.
package dataplane

import (
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

// refused returns nil once a request through addr gets no answer (the
// connection is closed before one), an error while requests pass.
func refused(addr string) error {
	if name, err := Ask(addr, "may I?"); err == nil {
		return fmt.Errorf("a request through %s was answered by %s", addr, name)
	}
	return nil
}

// webToDB is a mesh of two services: web, whose sidecar has db as an
// upstream, and db, an App.
type webToDB struct {
	a       *Agent
	dbApp   *App
	db, web *Service
	dbProxy *Proxy
	up      string // web's local listener for db
}

// startWebToDB registers web and db and starts their sidecars; before,
// if given, runs first (config entries, intentions), so that it is in
// the sidecars' first configuration.
func startWebToDB(t *testing.T, before func(*Agent)) *webToDB {
	m := &webToDB{a: StartAgent(t), dbApp: StartApp(t, "db")}
	if before != nil {
		before(m.a)
	}
	m.db = m.a.Register(ServiceOptions{Name: "db", Port: m.dbApp.Port()})
	m.web = m.a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
	m.dbProxy = m.a.StartSidecar(m.db)
	m.a.StartSidecar(m.web)
	m.up = m.web.Upstreams["db"]
	return m
}

// passes waits until a request from web reaches db.
func (m *webToDB) passes(t *testing.T, what string) {
	t.Helper()
	eventually(t, what, func() error { _, err := Ask(m.up, "hello through the mesh"); return err })
}

// refuses waits until requests from web are refused, then checks that
// one more is refused by db's sidecar (its denial counter moves) and
// never reaches db.
func (m *webToDB) refuses(t *testing.T, what string) {
	t.Helper()
	eventually(t, what, func() error { return refused(m.up) })
	conns := m.dbApp.Conns()
	denied := m.dbProxy.Stats().Sum(statDenied, "listener", publicLn)
	if err := refused(m.up); err != nil {
		t.Fatalf("%s: refused once, then %v", what, err)
	}
	m.dbProxy.WaitStat(statDenied, denied+1, "listener", publicLn)
	if got := m.dbApp.Conns(); got != conns {
		t.Fatalf("%s: db accepted %d connections from refused requests", what, got-conns)
	}
}

func TestSidecarsCarryTrafficAndEnforceIntentions(t *testing.T) {
	m := startWebToDB(t, nil)
	m.passes(t, "web reaches db through both sidecars")

	// A deny intention closes web's connections to db ...
	m.a.Intention("web", "db", api.IntentionActionDeny)
	m.refuses(t, "the deny intention refuses web")
	// ... and removing it lets them through again.
	m.a.DeleteIntention("web", "db")
	m.passes(t, "web reaches db again after the intention is removed")
}

// Under the mesh entry's default deny (a Trellis extension), only an
// allow intention lets web through; removing it, or the default, is
// pushed to the running sidecars.
func TestAllowIntentionUnderMeshDefaultDeny(t *testing.T) {
	m := startWebToDB(t, func(a *Agent) { a.SetMeshDefaultPolicy("deny") })
	// Denied from the sidecars' first configuration on: no request ever
	// passes, and db's sidecar is what refuses them (once web's sidecar
	// knows db's endpoint).
	eventually(t, "db's sidecar denies web", func() error {
		if err := refused(m.up); err != nil {
			t.Fatalf("under the mesh's default deny: %v", err)
		}
		if n := m.dbProxy.Stats().Sum(statDenied, "listener", publicLn); n == 0 {
			return fmt.Errorf("no denial counted yet")
		}
		return nil
	})
	if n := m.dbApp.Conns(); n != 0 {
		t.Fatalf("db accepted %d connections under the default deny", n)
	}

	m.a.Intention("web", "db", api.IntentionActionAllow)
	m.passes(t, "the allow intention lets web through")
	m.a.DeleteIntention("web", "db")
	m.refuses(t, "the default deny refuses web again once the intention is removed")
	m.a.SetMeshDefaultPolicy("allow")
	m.passes(t, "the mesh's default allow lets web through")
}
