package api_test

import (
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, path := range []string{
		"/v1/agent/service/register",
		"/v1/agent/check/register",
		"/v1/agent/check/update/x",
		"/v1/catalog/register",
		"/v1/catalog/deregister",
		"/v1/session/create",
		"/v1/txn",
	} {
		for name, body := range map[string]string{
			"truncated":  `{"Name": "x"`,
			"not json":   `Name=x`,
			"wrong type": `{"Name": 12, "Node": 12, "Port": "eighty"}`,
		} {
			r := a.do(t, "PUT", path, body)
			if r.code != http.StatusBadRequest {
				t.Errorf("PUT %s with a %s body: status %d, want 400 (body %q)", path, name, r.code, r.body)
			}
		}
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/v1/nope", 404},
		{"GET", "/v1/agent/nope", 404},
		{"GET", "/v2/kv/x", 404},
		{"GET", "/", 404},
		{"GET", "/v1/catalog/register", 405},
		{"DELETE", "/v1/catalog/services", 405},
		{"GET", "/v1/session/create", 405},
		{"POST", "/v1/kv/x", 405},
		{"PATCH", "/v1/kv/x", 405},
		{"PUT", "/v1/agent/self", 405},
		// Fixed bug: read as the service "register", a 404.
		{"GET", "/v1/agent/service/register", 405},
		{"GET", "/v1/agent/check/register", 405},
		{"GET", "/v1/txn", 405},
		{"DELETE", "/v1/status/leader", 405},
	} {
		r := a.do(t, tc.method, tc.path, nil)
		if r.code != tc.code {
			t.Errorf("%s %s: status %d, want %d (body %q)", tc.method, tc.path, r.code, tc.code, r.body)
		}
		if tc.code == 405 && r.header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without an Allow header", tc.method, tc.path)
		}
	}
}

// TestNoPartialWrites checks that a request refused for one bad part
// leaves nothing of its good parts behind.
func TestNoPartialWrites(t *testing.T) {
	t.Parallel()
	a := start(t)

	// A service whose second check is invalid is not registered at all.
	err := a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "half", Name: "half",
		Checks: api.AgentServiceChecks{
			{CheckID: "good", TTL: "10s"},
			{CheckID: "bad", HTTP: "http://127.0.0.1:1/"}, // no interval
		},
	})
	if err == nil {
		t.Fatalf("registration with an invalid check succeeded")
	}
	svcs, err := a.c.Agent().Services()
	must(t, err)
	checks, err := a.c.Agent().Checks()
	must(t, err)
	if len(svcs) != 0 || len(checks) != 0 {
		t.Errorf("after a refused registration: services %v, checks %v", keys(svcs), keys(checks))
	}
	if cs, _, _ := a.c.Catalog().Service("half", "", nil); len(cs) != 0 {
		t.Errorf("catalog has half after a refused registration")
	}

	// A catalog registration whose check is bad writes neither node nor
	// service.
	a.do(t, "PUT", "/v1/catalog/register", `{
		"Node": "partial", "Address": "192.0.2.9",
		"Service": {"Service": "p"},
		"Checks": [{"CheckID": "ok", "Status": "passing"}, {"CheckID": "ko", "Status": "sideways"}]
	}`).expect(t, "register with a bad check", 400)
	if n, _, _ := a.c.Catalog().Node("partial", nil); n != nil {
		t.Errorf("node written by a refused registration: %+v", n)
	}
	// Nor does one whose check names a service that does not exist: the
	// node must not be created on the way.
	a.do(t, "PUT", "/v1/catalog/register", `{
		"Node": "partial", "Address": "192.0.2.9",
		"Checks": [{"CheckID": "ko", "ServiceID": "ghost"}]
	}`).expect(t, "register with a check of a missing service", 400)
	if n, _, _ := a.c.Catalog().Node("partial", nil); n != nil {
		t.Errorf("node written by a refused registration: %+v", n)
	}

	// A KV write with bad parameters writes nothing.
	a.do(t, "PUT", "/v1/kv/k?flags=x", "v").expect(t, "bad flags", 400)
	a.do(t, "PUT", "/v1/kv/k?acquire=a&release=b", "v").expect(t, "acquire and release", 400)
	if p, _, _ := a.c.KV().Get("k", nil); p != nil {
		t.Errorf("k written by a refused put")
	}
}

// A request for a datacenter the agent has no path to is refused with
// Consul's 500 "No path to datacenter" before anything is served or
// written, whatever the endpoint; agent endpoints ignore ?dc=.
func TestUnknownDatacenter(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct{ method, path, body string }{
		{"PUT", "/v1/kv/elsewhere?dc=nowhere", "v"},
		{"GET", "/v1/kv/elsewhere?dc=nowhere", ""},
		{"PUT", "/v1/session/create?dc=nowhere", "{}"},
		{"GET", "/v1/health/service/consul?dc=nowhere", ""},
		{"PUT", "/v1/txn?dc=nowhere", `[{"KV": {"Verb": "set", "Key": "elsewhere", "Value": "dg=="}}]`},
		{"PUT", "/v1/event/fire/deploy?dc=nowhere", ""},
		{"GET", "/v1/status/leader?dc=nowhere", ""},
	} {
		r := a.do(t, tc.method, tc.path, tc.body).expect(t, tc.method+" "+tc.path, http.StatusInternalServerError)
		if r.body != "No path to datacenter" {
			t.Errorf("%s %s: body %q, want No path to datacenter", tc.method, tc.path, r.body)
		}
	}
	if kv, _, err := a.c.KV().Get("elsewhere", nil); err != nil || kv != nil {
		t.Errorf("the refused writes stored %v (%v)", kv, err)
	}
	if sessions, _, err := a.c.Session().List(nil); err != nil || len(sessions) != 0 {
		t.Errorf("the refused session create left %v (%v)", sessions, err)
	}
	a.do(t, "GET", "/v1/agent/self?dc=nowhere", "").expect(t, "agent self with ?dc", http.StatusOK)
}
