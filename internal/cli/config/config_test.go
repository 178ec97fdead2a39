package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func run(t *testing.T, stdin string, args ...string) clitest.Result {
	t.Helper()
	return clitest.Run(t, Command(strings.NewReader(stdin)), args...)
}

func TestConfigWriteReadListDelete(t *testing.T) {
	a, c := clitest.Agent(t)
	dir := t.TempDir()
	hclFile := filepath.Join(dir, "web.hcl")
	if err := os.WriteFile(hclFile, []byte(`
Kind = "service-defaults"
Name = "web"
protocol = "http"
upstream_config {
  defaults {
    connect_timeout_ms = 1234
  }
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", "write", "-http-addr", a.HTTPAddr, hclFile)
	if r.Code != 0 || r.Stdout != "Config entry written: service-defaults/web\n" {
		t.Fatalf("write HCL: %+v", r)
	}
	e, _, err := c.ConfigEntries().Get(api.ServiceDefaults, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	sd := e.(*api.ServiceConfigEntry)
	if sd.Protocol != "http" || sd.UpstreamConfig.Defaults.ConnectTimeoutMs != 1234 {
		t.Fatalf("written %+v", sd)
	}
	// JSON from stdin.
	r = run(t, `{"Kind":"service-defaults","Name":"api","Protocol":"grpc"}`, "write", "-http-addr", a.HTTPAddr, "-")
	if r.Code != 0 || r.Stdout != "Config entry written: service-defaults/api\n" {
		t.Fatalf("write JSON from stdin: %+v", r)
	}
	// CAS against a stale index is refused.
	r = run(t, `{"Kind":"service-defaults","Name":"api","Protocol":"tcp"}`, "write", "-http-addr", a.HTTPAddr, "-cas", "-modify-index", "1", "-")
	if r.Code != 1 || r.Stderr != "Config entry not updated: service-defaults/api\n" {
		t.Fatalf("write -cas stale: %+v", r)
	}
	r = run(t, "", "read", "-http-addr", a.HTTPAddr, "-kind", "service-defaults", "-name", "web")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"Protocol": "http"`) || !strings.Contains(r.Stdout, `"ConnectTimeoutMs": 1234`) {
		t.Fatalf("read: %+v", r)
	}
	r = run(t, "", "list", "-http-addr", a.HTTPAddr, "-kind", "service-defaults")
	if r.Code != 0 || r.Stdout != "api\nweb\n" {
		t.Fatalf("list: %+v", r)
	}
	r = run(t, "", "delete", "-http-addr", a.HTTPAddr, "-kind", "service-defaults", "-name", "api", "-cas", "-modify-index", "1")
	if r.Code != 1 || r.Stderr != "Config entry not deleted: service-defaults/api\n" {
		t.Fatalf("delete -cas stale: %+v", r)
	}
	r = run(t, "", "delete", "-http-addr", a.HTTPAddr, "-kind", "service-defaults", "-name", "api")
	if r.Code != 0 || r.Stdout != "Config entry deleted: service-defaults/api\n" {
		t.Fatalf("delete: %+v", r)
	}
	r = run(t, "", "read", "-http-addr", a.HTTPAddr, "-kind", "service-defaults", "-name", "api")
	if r.Code != 1 || !strings.Contains(r.Stderr, "404") {
		t.Fatalf("read after delete: %+v", r)
	}
}

// A bad file is refused before anything is sent, naming the field.
func TestConfigWriteRejects(t *testing.T) {
	a, c := clitest.Agent(t)
	for _, tc := range []struct{ name, input, want string }{
		{"unknown key", "Kind = \"service-defaults\"\nName = \"web\"\nprotocoll = \"http\"\n", "protocoll: unknown field"},
		{"unknown kind", `{"Kind":"nope","Name":"x"}`, "invalid config entry kind: nope"},
		{"bad action", "Kind = \"service-intentions\"\nName = \"db\"\nsources {\n  name = \"web\"\n  action = \"maybe\"\n}\n", "Sources[0].Action"},
		{"bad HCL", "Kind = ", "Failed to decode config entry input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.input, "write", "-http-addr", a.HTTPAddr, "-")
			if r.Code != 1 || !strings.Contains(r.Stderr, tc.want) {
				t.Fatalf("%+v, want exit 1 and %q", r, tc.want)
			}
		})
	}
	list, _, err := c.ConfigEntries().List(api.ServiceDefaults, nil)
	if err != nil || len(list) != 0 {
		t.Errorf("entries after refused writes: %v %v", list, err)
	}
	if r := run(t, "", "read", "-http-addr", a.HTTPAddr, "-kind", "service-defaults"); r.Code != 1 || !strings.Contains(r.Stderr, "-name") {
		t.Errorf("read without -name: %+v", r)
	}
}
