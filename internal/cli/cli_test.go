package cli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestCommandsRegistered(t *testing.T) {
	cmds := commands()
	for _, name := range []string{"agent", "version", "members", "catalog", "services", "kv", "lock", "reload", "leave", "snapshot", "operator"} {
		if cmds[name] == nil {
			t.Errorf("command %q not registered", name)
		}
	}
}

func TestNounWithoutVerbPrintsUsage(t *testing.T) {
	for noun, verbs := range map[string][]string{
		"kv":       {"get", "put", "delete", "export", "import"},
		"catalog":  {"datacenters", "nodes", "services"},
		"services": {"register", "deregister"},
	} {
		r := clitest.Run(t, Run, noun)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Usage: trellis "+noun+" <subcommand>") {
			t.Errorf("%s: %+v", noun, r)
		}
		for _, v := range verbs {
			if !regexp.MustCompile(`(?m)^ +` + v + ` +\S`).MatchString(r.Stderr) {
				t.Errorf("%s usage does not list %q:\n%s", noun, v, r.Stderr)
			}
		}
	}
}

// TestHTTPAddrEnv runs whole commands through the dispatcher with the
// agent address coming from the environment: TRELLIS_HTTP_ADDR wins over
// CONSUL_HTTP_ADDR, which is used when the former is unset.
func TestHTTPAddrEnv(t *testing.T) {
	a, _ := clitest.Agent(t)
	dead := clitest.DeadAddr(t)

	t.Run("TRELLIS_HTTP_ADDR over CONSUL_HTTP_ADDR", func(t *testing.T) {
		t.Setenv("TRELLIS_HTTP_ADDR", a.HTTPAddr)
		t.Setenv("CONSUL_HTTP_ADDR", dead)
		if r := clitest.Run(t, Run, "catalog", "datacenters"); r.Code != 0 || r.Stdout != "dc1\n" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("TRELLIS_HTTP_ADDR wins even when it is wrong", func(t *testing.T) {
		t.Setenv("TRELLIS_HTTP_ADDR", dead)
		t.Setenv("CONSUL_HTTP_ADDR", a.HTTPAddr)
		r := clitest.Run(t, Run, "members")
		if r.Code != 1 || !strings.Contains(r.Stderr, dead) {
			t.Errorf("%+v", r)
		}
	})
	t.Run("CONSUL_HTTP_ADDR with scheme", func(t *testing.T) {
		t.Setenv("TRELLIS_HTTP_ADDR", "")
		t.Setenv("CONSUL_HTTP_ADDR", "http://"+a.HTTPAddr)
		if r := clitest.Run(t, Run, "members"); r.Code != 0 || !strings.Contains(r.Stdout, "test-node") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("flag over both", func(t *testing.T) {
		t.Setenv("TRELLIS_HTTP_ADDR", dead)
		t.Setenv("CONSUL_HTTP_ADDR", dead)
		if r := clitest.Run(t, Run, "kv", "put", "-http-addr", a.HTTPAddr, "k", "v"); r.Code != 0 || r.Stdout != "Success! Data written to: k\n" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("default address", func(t *testing.T) {
		t.Setenv("TRELLIS_HTTP_ADDR", "")
		t.Setenv("CONSUL_HTTP_ADDR", "")
		// Nothing may listen on 8500 here; only check which address was
		// used when the request fails.
		r := clitest.Run(t, Run, "members")
		if r.Code != 0 && !strings.Contains(r.Stderr, `"http://127.0.0.1:8500/v1/agent/members"`) {
			t.Errorf("%+v", r)
		}
	})
}

func TestUnreachableAgent(t *testing.T) {
	dead := clitest.DeadAddr(t)
	r := clitest.Run(t, Run, "members", "-http-addr", dead)
	want := regexp.MustCompile(`^Error querying agent: Get "http://` + regexp.QuoteMeta(dead) + `/v1/agent/members": dial tcp ` +
		regexp.QuoteMeta(dead) + `: connect: connection refused\n$`)
	if r.Code != 1 || !want.MatchString(r.Stderr) {
		t.Errorf("got exit %d stderr %q, want 1 and %s", r.Code, r.Stderr, want)
	}
}

func TestVersionUnchanged(t *testing.T) {
	r := clitest.Run(t, Run, "version", "-format=json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"Version": `) {
		t.Errorf("%+v", r)
	}
}
