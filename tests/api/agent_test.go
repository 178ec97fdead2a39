package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

func TestAgentServiceRegister(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()

	reg := &api.AgentServiceRegistration{
		ID:                "web-1",
		Name:              "web",
		Tags:              []string{"v1", "primary"},
		Port:              8080,
		Address:           "10.0.0.1",
		Meta:              map[string]string{"version": "1.2", "Mixed_Case": "kept"},
		Weights:           &api.AgentWeights{Passing: 10, Warning: 2},
		EnableTagOverride: true,
		Checks: api.AgentServiceChecks{
			{CheckID: "web-ttl", Name: "web ttl", TTL: "30s"},
			{Name: "second", TTL: "30s", Status: api.HealthPassing},
		},
	}
	must(t, agent.ServiceRegister(reg))

	svcs, err := agent.Services()
	must(t, err)
	s, ok := svcs["web-1"]
	if !ok {
		t.Fatalf("Services: web-1 missing; got %v", svcs)
	}
	if s.Service != "web" || s.Port != 8080 || s.Address != "10.0.0.1" {
		t.Errorf("service = %+v, want web at 10.0.0.1:8080", s)
	}
	if !reflect.DeepEqual(s.Tags, reg.Tags) {
		t.Errorf("Tags = %v, want %v", s.Tags, reg.Tags)
	}
	if !reflect.DeepEqual(s.Meta, reg.Meta) {
		t.Errorf("Meta = %v, want %v", s.Meta, reg.Meta)
	}
	if s.Weights != (api.AgentWeights{Passing: 10, Warning: 2}) {
		t.Errorf("Weights = %+v, want {10 2}", s.Weights)
	}
	if !s.EnableTagOverride {
		t.Errorf("EnableTagOverride = false, want true")
	}

	one, _, err := agent.Service("web-1", nil)
	must(t, err)
	if one.ID != "web-1" || one.Service != "web" || one.Datacenter != "dc1" {
		t.Errorf("Service(web-1) = %+v", one)
	}
	if _, _, err := agent.Service("nope", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Service(nope): err = %v, want a 404", err)
	}

	// Embedded checks: the explicit ID is kept, the other gets
	// service:<id>:<n>; both are bound to the service.
	checks, err := agent.Checks()
	must(t, err)
	for id, wantStatus := range map[string]string{"web-ttl": api.HealthCritical, "service:web-1:2": api.HealthPassing} {
		c, ok := checks[id]
		if !ok {
			t.Fatalf("Checks: %s missing; got %v", id, keys(checks))
		}
		if c.ServiceID != "web-1" || c.ServiceName != "web" || c.Status != wantStatus {
			t.Errorf("check %s = {ServiceID %q ServiceName %q Status %q}, want web-1/web/%s", id, c.ServiceID, c.ServiceName, c.Status, wantStatus)
		}
	}

	// The catalog has it too, synced before the register call returned.
	cs, _, err := a.c.Catalog().Service("web", "", nil)
	must(t, err)
	if len(cs) != 1 || cs[0].ServiceID != "web-1" || cs[0].ServiceWeights.Passing != 10 || !cs[0].ServiceEnableTagOverride {
		t.Fatalf("catalog service web = %+v", cs)
	}

	must(t, agent.ServiceDeregister("web-1"))
	svcs, err = agent.Services()
	must(t, err)
	if _, ok := svcs["web-1"]; ok {
		t.Errorf("web-1 still registered after deregister")
	}
	checks, err = agent.Checks()
	must(t, err)
	if len(checks) != 0 {
		t.Errorf("checks left after deregister: %v", keys(checks))
	}
	cs, _, err = a.c.Catalog().Service("web", "", nil)
	must(t, err)
	if len(cs) != 0 {
		t.Errorf("catalog still has web after deregister: %+v", cs)
	}
	hc, _, err := a.c.Health().Checks("web", nil)
	must(t, err)
	if len(hc) != 0 {
		t.Errorf("health still has web checks after deregister: %+v", hc)
	}

	// Deregistering what is not there is a 404.
	if err := agent.ServiceDeregister("web-1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("second deregister: err = %v, want a 404", err)
	}
}

func TestAgentServiceRegisterLowercaseJSON(t *testing.T) {
	t.Parallel()
	a := start(t)
	// Consul accepts snake_case and lowercase keys in agent registrations;
	// meta keys are user data and keep their case.
	a.do(t, "PUT", "/v1/agent/service/register", `{
		"name": "db", "id": "db-1", "port": 5432, "tags": ["a"],
		"meta": {"Some_Key": "v"}, "enable_tag_override": true,
		"weights": {"passing": 3, "warning": 1},
		"check": {"check_id": "db-ttl", "ttl": "10s"}
	}`).expect(t, "register", http.StatusOK)
	s, _, err := a.c.Agent().Service("db-1", nil)
	must(t, err)
	if s.Port != 5432 || !s.EnableTagOverride || s.Weights.Passing != 3 || s.Meta["Some_Key"] != "v" {
		t.Errorf("service = %+v", s)
	}
	checks, err := a.c.Agent().Checks()
	must(t, err)
	if c := checks["db-ttl"]; c == nil || c.ServiceID != "db-1" {
		t.Errorf("check db-ttl = %+v", c)
	}
}

func TestAgentServiceReplaceExistingChecks(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	reg := &api.AgentServiceRegistration{
		ID: "api", Name: "api",
		Checks: api.AgentServiceChecks{
			{CheckID: "a", TTL: "30s"},
			{CheckID: "b", TTL: "30s"},
		},
	}
	must(t, agent.ServiceRegister(reg))

	// Without the flag, a check missing from the new definition stays.
	reg.Checks = api.AgentServiceChecks{{CheckID: "a", TTL: "30s"}}
	must(t, agent.ServiceRegister(reg))
	assertServiceChecks(t, a, "api", "a", "b")

	// With it, the service's checks are exactly the new ones, locally and
	// in the catalog. (Fixed bug: the replaced checks stayed in the catalog
	// until the next anti-entropy sync.)
	must(t, agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}))
	assertServiceChecks(t, a, "api", "a")
}

// assertServiceChecks checks that the agent and the catalog both list
// exactly the given checks for a service.
func assertServiceChecks(t *testing.T, a *testAgent, service string, want ...string) {
	t.Helper()
	local, err := a.c.Agent().Checks()
	must(t, err)
	var got []string
	for id, c := range local {
		if c.ServiceID == service {
			got = append(got, id)
		}
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("agent checks of %s = %v, want %v", service, got, want)
	}
	cat, _, err := a.c.Health().Checks(service, nil)
	must(t, err)
	got = nil
	for _, c := range cat {
		got = append(got, c.CheckID)
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("catalog checks of %s = %v, want %v", service, got, want)
	}
}

func TestAgentCheckRegisterDeregister(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	// The client sends the check's ID as "ID". (Fixed bug: it was ignored
	// and the check registered under its name.)
	must(t, agent.CheckRegister(&api.AgentCheckRegistration{
		ID: "disk", Name: "Disk", Notes: "free space",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "1m"},
	}))
	checks, err := agent.Checks()
	must(t, err)
	c := checks["disk"]
	if c == nil || c.Name != "Disk" || c.Notes != "free space" || c.Status != api.HealthCritical || c.Type != "ttl" {
		t.Fatalf("check disk = %+v", c)
	}
	nc, _, err := a.c.Health().Node(nodeName, nil)
	must(t, err)
	if !hasCheck(nc, "disk") || !hasCheck(nc, "serfHealth") {
		t.Errorf("health/node checks = %v, want disk and serfHealth", checkIDs(nc))
	}

	// A check registered for a service shows in that service's health.
	must(t, agent.ServiceRegister(&api.AgentServiceRegistration{ID: "svc", Name: "svc"}))
	must(t, agent.CheckRegister(&api.AgentCheckRegistration{
		ID: "svc-extra", ServiceID: "svc", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m", Status: api.HealthWarning},
	}))
	entries, _, err := a.c.Health().Service("svc", "", false, nil)
	must(t, err)
	if len(entries) != 1 || !hasCheck(entries[0].Checks, "svc-extra") || !hasCheck(entries[0].Checks, "disk") {
		t.Errorf("health/service/svc = %+v, want svc-extra and the node's disk check", entries)
	}

	// A check for a service that does not exist is refused.
	err = agent.CheckRegister(&api.AgentCheckRegistration{
		ID: "orphan", ServiceID: "missing", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m"},
	})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("check for a missing service: err = %v, want a 400", err)
	}
	// So is one with neither a TTL nor a runnable definition.
	err = agent.CheckRegister(&api.AgentCheckRegistration{ID: "empty"})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("empty check: err = %v, want a 400", err)
	}

	must(t, agent.CheckDeregister("disk"))
	nc, _, err = a.c.Health().Node(nodeName, nil)
	must(t, err)
	if hasCheck(nc, "disk") {
		t.Errorf("disk still in the catalog after deregister")
	}
	if err := agent.CheckDeregister("disk"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("second deregister: err = %v, want a 404", err)
	}
}

func TestAgentTTLCheck(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	must(t, agent.ServiceRegister(&api.AgentServiceRegistration{
		Name: "ttl-svc", Check: &api.AgentServiceCheck{CheckID: "ttl", TTL: "1m"},
	}))

	steps := []struct {
		name       string
		do         func() error
		status     string
		output     string
		healthCode int
	}{
		{"pass", func() error { return agent.PassTTL("ttl", "all good") }, api.HealthPassing, "all good", 200},
		{"warn", func() error { return agent.WarnTTL("ttl", "slow") }, api.HealthWarning, "slow", 429},
		{"fail", func() error { return agent.FailTTL("ttl", "down") }, api.HealthCritical, "down", 503},
		{"update", func() error { return agent.UpdateTTL("ttl", "back", api.HealthPassing) }, api.HealthPassing, "back", 200},
		{"update-warn", func() error { return agent.UpdateTTL("ttl", "meh", "warn") }, api.HealthWarning, "meh", 429},
	}
	for _, st := range steps {
		must(t, st.do())
		// The write is in the catalog when the call returns.
		entries, _, err := a.c.Health().Service("ttl-svc", "", false, nil)
		must(t, err)
		if len(entries) != 1 {
			t.Fatalf("%s: health/service entries = %d, want 1", st.name, len(entries))
		}
		var got *api.HealthCheck
		for _, c := range entries[0].Checks {
			if c.CheckID == "ttl" {
				got = c
			}
		}
		if got == nil || got.Status != st.status || got.Output != st.output {
			t.Errorf("%s: catalog check = %+v, want %s %q", st.name, got, st.status, st.output)
		}
		r := a.do(t, "GET", "/v1/agent/health/service/name/ttl-svc", nil)
		if r.code != st.healthCode {
			t.Errorf("%s: agent/health/service/name: status %d, want %d", st.name, r.code, st.healthCode)
		}
	}

	// Only TTL checks take updates; unknown checks are a 404.
	if err := agent.PassTTL("nope", ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("PassTTL(nope): err = %v, want a 404", err)
	}
	a.do(t, "PUT", "/v1/agent/check/update/ttl", `{"Status":"bogus"}`).expect(t, "update with bad status", 400)
}

func TestAgentHTTPCheck(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	a := start(t)
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "http-svc",
		Check: &api.AgentServiceCheck{
			CheckID: "http", HTTP: srv.URL + "/health", Interval: "50ms", Timeout: "5s",
		},
	}))
	waitStatus := func(want string) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			checks, _, err := a.c.Health().Checks("http-svc", nil)
			if err != nil {
				return err
			}
			if len(checks) != 1 || checks[0].Status != want {
				return errorf("checks = %+v, want one %s", checks, want)
			}
			if want == api.HealthCritical && !strings.Contains(checks[0].Output, "500") {
				return errorf("output %q does not mention the 500", checks[0].Output)
			}
			return nil
		})
	}
	waitStatus(api.HealthPassing)
	fail.Store(true)
	waitStatus(api.HealthCritical)
	st, _, err := a.c.Agent().AgentHealthServiceByName("http-svc")
	must(t, err)
	if st != api.HealthCritical {
		t.Errorf("AgentHealthServiceByName = %s, want critical", st)
	}
}

func TestAgentHealthService(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	for _, id := range []string{"pay-1", "pay-2"} {
		must(t, agent.ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: "pay", Check: &api.AgentServiceCheck{CheckID: id + "-ttl", TTL: "1m", Status: api.HealthPassing},
		}))
	}
	type want struct {
		byID1, byID2, byName int
	}
	for _, tc := range []struct {
		name   string
		s1, s2 string
		want   want
	}{
		{"all passing", api.HealthPassing, api.HealthPassing, want{200, 200, 200}},
		{"one warning", api.HealthWarning, api.HealthPassing, want{429, 200, 429}},
		{"one critical", api.HealthWarning, api.HealthCritical, want{429, 503, 503}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, agent.UpdateTTL("pay-1-ttl", "", tc.s1))
			must(t, agent.UpdateTTL("pay-2-ttl", "", tc.s2))
			for path, code := range map[string]int{
				"/v1/agent/health/service/id/pay-1": tc.want.byID1,
				"/v1/agent/health/service/id/pay-2": tc.want.byID2,
				"/v1/agent/health/service/name/pay": tc.want.byName,
			} {
				r := a.do(t, "GET", path, nil)
				if r.code != code {
					t.Errorf("GET %s: status %d, want %d (body %s)", path, r.code, code, r.body)
				}
			}
			st, info, err := agent.AgentHealthServiceByID("pay-1")
			must(t, err)
			if st != tc.s1 || info == nil || info.Service.ID != "pay-1" || info.AggregatedStatus != tc.s1 {
				t.Errorf("AgentHealthServiceByID(pay-1) = %s %+v, want %s", st, info, tc.s1)
			}
			st, infos, err := agent.AgentHealthServiceByName("pay")
			must(t, err)
			worst := map[int]string{200: api.HealthPassing, 429: api.HealthWarning, 503: api.HealthCritical}[tc.want.byName]
			if st != worst || len(infos) != 2 {
				t.Errorf("AgentHealthServiceByName(pay) = %s with %d entries, want %s with 2", st, len(infos), worst)
			}
		})
	}
	// ?format=text answers with the bare status.
	r := a.do(t, "GET", "/v1/agent/health/service/id/pay-1?format=text", nil).expect(t, "format=text", 429)
	if r.body != api.HealthWarning {
		t.Errorf("format=text body = %q, want %q", r.body, api.HealthWarning)
	}
	// Unknown services: 404, which the client reports as critical.
	a.do(t, "GET", "/v1/agent/health/service/id/nope", nil).expect(t, "unknown id", 404)
	a.do(t, "GET", "/v1/agent/health/service/name/nope", nil).expect(t, "unknown name", 404)
	st, info, err := agent.AgentHealthServiceByID("nope")
	must(t, err)
	if st != api.HealthCritical || info != nil {
		t.Errorf("AgentHealthServiceByID(nope) = %s %+v, want critical nil", st, info)
	}
}

func TestAgentMaintenance(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	must(t, agent.ServiceRegister(&api.AgentServiceRegistration{
		ID: "m-1", Name: "m", Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}))
	passing := func() int {
		e, _, err := a.c.Health().Service("m", "", true, nil)
		must(t, err)
		return len(e)
	}
	if n := passing(); n != 1 {
		t.Fatalf("passing instances before maintenance = %d, want 1", n)
	}

	// Service maintenance.
	must(t, agent.EnableServiceMaintenance("m-1", "deploying"))
	checks, err := agent.Checks()
	must(t, err)
	mc := checks["_service_maintenance:m-1"]
	if mc == nil || mc.Status != api.HealthCritical || mc.Notes != "deploying" || mc.ServiceID != "m-1" {
		t.Fatalf("service maintenance check = %+v", mc)
	}
	if n := passing(); n != 0 {
		t.Errorf("passing instances in service maintenance = %d, want 0", n)
	}
	// The client maps the 503 to critical; the body says maintenance.
	r := a.do(t, "GET", "/v1/agent/health/service/id/m-1", nil).expect(t, "health in maintenance", 503)
	var info api.AgentServiceChecksInfo
	must(t, json.Unmarshal([]byte(r.body), &info))
	if info.AggregatedStatus != api.HealthMaint {
		t.Errorf("AggregatedStatus = %q, want maintenance", info.AggregatedStatus)
	}
	must(t, agent.DisableServiceMaintenance("m-1"))
	if n := passing(); n != 1 {
		t.Errorf("passing instances after service maintenance = %d, want 1", n)
	}
	if err := agent.EnableServiceMaintenance("nope", ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("maintenance of unknown service: err = %v, want a 404", err)
	}
	a.do(t, "PUT", "/v1/agent/service/maintenance/m-1", nil).expect(t, "maintenance without enable", 400)

	// Node maintenance takes every service on the node out.
	must(t, agent.EnableNodeMaintenance(""))
	nc, _, err := a.c.Health().Node(nodeName, nil)
	must(t, err)
	var found bool
	for _, c := range nc {
		if c.CheckID == "_node_maintenance" {
			found = c.Status == api.HealthCritical && strings.Contains(c.Notes, "Maintenance mode is enabled")
		}
	}
	if !found {
		t.Errorf("node maintenance check missing or wrong: %v", checkIDs(nc))
	}
	if n := passing(); n != 0 {
		t.Errorf("passing instances in node maintenance = %d, want 0", n)
	}
	must(t, agent.DisableNodeMaintenance())
	if n := passing(); n != 1 {
		t.Errorf("passing instances after node maintenance = %d, want 1", n)
	}
}

func TestAgentSelfMembersVersion(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	self, err := agent.Self()
	must(t, err)
	if self["Config"]["NodeName"] != nodeName || self["Config"]["Datacenter"] != "dc1" {
		t.Errorf("Self Config = %v", self["Config"])
	}
	name, err := agent.NodeName()
	must(t, err)
	if name != nodeName {
		t.Errorf("NodeName = %q, want %q", name, nodeName)
	}
	members, err := agent.Members(false)
	must(t, err)
	// Status 1 is serf's StatusAlive.
	if len(members) != 1 || members[0].Name != nodeName || members[0].Status != 1 {
		t.Errorf("Members = %+v", members)
	}
	v, err := agent.Version()
	must(t, err)
	if s, _ := v["HumanVersion"].(string); s == "" {
		t.Errorf("Version = %v, want a HumanVersion", v)
	}
}

func TestAgentMetrics(t *testing.T) {
	t.Parallel()
	a := start(t)
	m, err := a.c.Agent().Metrics()
	must(t, err)
	if m.Timestamp == "" || len(m.Gauges) == 0 {
		t.Errorf("Metrics = %+v, want a timestamp and gauges", m)
	}
	r := a.do(t, "GET", "/v1/agent/metrics?format=prometheus", nil).expect(t, "prometheus metrics", 200)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	if !strings.Contains(r.body, "# TYPE ") || !strings.Contains(r.body, "trellis_http_requests_total") {
		t.Errorf("prometheus body lacks TYPE lines or request counters:\n%.500s", r.body)
	}
}

func TestAgentReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "services.json")
	writeConfig := func(body string) {
		t.Helper()
		must(t, os.WriteFile(file, []byte(body), 0o600))
	}
	writeConfig(`{"services": [{"name": "from-config", "port": 1, "check": {"id": "cfg-ttl", "ttl": "1m"}}]}`)
	a := start(t, agenttest.Options{Args: []string{"-config-dir", dir}})
	must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "from-api"}))
	assertLocal := func(want ...string) {
		t.Helper()
		svcs, err := a.c.Agent().Services()
		must(t, err)
		if got := keys(svcs); !reflect.DeepEqual(got, want) {
			t.Errorf("agent services = %v, want %v", got, want)
		}
		cat, _, err := a.c.Catalog().NodeServiceList(nodeName, nil)
		must(t, err)
		var got []string
		for _, s := range cat.Services {
			if s.ID != "consul" { // the server's own service, not a local one
				got = append(got, s.ID)
			}
		}
		sort.Strings(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("catalog services of the node = %v, want %v", got, want)
		}
	}
	assertLocal("from-api", "from-config")

	// The config now defines another service: reload swaps them, and
	// keeps what was registered over the API.
	writeConfig(`{"services": [{"name": "from-config-2", "port": 2}]}`)
	a.do(t, "PUT", "/v1/agent/reload", nil).expect(t, "reload", 200)
	assertLocal("from-api", "from-config-2")
	checks, err := a.c.Agent().Checks()
	must(t, err)
	if _, ok := checks["cfg-ttl"]; ok {
		t.Errorf("check of the removed config service survived the reload")
	}

	// A broken config is refused and changes nothing.
	writeConfig(`{"services": [`)
	if err := a.c.Agent().Reload(); err == nil {
		t.Errorf("reload of a broken config succeeded")
	}
	assertLocal("from-api", "from-config-2")
	a.do(t, "GET", "/v1/agent/reload", nil).expect(t, "GET reload", 405)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func hasCheck(checks api.HealthChecks, id string) bool {
	for _, c := range checks {
		if c.CheckID == id {
			return true
		}
	}
	return false
}

func checkIDs(checks api.HealthChecks) []string {
	var out []string
	for _, c := range checks {
		out = append(out, c.CheckID)
	}
	return out
}

func TestAgentFilters(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	for _, reg := range []*api.AgentServiceRegistration{
		{ID: "f-1", Name: "f", Tags: []string{"blue"}, Meta: map[string]string{"env": "prod"},
			Check: &api.AgentServiceCheck{CheckID: "f-1-ttl", TTL: "1m", Status: api.HealthPassing}},
		{ID: "f-2", Name: "f", Tags: []string{"green"}, Meta: map[string]string{"env": "dev"},
			Check: &api.AgentServiceCheck{CheckID: "f-2-ttl", TTL: "1m"}},
		{ID: "g-1", Name: "g"},
	} {
		must(t, agent.ServiceRegister(reg))
	}
	svcs, err := agent.ServicesWithFilter(`Meta.env == "prod" or Service == "g"`)
	must(t, err)
	if got := keys(svcs); !reflect.DeepEqual(got, []string{"f-1", "g-1"}) {
		t.Errorf("ServicesWithFilter = %v, want [f-1 g-1]", got)
	}
	checks, err := agent.ChecksWithFilter(`Status == "critical"`)
	must(t, err)
	if got := keys(checks); !reflect.DeepEqual(got, []string{"f-2-ttl"}) {
		t.Errorf("ChecksWithFilter = %v, want [f-2-ttl]", got)
	}
	if _, err := agent.ServicesWithFilter(`Meta.env ==`); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad filter: err = %v, want a 400", err)
	}
	nodes, _, err := a.c.Catalog().Nodes(&api.QueryOptions{Filter: `Node == "` + nodeName + `"`})
	must(t, err)
	if len(nodes) != 1 {
		t.Errorf("Nodes(filter) = %d nodes, want 1", len(nodes))
	}
	nodes, _, err = a.c.Catalog().Nodes(&api.QueryOptions{Filter: `Node == "nope"`})
	must(t, err)
	if len(nodes) != 0 {
		t.Errorf("Nodes(filter nope) = %d nodes, want 0", len(nodes))
	}
	list, _, err := a.c.Catalog().NodeServiceList(nodeName, &api.QueryOptions{Filter: `"green" in Tags`})
	must(t, err)
	if len(list.Services) != 1 || list.Services[0].ID != "f-2" {
		t.Errorf("NodeServiceList(filter) = %+v", list.Services)
	}
}

func TestAgentDeregisterCriticalService(t *testing.T) {
	t.Parallel()
	a := start(t, agenttest.Options{Agent: agent.Options{ReapInterval: 20 * time.Millisecond, MinDeregisterAfter: time.Millisecond}})
	ag := a.c.Agent()
	must(t, ag.ServiceRegister(&api.AgentServiceRegistration{
		ID: "doomed", Name: "doomed",
		Check: &api.AgentServiceCheck{CheckID: "doomed-ttl", TTL: "1m", Status: api.HealthPassing, DeregisterCriticalServiceAfter: "50ms"},
	}))
	must(t, ag.ServiceRegister(&api.AgentServiceRegistration{
		ID: "kept", Name: "kept",
		Check: &api.AgentServiceCheck{CheckID: "kept-ttl", TTL: "1m", DeregisterCriticalServiceAfter: "1h"},
	}))
	must(t, ag.FailTTL("doomed-ttl", "dead"))
	waitFor(t, 10*time.Second, func() error {
		svcs, err := ag.Services()
		if err != nil {
			return err
		}
		if _, ok := svcs["doomed"]; ok {
			return errorf("doomed still registered")
		}
		if _, ok := svcs["kept"]; !ok {
			return errorf("kept was removed too")
		}
		return nil
	})
	cs, _, err := a.c.Catalog().Service("doomed", "", nil)
	must(t, err)
	if len(cs) != 0 {
		t.Errorf("doomed still in the catalog")
	}
}

// TestAgentTTLReadYourWrites guards a fixed bug: a TTL update queued by the
// check runner could be applied after a later update made over the API, so
// the catalog went back to the older status.
func TestAgentTTLReadYourWrites(t *testing.T) {
	t.Parallel()
	a := start(t)
	ag := a.c.Agent()
	must(t, ag.CheckRegister(&api.AgentCheckRegistration{ID: "rw", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m"}}))
	statuses := []string{api.HealthPassing, api.HealthWarning, api.HealthCritical}
	for i := range 200 {
		st, out := statuses[i%3], fmt.Sprint(i)
		must(t, ag.UpdateTTL("rw", out, st))
		checks, _, err := a.c.Health().Node(nodeName, nil)
		must(t, err)
		for _, c := range checks {
			if c.CheckID == "rw" && (c.Status != st || c.Output != out) {
				t.Fatalf("update %d: catalog has %s %q, want %s %q", i, c.Status, c.Output, st, out)
			}
		}
	}
}
