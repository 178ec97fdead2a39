package agentctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// TestReload changes the agent's config file and checks that reload picks
// up the service it now defines.
func TestReload(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "svc.hcl")
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`service { name = "before" }`)
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-config-file", cfg}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	write(`service { name = "after" }`)

	r := clitest.Run(t, Reload, "-http-addr", a.HTTPAddr)
	if r.Code != 0 || r.Stdout != "Configuration reload triggered\n" || r.Stderr != "" {
		t.Fatalf("reload: %+v", r)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["after"]; !ok || len(svcs) != 1 {
		t.Errorf("services after reload = %v, want only \"after\"", svcs)
	}

	write(`service {`)
	r = clitest.Run(t, Reload, "-http-addr", a.HTTPAddr)
	if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error reloading: Unexpected response code: 500 (Failed to reload configs:") {
		t.Errorf("reload of a broken config: %+v", r)
	}
}

// TestLeave runs against an agent of its own: leave asks it to shut down.
func TestLeave(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	r := clitest.Run(t, Leave, "-http-addr", a.HTTPAddr)
	if r.Code != 0 || r.Stdout != "Graceful leave complete\n" || r.Stderr != "" {
		t.Fatalf("leave: %+v", r)
	}
	select {
	case <-a.LeaveCh():
	default:
		t.Error("agent saw no leave request")
	}
}

func TestUnreachableAndArgs(t *testing.T) {
	dead := clitest.DeadAddr(t)
	for name, cmd := range map[string]clitest.Command{"reload": Reload, "leave": Leave} {
		r := clitest.Run(t, cmd, "-http-addr", dead)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, `Error querying agent: Put "http://`+dead+`/v1/agent/`+name+`"`) {
			t.Errorf("%s unreachable: %+v", name, r)
		}
		if r := clitest.Run(t, cmd, "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments") {
			t.Errorf("%s extra: %+v", name, r)
		}
	}
}
