package api_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// Review finding: with only enable_local_script_checks, the HTTP API ran
// script checks. Consul allows those from config files only.
func TestLocalScriptChecksOnlyFromConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	cfg := `{"checks": [{"id": "cfg-script", "name": "cfg-script", "args": ["/bin/true"], "interval": "1h"}]}`
	must(t, os.WriteFile(filepath.Join(dir, "checks.json"), []byte(cfg), 0o600))
	a := start(t, agenttest.Options{Args: []string{"-config-dir", dir, "-enable-local-script-checks"}})

	checks, err := a.c.Agent().Checks()
	must(t, err)
	if _, ok := checks["cfg-script"]; !ok {
		t.Fatalf("a script check from the config was refused: %v", checks)
	}
	err = a.c.Agent().CheckRegister(&api.AgentCheckRegistration{
		ID: "api-script", Name: "api-script",
		AgentServiceCheck: api.AgentServiceCheck{Args: []string{"/bin/sh", "-c", "touch " + marker}, Interval: "10ms"},
	})
	if err == nil || !strings.Contains(err.Error(), "Scripts are disabled") {
		t.Fatalf("API script check with only local script checks enabled: err = %v, want refused", err)
	}
	err = a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web",
		Check: &api.AgentServiceCheck{Args: []string{"/bin/sh", "-c", "touch " + marker}, Interval: "10ms"}})
	if err == nil {
		t.Fatal("API service with a script check was accepted")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a script check registered over the API ran")
	}
	if svcs, _ := a.c.Agent().Services(); svcs["web"] != nil {
		t.Error("the refused service was registered")
	}
}

// Review finding: reload reset config checks to critical (killing sessions
// bound to them), deleted API checks bound to config services, and could
// leave a half-applied config behind.
func TestReloadKeepsStateAndIsAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "svc.json")
	good := `{"services": [{"name": "web", "port": 80, "check": {"id": "web-ttl", "ttl": "10m"}}]}`
	must(t, os.WriteFile(file, []byte(good), 0o600))
	a := start(t, agenttest.Options{Args: []string{"-config-dir", dir}})
	ag := a.c.Agent()

	must(t, ag.PassTTL("web-ttl", "fine"))
	must(t, ag.CheckRegister(&api.AgentCheckRegistration{ID: "api-on-web", Name: "api-on-web", ServiceID: "web",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}}))
	sid, _, err := a.c.Session().Create(&api.SessionEntry{
		NodeChecks: []string{"serfHealth"}, ServiceChecks: []api.ServiceCheck{{ID: "web-ttl"}}}, nil)
	must(t, err)
	ok, _, err := a.c.KV().Acquire(&api.KVPair{Key: "leader", Session: sid}, nil)
	must(t, err)
	if !ok {
		t.Fatal("acquire failed")
	}

	assertKept := func(when string) {
		t.Helper()
		checks, err := ag.Checks()
		must(t, err)
		if c := checks["web-ttl"]; c == nil || c.Status != api.HealthPassing {
			t.Errorf("%s: web-ttl = %+v, want still passing", when, c)
		}
		if checks["api-on-web"] == nil {
			t.Errorf("%s: the API check bound to the config service is gone", when)
		}
		kv, _, err := a.c.KV().Get("leader", nil)
		must(t, err)
		if kv == nil || kv.Session != sid {
			t.Errorf("%s: leader lock = %+v, want still held by %s", when, kv, sid)
		}
	}

	must(t, ag.Reload())
	assertKept("after an unchanged reload")

	// A config whose second service is invalid is refused whole.
	bad := `{"services": [{"name": "web", "port": 80, "check": {"id": "web-ttl", "ttl": "10m"}},
		{"name": "other", "port": 1, "check": {"id": "x", "http": "http://127.0.0.1:1/", "interval": "0s"}}]}`
	must(t, os.WriteFile(file, []byte(bad), 0o600))
	if err := ag.Reload(); err == nil {
		t.Fatal("reload of an invalid config succeeded")
	}
	assertKept("after a refused reload")
	if svcs, _ := ag.Services(); svcs["other"] != nil || svcs["web"] == nil {
		t.Errorf("after a refused reload: services = %v", svcs)
	}
}
