package intention

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestIntentionCommands(t *testing.T) {
	a, c := clitest.Agent(t)
	run := func(args ...string) clitest.Result {
		t.Helper()
		return clitest.Run(t, Run, append([]string{args[0], "-http-addr", a.HTTPAddr}, args[1:]...)...)
	}
	if r := run("create", "web", "db"); r.Code != 0 || r.Stdout != "Created: web => db (allow)\n" {
		t.Fatalf("create: %+v", r)
	}
	if r := run("create", "-deny", "web", "db"); r.Code != 1 || !strings.Contains(r.Stderr, "already exists") {
		t.Fatalf("create over an existing one: %+v", r)
	}
	if r := run("create", "-deny", "-replace", "web", "db"); r.Code != 0 || r.Stdout != "Created: web => db (deny)\n" {
		t.Fatalf("create -replace: %+v", r)
	}
	if r := run("create", "-deny", "*", "*"); r.Code != 0 {
		t.Fatalf("create wildcard: %+v", r)
	}
	if r := run("create", "-allow", "api", "db"); r.Code != 0 {
		t.Fatalf("create api: %+v", r)
	}
	if r := run("check", "web", "db"); r.Code != 2 || r.Stdout != "Denied\n" {
		t.Errorf("check denied: %+v", r)
	}
	if r := run("check", "api", "db"); r.Code != 0 || r.Stdout != "Allowed\n" {
		t.Errorf("check allowed: %+v", r)
	}
	if r := run("check", "api", "cache"); r.Code != 2 {
		t.Errorf("check under * => * deny: %+v", r)
	}
	if r := run("get", "web", "db"); r.Code != 0 || !strings.Contains(r.Stdout, "Action:") || !strings.Contains(r.Stdout, "deny") ||
		!strings.Contains(r.Stdout, "Precedence:") {
		t.Errorf("get: %+v", r)
	}
	if r := run("get", "nobody", "db"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Errorf("get missing: %+v", r)
	}
	r := run("list")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if r.Code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[1], "api ") || !strings.HasPrefix(lines[3], "* ") {
		t.Errorf("list: %+v", r)
	}
	if r := run("match", "db"); r.Code != 0 || r.Stdout != "api => db (allow)\nweb => db (deny)\n* => * (deny)\n" {
		t.Errorf("match: %+v", r)
	}
	if r := run("match", "-source", "web"); r.Code != 0 || r.Stdout != "web => db (deny)\n* => * (deny)\n" {
		t.Errorf("match -source: %+v", r)
	}
	if r := run("delete", "web", "db"); r.Code != 0 || r.Stdout != "Intention deleted.\n" {
		t.Errorf("delete: %+v", r)
	}
	if ixn, _, err := c.Connect().IntentionGetExact("web", "db", nil); err != nil || ixn != nil {
		t.Errorf("after delete: %+v %v", ixn, err)
	}
	if r := run("check", "web"); r.Code != 1 || !strings.Contains(r.Stderr, "two arguments") {
		t.Errorf("check with one argument: %+v", r)
	}
}
