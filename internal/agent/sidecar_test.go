package agent_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// eventually polls cond until it holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func webWithSidecar(sc *structs.ServiceDefinition) *structs.ServiceDefinition {
	return &structs.ServiceDefinition{Name: "web", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"team": "a"},
		Connect: &structs.ServiceConnect{SidecarService: sc}}
}

// connectIDs returns the IDs of the catalog's connect-capable instances
// for name.
func connectIDs(t *testing.T, a *agenttest.Agent, name string) []string {
	t.Helper()
	r := a.Store().Read()
	defer r.Abort()
	_, rows, err := r.ConnectServiceNodes(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sn := range rows {
		ids = append(ids, sn.ServiceID)
	}
	return ids
}

func TestSidecarServiceDefaults(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	err := a.AddService(webWithSidecar(&structs.ServiceDefinition{Proxy: &structs.ConnectProxyConfig{
		Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}},
	}}), false)
	if err != nil {
		t.Fatal(err)
	}
	svcs := a.Services()
	web, sc := svcs["web"], svcs["web-sidecar-proxy"]
	if web == nil || sc == nil {
		t.Fatalf("services = %v, want web and web-sidecar-proxy", svcs)
	}
	if web.Connect != nil {
		t.Errorf("parent stored with Connect %+v, want the sidecar_service body dropped", web.Connect)
	}
	if sc.Kind != structs.ServiceKindConnectProxy || sc.Service != "web-sidecar-proxy" || sc.Port != 21000 {
		t.Errorf("sidecar kind %q name %q port %d, want connect-proxy web-sidecar-proxy 21000", sc.Kind, sc.Service, sc.Port)
	}
	if !reflect.DeepEqual(sc.Tags, []string{"v1"}) || sc.Meta["team"] != "a" {
		t.Errorf("sidecar tags %v meta %v, want the parent's", sc.Tags, sc.Meta)
	}
	wantProxy := &structs.ConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web",
		LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080,
		Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}
	if !reflect.DeepEqual(sc.Proxy, wantProxy) {
		t.Errorf("sidecar proxy = %+v\nwant %+v", sc.Proxy, wantProxy)
	}
	checks := a.Checks()
	tcp, alias := checks["service:web-sidecar-proxy:1"], checks["service:web-sidecar-proxy:2"]
	if tcp == nil || tcp.Name != "Connect Sidecar Listening" || tcp.Definition.TCP != "127.0.0.1:21000" || tcp.Interval != "10s" {
		t.Errorf("listening check = %+v", tcp)
	}
	if alias == nil || alias.Name != "Connect Sidecar Aliasing web" || alias.Type != "alias" {
		t.Errorf("aliasing check = %+v", alias)
	}
	if got := connectIDs(t, a, "web"); !reflect.DeepEqual(got, []string{"web-sidecar-proxy"}) {
		t.Errorf("catalog connect web = %v", got)
	}

	// Deregistering the parent removes the sidecar and its checks.
	if err := a.RemoveService("web"); err != nil {
		t.Fatal(err)
	}
	if s := a.Services()["web-sidecar-proxy"]; s != nil {
		t.Error("sidecar still registered after its parent was removed")
	}
	for id := range a.Checks() {
		if strings.Contains(id, "sidecar") {
			t.Errorf("check %s left behind", id)
		}
	}
	if got := connectIDs(t, a, "web"); len(got) != 0 {
		t.Errorf("catalog connect web after deregistration = %v", got)
	}
}

func TestSidecarPorts(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-hcl", "ports { sidecar_min_port = 21000 sidecar_max_port = 21002 }"}})
	add := func(name string, port int) error {
		return a.AddService(&structs.ServiceDefinition{Name: name, Port: 8000,
			Connect: &structs.ServiceConnect{SidecarService: &structs.ServiceDefinition{Port: port}}}, false)
	}
	port := func(name string) int {
		if s := a.Services()[name+"-sidecar-proxy"]; s != nil {
			return s.Port
		}
		return -1
	}
	for _, n := range []string{"a", "b"} {
		if err := add(n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if port("a") != 21000 || port("b") != 21001 {
		t.Errorf("ports a=%d b=%d, want 21000 and 21001", port("a"), port("b"))
	}
	// Re-registering keeps the port, even with a lower one now free.
	if err := a.RemoveService("a"); err != nil {
		t.Fatal(err)
	}
	if err := add("c", 0); err != nil || port("c") != 21000 {
		t.Fatalf("c: %v, port %d, want the freed 21000", err, port("c"))
	}
	if err := add("b", 0); err != nil || port("b") != 21001 {
		t.Errorf("re-registered b: %v, port %d, want it kept at 21001", err, port("b"))
	}
	// An explicit port is used as given.
	if err := add("d", 30000); err != nil || port("d") != 30000 {
		t.Errorf("d: %v, port %d, want 30000", err, port("d"))
	}
	if err := add("e", 0); err != nil || port("e") != 21002 {
		t.Fatalf("e: %v, port %d, want 21002", err, port("e"))
	}
	// The range is used up: the registration fails whole.
	err := add("f", 0)
	if !structs.IsBadRequest(err) || !strings.Contains(err.Error(), "21000-21002") {
		t.Errorf("exhausted range: err = %v, want a 400 naming the range", err)
	}
	if s := a.Services(); s["f"] != nil || s["f-sidecar-proxy"] != nil {
		t.Error("a failed sidecar registration left services behind")
	}
}

func TestSidecarOverrides(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	err := a.AddService(webWithSidecar(&structs.ServiceDefinition{
		Port: 25000, Tags: []string{"proxy"}, Meta: map[string]string{"m": "1"},
		Checks: []*structs.CheckType{{CheckID: "own", TTL: structs.Duration(time.Minute)}},
		Proxy: &structs.ConnectProxyConfig{LocalServicePort: 8081, Config: map[string]any{"protocol": "http"},
			Expose: structs.ExposeConfig{Paths: []structs.ExposePath{{Path: "/metrics", LocalPathPort: 9102, ListenerPort: 21500}}}},
	}), false)
	if err != nil {
		t.Fatal(err)
	}
	sc := a.Services()["web-sidecar-proxy"]
	if sc == nil || sc.Port != 25000 || !reflect.DeepEqual(sc.Tags, []string{"proxy"}) || !reflect.DeepEqual(sc.Meta, map[string]string{"m": "1"}) {
		t.Fatalf("sidecar = %+v", sc)
	}
	if sc.Proxy.LocalServicePort != 8081 || sc.Proxy.Config["protocol"] != "http" || len(sc.Proxy.Expose.Paths) != 1 ||
		sc.Proxy.DestinationServiceName != "web" {
		t.Errorf("proxy = %+v", sc.Proxy)
	}
	checks := a.Checks()
	if checks["own"] == nil || checks["service:web-sidecar-proxy:1"] != nil || checks["service:web-sidecar-proxy:2"] != nil {
		t.Errorf("with checks given, want only them: %v", checks)
	}
}

// The default alias check follows the parent's health, as it changes.
func TestSidecarAliasFollowsParent(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	def := webWithSidecar(&structs.ServiceDefinition{Port: 25000})
	def.Check = &structs.CheckType{CheckID: "web-ttl", TTL: structs.Duration(time.Hour)}
	if err := a.AddService(def, false); err != nil {
		t.Fatal(err)
	}
	aliasIs := func(status string) func() bool {
		return func() bool {
			c := a.Checks()["service:web-sidecar-proxy:2"]
			return c != nil && c.Status == status
		}
	}
	eventually(t, "alias critical like the parent's new TTL check", aliasIs(structs.HealthCritical))
	for _, st := range []string{structs.HealthPassing, structs.HealthWarning, structs.HealthCritical, structs.HealthPassing} {
		if err := a.UpdateTTLCheck("web-ttl", st, ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, "alias "+st, aliasIs(st))
	}
	// Maintenance on the parent is critical for its sidecar too.
	if err := a.ServiceMaintenance("web", true, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alias critical in maintenance", aliasIs(structs.HealthCritical))
	// And the catalog has the alias's status.
	eventually(t, "catalog alias critical", func() bool {
		r := a.Store().Read()
		defer r.Abort()
		c, _ := r.Check("test-node", "service:web-sidecar-proxy:2")
		return c != nil && c.Status == structs.HealthCritical
	})
}

func TestConnectValidation(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	proxy := func(p *structs.ConnectProxyConfig) *structs.ServiceDefinition {
		return &structs.ServiceDefinition{Kind: structs.ServiceKindConnectProxy, Name: "p", Port: 21000, Proxy: p}
	}
	for _, tc := range []struct {
		name string
		def  *structs.ServiceDefinition
		want string
	}{
		{"no destination", proxy(&structs.ConnectProxyConfig{}), "Proxy.DestinationServiceName"},
		{"no proxy block", proxy(nil), "Proxy.DestinationServiceName"},
		{"no port", &structs.ServiceDefinition{Kind: structs.ServiceKindConnectProxy, Name: "p",
			Proxy: &structs.ConnectProxyConfig{DestinationServiceName: "web"}}, "Port or SocketPath"},
		{"native proxy", &structs.ServiceDefinition{Kind: structs.ServiceKindConnectProxy, Name: "p", Port: 1,
			Proxy:   &structs.ConnectProxyConfig{DestinationServiceName: "web"},
			Connect: &structs.ServiceConnect{Native: true}}, "Connect Native"},
		{"upstream without name", proxy(&structs.ConnectProxyConfig{DestinationServiceName: "web",
			Upstreams: []structs.Upstream{{LocalBindPort: 1}}}), "Proxy.Upstreams[0].DestinationName"},
		{"upstream without port", proxy(&structs.ConnectProxyConfig{DestinationServiceName: "web",
			Upstreams: []structs.Upstream{{DestinationName: "db"}}}), "Proxy.Upstreams[0].LocalBindPort"},
		{"duplicate upstream bind", proxy(&structs.ConnectProxyConfig{DestinationServiceName: "web",
			Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 1}, {DestinationName: "x", LocalBindPort: 1}}}), "duplicates"},
		{"expose path", proxy(&structs.ConnectProxyConfig{DestinationServiceName: "web",
			Expose: structs.ExposeConfig{Paths: []structs.ExposePath{{Path: "metrics", LocalPathPort: 1, ListenerPort: 2}}}}), "Proxy.Expose.Paths[0].Path"},
		{"nested sidecar", webWithSidecar(&structs.ServiceDefinition{Connect: &structs.ServiceConnect{
			SidecarService: &structs.ServiceDefinition{}}}), "nested SidecarService"},
		{"bad sidecar upstream", webWithSidecar(&structs.ServiceDefinition{Proxy: &structs.ConnectProxyConfig{
			Upstreams: []structs.Upstream{{DestinationName: "db"}}}}), "Connect.SidecarService: Proxy.Upstreams[0].LocalBindPort"},
		{"bad sidecar check", webWithSidecar(&structs.ServiceDefinition{Checks: []*structs.CheckType{{Name: "x"}}}), "Check"},
		{"alias of another node", &structs.ServiceDefinition{Name: "w", Check: &structs.CheckType{AliasNode: "elsewhere", AliasService: "x"}}, "AliasNode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.AddService(tc.def, false)
			if !structs.IsBadRequest(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a bad request containing %q", err, tc.want)
			}
			if n := len(a.Services()); n != 0 {
				t.Errorf("%d services registered after a failed registration: %v", n, a.Services())
			}
			if n := len(a.Checks()); n != 0 {
				t.Errorf("%d checks registered after a failed registration", n)
			}
		})
	}
}

func TestSidecarFromConfigFile(t *testing.T) {
	hcl := `service {
  name = "web"
  port = 8080
  connect {
    sidecar_service {
      proxy {
        upstreams = [{ destination_name = "db", local_bind_port = 9191 }]
        config { envoy_prometheus_bind_addr = "0.0.0.0:9102" }
      }
    }
  }
}`
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-hcl", hcl}})
	sc := a.Services()["web-sidecar-proxy"]
	if sc == nil {
		t.Fatalf("no sidecar registered from the config file: %v", a.Services())
	}
	want := []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}}
	if sc.Port != 21000 || !reflect.DeepEqual(sc.Proxy.Upstreams, want) || sc.Proxy.DestinationServiceName != "web" ||
		sc.Proxy.Config["envoy_prometheus_bind_addr"] != "0.0.0.0:9102" {
		t.Errorf("sidecar = %+v, proxy %+v", sc, sc.Proxy)
	}
	// A reload keeps the sidecar and its port.
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if sc := a.Services()["web-sidecar-proxy"]; sc == nil || sc.Port != 21000 {
		t.Errorf("after reload: %+v", sc)
	}
}

// A sidecar never gets a port another local service already uses, proxy
// or not.
func TestSidecarPortSkipsOtherServices(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	if err := a.AddService(&structs.ServiceDefinition{Name: "plain", Port: 21000}, false); err != nil {
		t.Fatal(err)
	}
	if err := a.AddService(webWithSidecar(&structs.ServiceDefinition{}), false); err != nil {
		t.Fatal(err)
	}
	if p := a.Services()["web-sidecar-proxy"].Port; p != 21001 {
		t.Fatalf("sidecar port = %d, want 21001 (21000 is plain's)", p)
	}
}

// A proxy registered with empty lists and maps (as HCL's `upstreams = []`
// gives) is in step with the catalog after one sync: the catalog's copy
// comes back without them, which must not count as a difference, or every
// anti-entropy pass would write it again.
func TestSidecarEmptyProxyFieldsSettle(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	var def structs.ServiceDefinition
	body := `{"Name":"p","Kind":"connect-proxy","Port":21500,"Proxy":{"DestinationServiceName":"web","Config":{},"Upstreams":[],"Expose":{"Paths":[]}}}`
	if err := structs.DecodeJSON(strings.NewReader(body), &def); err != nil {
		t.Fatal(err)
	}
	if err := a.AddService(&def, false); err != nil {
		t.Fatal(err)
	}
	if err := a.SyncFull(); err != nil {
		t.Fatal(err)
	}
	// The raft log's last index counts every write, even one that
	// changes nothing in the store.
	lastLog := func() string { return a.Self()["Stats"].(map[string]any)["raft"].(map[string]string)["last_log_index"] }
	// Other writes (the leader's member reconciliation) may land between
	// two reads; a sync that rewrites the proxy writes every time.
	var before, after string
	for range 5 {
		before = lastLog()
		if err := a.SyncFull(); err != nil {
			t.Fatal(err)
		}
		if after = lastLog(); after == before && before != "" {
			return
		}
	}
	t.Fatalf("every sync with nothing changed wrote to raft: last log index %q -> %q", before, after)
}
