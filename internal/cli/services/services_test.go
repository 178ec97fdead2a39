package services

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func agentServices(t *testing.T, c *api.Client) map[string]*api.AgentService {
	t.Helper()
	s, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRegisterHCLFile(t *testing.T) {
	a, c := clitest.Agent(t)
	r := clitest.Run(t, Run, "register", "-http-addr", a.HTTPAddr, "testdata/web.hcl")
	if r.Code != 0 || r.Stdout != "Registered service: web\n" || r.Stderr != "" {
		t.Fatalf("register: %+v", r)
	}
	s := agentServices(t, c)["web-1"]
	if s == nil {
		t.Fatalf("web-1 not registered: %v", agentServices(t, c))
	}
	if s.Service != "web" || s.Port != 8080 || s.Address != "127.0.0.2" || !reflect.DeepEqual(s.Tags, []string{"v1", "primary"}) ||
		!s.EnableTagOverride || s.Weights.Passing != 3 {
		t.Errorf("web-1 = %+v", s)
	}
	// Meta keys are user data: kept as written, underscores and case included.
	if want := map[string]string{"version": "1.2", "Team_Name": "edge"}; !reflect.DeepEqual(s.Meta, want) {
		t.Errorf("meta = %v, want %v", s.Meta, want)
	}
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if ch := checks["web-ttl"]; ch == nil || ch.ServiceID != "web-1" || ch.Name != "web alive" || ch.Status != "passing" {
		t.Errorf("check web-ttl = %+v", ch)
	}
	// The catalog sees it too.
	cs, _, err := c.Catalog().Service("web", "", nil)
	if err != nil || len(cs) != 1 || cs[0].ServicePort != 8080 {
		t.Errorf("catalog web = %v, %v", cs, err)
	}

	r = clitest.Run(t, Run, "deregister", "-http-addr", a.HTTPAddr, "testdata/web.hcl")
	if r.Code != 0 || r.Stdout != "Deregistered service: web-1\n" {
		t.Fatalf("deregister: %+v", r)
	}
	if _, ok := agentServices(t, c)["web-1"]; ok {
		t.Error("web-1 still registered")
	}
}

func TestRegisterJSONFile(t *testing.T) {
	a, c := clitest.Agent(t)
	r := clitest.Run(t, Run, "register", "-http-addr", a.HTTPAddr, "testdata/apis.json")
	if r.Code != 0 || r.Stdout != "Registered service: api\nRegistered service: worker\n" {
		t.Fatalf("register: %+v", r)
	}
	svcs := agentServices(t, c)
	api1, worker := svcs["api"], svcs["worker-a"]
	if api1 == nil || worker == nil {
		t.Fatalf("services = %v", svcs)
	}
	if api1.Port != 9000 || api1.TaggedAddresses["lan"].Address != "10.0.0.5" || api1.TaggedAddresses["lan"].Port != 9000 {
		t.Errorf("api = %+v", api1)
	}
	if worker.Service != "worker" || worker.Meta["queue"] != "jobs" {
		t.Errorf("worker = %+v", worker)
	}
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"api-ttl", "api-ttl-2"} {
		if ch := checks[id]; ch == nil || ch.ServiceID != "api" {
			t.Errorf("check %s = %+v", id, ch)
		}
	}
	r = clitest.Run(t, Run, "deregister", "-http-addr", a.HTTPAddr, "testdata/apis.json")
	if r.Code != 0 || r.Stdout != "Deregistered service: api\nDeregistered service: worker-a\n" {
		t.Fatalf("deregister: %+v", r)
	}
	if len(agentServices(t, c)) != 0 {
		t.Errorf("left registered: %v", agentServices(t, c))
	}
}

func TestRegisterFlags(t *testing.T) {
	a, c := clitest.Agent(t)
	r := clitest.Run(t, Run, "register", "-http-addr", a.HTTPAddr, "-name", "cache", "-id", "cache-1", "-port", "6379",
		"-address", "127.0.0.9", "-tag", "a", "-tag", "b", "-meta", "k=v", "-tagged-address", "wan=198.51.100.7:16379")
	if r.Code != 0 || r.Stdout != "Registered service: cache\n" {
		t.Fatalf("register: %+v", r)
	}
	s := agentServices(t, c)["cache-1"]
	if s == nil || s.Service != "cache" || s.Port != 6379 || s.Address != "127.0.0.9" ||
		!reflect.DeepEqual(s.Tags, []string{"a", "b"}) || s.Meta["k"] != "v" ||
		s.TaggedAddresses["wan"] != (api.ServiceAddress{Address: "198.51.100.7", Port: 16379}) {
		t.Fatalf("cache-1 = %+v", s)
	}
	r = clitest.Run(t, Run, "deregister", "-http-addr", a.HTTPAddr, "-id", "cache-1")
	if r.Code != 0 || r.Stdout != "Deregistered service: cache-1\n" {
		t.Fatalf("deregister: %+v", r)
	}
	r = clitest.Run(t, Run, "deregister", "-http-addr", a.HTTPAddr, "-id", "cache-1")
	if r.Code != 1 || !strings.Contains(r.Stderr, `Error deregistering service "cache-1": Unexpected response code: 404`) {
		t.Errorf("deregister unknown: %+v", r)
	}
}

func TestRegisterErrors(t *testing.T) {
	a, _ := clitest.Agent(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "nothing", args: nil, want: "a service -name or a definition FILE is required"},
		{name: "flags and file", args: []string{"-name", "x", "testdata/web.hcl"}, want: "cannot be combined"},
		{name: "missing file", args: []string{filepath.Join(dir, "nope.hcl")}, want: "no such file"},
		{name: "bad hcl", args: []string{write("bad.hcl", "service {")}, want: "parse file " + filepath.Join(dir, "bad.hcl")},
		{name: "bad json", args: []string{write("bad.json", `{"service": `)}, want: "parse file " + filepath.Join(dir, "bad.json")},
		{name: "no service", args: []string{write("none.hcl", `node_name = "x"`)}, want: `no "service" or "services" definition`},
		{name: "two checks as one", args: []string{write("two.hcl", "service {\n name = \"x\"\n check { ttl = \"1s\" }\n check { ttl = \"2s\" }\n}")}, want: "want one object, got 2"},
		{name: "missing name", args: []string{write("noname.json", `{"service": {"port": 1}}`)}, want: `service "": missing name`},
		{name: "agent rejects", args: []string{write("weights.json", `{"service": {"name": "x", "weights": {"passing": 0}}}`)}, want: "Error registering service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := clitest.Run(t, Run, append([]string{"register", "-http-addr", a.HTTPAddr}, tt.args...)...)
			if r.Code != 1 || !strings.Contains(r.Stderr, tt.want) {
				t.Errorf("got exit %d stderr %q, want 1 and %q", r.Code, r.Stderr, tt.want)
			}
		})
	}
	if r := clitest.Run(t, Run, "deregister", "-http-addr", a.HTTPAddr); r.Code != 1 || !strings.Contains(r.Stderr, "-id or a definition FILE") {
		t.Errorf("deregister with nothing: %+v", r)
	}
	dead := clitest.DeadAddr(t)
	r := clitest.Run(t, Run, "register", "-http-addr", dead, "-name", "x")
	if r.Code != 1 || !strings.HasPrefix(r.Stderr, `Error querying agent: Put "http://`+dead+`/v1/agent/service/register"`) {
		t.Errorf("unreachable: %+v", r)
	}
	if r := clitest.Run(t, Run); r.Code != 1 || !strings.Contains(r.Stderr, "Usage: trellis services <subcommand>") {
		t.Errorf("no verb: %+v", r)
	}
}
