package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// The intentions API over service-intentions entries, with the official
// client: upsert, exact get, list, match, check, delete.
func TestIntentionsLifecycle(t *testing.T) {
	a := start(t)
	c := a.c.Connect()
	for _, ixn := range []*api.Intention{
		{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow, Description: "web reads"},
		{SourceName: "*", DestinationName: "db", Action: api.IntentionActionDeny},
		{SourceName: "web", DestinationName: "*", Action: api.IntentionActionDeny},
	} {
		_, err := c.IntentionUpsert(ixn, nil)
		must(t, err)
	}
	got, _, err := c.IntentionGetExact("web", "db", nil)
	must(t, err)
	if got == nil || got.Action != api.IntentionActionAllow || got.Precedence != 9 || got.Description != "web reads" ||
		got.SourceNS != "default" || got.DestinationName != "db" {
		t.Fatalf("IntentionGetExact = %+v", got)
	}
	if missing, _, err := c.IntentionGetExact("api", "db", nil); err != nil || missing != nil {
		t.Fatalf("IntentionGetExact of a missing intention = %+v, %v; want nil, nil", missing, err)
	}
	// The db entry holds both of its sources.
	entry, _, err := a.c.ConfigEntries().Get(api.ServiceIntentions, "db", nil)
	must(t, err)
	if n := len(entry.(*api.ServiceIntentionsConfigEntry).Sources); n != 2 {
		t.Fatalf("db entry has %d sources, want 2", n)
	}

	list, _, err := c.Intentions(nil)
	must(t, err)
	var order []string
	for _, i := range list {
		order = append(order, i.String())
	}
	if want := "web => db (allow),* => db (deny),web => * (deny)"; strings.Join(order, ",") != want {
		t.Errorf("Intentions = %q, want %q (by precedence)", order, want)
	}
	filtered, _, err := c.Intentions(&api.QueryOptions{Filter: `DestinationName == "*"`})
	must(t, err)
	if len(filtered) != 1 || filtered[0].SourceName != "web" {
		t.Errorf("filtered Intentions = %v", filtered)
	}

	m, _, err := c.IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: []string{"db", "cache"}}, nil)
	must(t, err)
	if len(m["db"]) != 3 || m["db"][0].SourceName != "web" || m["db"][2].DestinationName != "*" || len(m["cache"]) != 1 {
		t.Errorf("IntentionMatch by destination = %v", m)
	}
	m, _, err = c.IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchSource, Names: []string{"api"}}, nil)
	must(t, err)
	if len(m["api"]) != 1 || m["api"][0].String() != "* => db (deny)" {
		t.Errorf("IntentionMatch by source = %v", m)
	}

	for _, tc := range []struct {
		src, dst string
		want     bool
	}{{"web", "db", true}, {"api", "db", false}, {"web", "cache", false}, {"api", "cache", true}} {
		ok, _, err := c.IntentionCheck(&api.IntentionCheck{Source: tc.src, Destination: tc.dst}, nil)
		if err != nil || ok != tc.want {
			t.Errorf("IntentionCheck(%s → %s) = %v, %v; want %v", tc.src, tc.dst, ok, err, tc.want)
		}
	}

	// Replacing keeps one intention; deleting the last source deletes the
	// entry.
	_, err = c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil)
	must(t, err)
	if ok, _, _ := c.IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil); ok {
		t.Error("check after replacing with deny is allowed")
	}
	_, err = c.IntentionDeleteExact("web", "db", nil)
	must(t, err)
	_, err = c.IntentionDeleteExact("*", "db", nil)
	must(t, err)
	if _, _, err := a.c.ConfigEntries().Get(api.ServiceIntentions, "db", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("db entry after deleting its last intention: %v, want 404", err)
	}
	_, err = c.IntentionDeleteExact("nobody", "db", nil)
	must(t, err)
}

func TestIntentionsBadInput(t *testing.T) {
	a := start(t)
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", "/v1/connect/intentions/exact?source=web", `{"Action":"allow"}`, "destination"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"maybe"}`, "Action"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Actoin":"allow"}`, "Actoin: unknown field"},
		{"PUT", "/v1/connect/intentions/exact?source=ns1/web&destination=db", `{"Action":"allow"}`, "default namespace"},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Permissions":[{"Action":"allow","HTTP":{"PathExact":"/"}}]}`, `has protocol "tcp"`},
		{"GET", "/v1/connect/intentions/match?by=sideways&name=web", "", "'by' parameter"},
		{"GET", "/v1/connect/intentions/match?by=source", "", "name"},
		{"GET", "/v1/connect/intentions/check?source=web", "", "destination"},
	} {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		r := a.do(t, tc.method, tc.path, body).expect(t, tc.path, http.StatusBadRequest)
		if !strings.Contains(r.body, tc.want) {
			t.Errorf("%s %s: body %q, want it to contain %q", tc.method, tc.path, r.body, tc.want)
		}
	}
	list, _, err := a.c.Connect().Intentions(nil)
	if err != nil || len(list) != 0 {
		t.Errorf("intentions after refused writes: %v, %v", list, err)
	}
	a.do(t, "GET", "/v1/connect/intentions/exact?source=web&destination=db", nil).expect(t, "missing intention", http.StatusNotFound)
}

// certURI makes a real client certificate for service svc, as a sidecar
// would present, and returns the URI of its SAN.
func certURI(t *testing.T, svc string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	id, err := url.Parse("spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/" + svc)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: svc},
		URIs:         []*url.URL{id},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	if len(cert.URIs) != 1 {
		t.Fatalf("certificate has %d URI SANs", len(cert.URIs))
	}
	return cert.URIs[0].String()
}

func TestConnectAuthorize(t *testing.T) {
	a := start(t)
	web, api2 := certURI(t, "web"), certURI(t, "api")
	authorize := func(uri, target string) *api.AgentAuthorize {
		t.Helper()
		res, err := a.c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: target, ClientCertURI: uri, ClientCertSerial: "2a"})
		must(t, err)
		return res
	}
	if r := authorize(web, "db"); !r.Authorized || r.Reason != "Default behavior configured by ACLs" {
		t.Errorf("no intentions, ACLs off: %+v; want allowed by default", r)
	}
	ce := a.c.ConfigEntries()
	_, _, err := ce.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionAllow}, {Name: "api", Action: api.IntentionActionDeny}}}, nil)
	must(t, err)
	if r := authorize(web, "db"); !r.Authorized || r.Reason != "Matched L4 intention: web => db (allow)" {
		t.Errorf("allowed: %+v", r)
	}
	if r := authorize(api2, "db"); r.Authorized || r.Reason != "Matched L4 intention: api => db (deny)" {
		t.Errorf("denied: %+v", r)
	}
	// A wildcard deny makes everything else deny by default.
	_, _, err = ce.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "*",
		Sources: []*api.SourceIntention{{Name: "*", Action: api.IntentionActionDeny}}}, nil)
	must(t, err)
	if r := authorize(api2, "cache"); r.Authorized || r.Reason != "Matched L4 intention: * => * (deny)" {
		t.Errorf("wildcard: %+v", r)
	}
	if r := authorize(web, "db"); !r.Authorized {
		t.Errorf("exact allow under a wildcard deny: %+v", r)
	}
	// An L7 intention cannot be decided per connection: deny, saying so.
	_, _, err = ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "db", Protocol: "http"}, nil)
	must(t, err)
	_, err = a.c.Connect().IntentionUpsert(&api.Intention{SourceName: "api", DestinationName: "db",
		Permissions: []*api.IntentionPermission{{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}}}}, nil)
	must(t, err)
	if r := authorize(api2, "db"); r.Authorized || r.Reason != "Matched L7 intention: api => db (1 permission)" {
		t.Errorf("L7: %+v", r)
	}

	for _, tc := range []struct{ body, want string }{
		{`{"Target":"db"}`, "ClientCertURI"},
		{`{"ClientCertURI":"` + web + `"}`, "Target"},
		{`{"Target":"db","ClientCertURI":"spiffe://x.consul/agent/client/dc/dc1/id/n1"}`, "ClientCertURI"},
		{`{"Target":"db","ClientCertURI":"not a uri"}`, "ClientCertURI"},
	} {
		r := a.do(t, "POST", "/v1/agent/connect/authorize", tc.body).expect(t, tc.body, http.StatusBadRequest)
		if !strings.Contains(r.body, tc.want) {
			t.Errorf("%s: body %q, want it to name %s", tc.body, r.body, tc.want)
		}
	}
}

// With acl.enabled and default_policy deny, no intention means deny.
func TestConnectAuthorizeDefaultDeny(t *testing.T) {
	a := start(t, agenttest.Options{Args: []string{"-hcl", `acl { enabled = true
default_policy = "deny" }`}})
	res, err := a.c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: certURI(t, "web")})
	must(t, err)
	if res.Authorized || res.Reason != "Default behavior configured by ACLs" {
		t.Errorf("default deny: %+v", res)
	}
	ok, _, err := a.c.Connect().IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil)
	if err != nil || ok {
		t.Errorf("IntentionCheck with default deny = %v, %v", ok, err)
	}
}

// The mesh entry's DefaultIntentionPolicy decides connections no
// intention matches, over the agent's ACL default, for authorize and
// check alike; removing it gives the decision back to the ACL default.
func TestConnectAuthorizeMeshDefault(t *testing.T) {
	a := start(t, agenttest.Options{Args: []string{"-hcl", `acl { enabled = true
default_policy = "deny" }`}})
	web := certURI(t, "web")
	decide := func() (*api.AgentAuthorize, bool) {
		t.Helper()
		res, err := a.c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: web})
		must(t, err)
		ok, _, err := a.c.Connect().IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil)
		must(t, err)
		return res, ok
	}
	setMesh := func(policy string) {
		t.Helper()
		a.do(t, "PUT", "/v1/config", `{"Kind":"mesh","DefaultIntentionPolicy":"`+policy+`"}`).expect(t, "mesh entry", http.StatusOK)
	}
	setMesh("allow")
	if res, ok := decide(); !res.Authorized || !ok || res.Reason != "Default behavior configured by the mesh config entry" {
		t.Errorf("mesh allow over ACL deny: authorize %+v, check %v", res, ok)
	}
	setMesh("deny")
	if res, ok := decide(); res.Authorized || ok || res.Reason != "Default behavior configured by the mesh config entry" {
		t.Errorf("mesh deny: authorize %+v, check %v", res, ok)
	}
	// An intention still decides before any default.
	_, err := a.c.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow}, nil)
	must(t, err)
	if res, ok := decide(); !res.Authorized || !ok {
		t.Errorf("allow intention under a mesh deny: authorize %+v, check %v", res, ok)
	}
	_, err = a.c.Connect().IntentionDeleteExact("web", "db", nil)
	must(t, err)
	a.do(t, "PUT", "/v1/config", `{"Kind":"mesh","DefaultIntentionPolicy":"sometimes"}`).expect(t, "bad policy", http.StatusBadRequest)
	if res, _ := decide(); res.Authorized {
		t.Errorf("a refused mesh write changed the default: %+v", res)
	}
	_, err = a.c.ConfigEntries().Delete(api.MeshConfig, api.MeshConfigMesh, nil)
	must(t, err)
	if res, ok := decide(); res.Authorized || ok || res.Reason != "Default behavior configured by ACLs" {
		t.Errorf("without a mesh entry, ACL deny: authorize %+v, check %v", res, ok)
	}
}
