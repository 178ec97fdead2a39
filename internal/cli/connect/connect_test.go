package connect

import (
	"encoding/json"
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

func TestCAGetAndSetConfig(t *testing.T) {
	a, c := clitest.Agent(t)
	r := run(t, "", "ca", "get-config", "-http-addr", a.HTTPAddr)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("get-config: %+v", r)
	}
	var got api.CAConfig
	if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil {
		t.Fatalf("get-config output is not a CA configuration: %v\n%s", err, r.Stdout)
	}
	if got.Provider != "consul" || got.Config["LeafCertTTL"] != "72h" || !strings.Contains(r.Stdout, "\n\t\"Provider\": \"consul\"") {
		t.Fatalf("get-config output:\n%s", r.Stdout)
	}

	file := filepath.Join(t.TempDir(), "ca.json")
	if err := os.WriteFile(file, []byte(`{"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", "ca", "set-config", "-http-addr", a.HTTPAddr, "-config-file", file)
	if r.Code != 0 || r.Stdout != "Configuration updated!\n" {
		t.Fatalf("set-config: %+v", r)
	}
	cfg, _, err := c.Connect().CAGetConfig(nil)
	if err != nil || cfg.Config["LeafCertTTL"] != "24h" {
		t.Fatalf("after set-config: %+v, %v", cfg, err)
	}
	r = run(t, `{"Provider": "consul", "Config": {"LeafCertTTL": "36h"}}`, "ca", "set-config", "-http-addr", a.HTTPAddr, "-config-file", "-")
	if r.Code != 0 {
		t.Fatalf("set-config from stdin: %+v", r)
	}

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no file", "", nil, "-config-file must be set"},
		{"missing file", "", []string{"-config-file", filepath.Join(t.TempDir(), "none.json")}, "Error reading config file"},
		{"bad JSON", "{", []string{"-config-file", "-"}, "Error parsing config file"},
		{"refused by the server", `{"Provider": "consul", "Config": {"LeafCertTTL": "1m"}}`, []string{"-config-file", "-"},
			"Error setting CA configuration: Unexpected response code: 400 (Config.LeafCertTTL: 1m is below the minimum of 1h)"},
		{"extra argument", "", []string{"-config-file", file, "extra"}, "Too many arguments (expected 0, got 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.stdin, append([]string{"ca", "set-config", "-http-addr", a.HTTPAddr}, tc.args...)...)
			if r.Code != 1 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("got %+v, want exit 1 and stderr containing %q", r, tc.want)
			}
		})
	}
	if after, _, err := c.Connect().CAGetConfig(nil); err != nil || after.Config["LeafCertTTL"] != "36h" {
		t.Errorf("failed set-configs changed the configuration: %+v, %v", after, err)
	}
}
