package catalog

import (
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// setup starts an agent with its own node, plus a second node "ext-1"
// (registered in the catalog directly) running "db", and "web" on the
// agent's node.
func setup(t *testing.T) string {
	t.Helper()
	a, c := clitest.Agent(t)
	for _, s := range []*api.AgentServiceRegistration{
		{Name: "web", Port: 80, Tags: []string{"v2", "primary"}},
		{Name: "cache", Port: 6379},
	} {
		if err := c.Agent().ServiceRegister(s); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		ID: "11111111-2222-3333-4444-555555555555", Node: "ext-1", Address: "10.1.2.3",
		NodeMeta:        map[string]string{"rack": "r1"},
		TaggedAddresses: map[string]string{"wan": "198.51.100.1"},
		Service:         &api.AgentService{Service: "db", Port: 5432, Tags: []string{"sql"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a.HTTPAddr
}

func TestDatacenters(t *testing.T) {
	addr := setup(t)
	r := clitest.Run(t, Run, "datacenters", "-http-addr", addr)
	if r.Code != 0 || r.Stdout != "dc1\n" {
		t.Errorf("got %+v, want dc1", r)
	}
}

func TestNodes(t *testing.T) {
	addr := setup(t)
	tests := []struct {
		name  string
		args  []string
		lines []string // regexps, one per line
	}{
		{name: "all", args: nil, lines: []string{
			`^Node +ID +Address +DC$`,
			`^ext-1 +11111111 +10\.1\.2\.3 +dc1$`,
			`^test-node +[0-9a-f]{8} +127\.0\.0\.1 +dc1$`,
		}},
		{name: "stale", args: []string{"-stale"}, lines: []string{
			`^Node +ID +Address +DC$`, `^ext-1 `, `^test-node `,
		}},
		{name: "detailed", args: []string{"-detailed"}, lines: []string{
			`^Node +ID +Address +DC +TaggedAddresses +Meta$`,
			`^ext-1 +11111111-2222-3333-4444-555555555555 +10\.1\.2\.3 +dc1 +wan=198\.51\.100\.1 +rack=r1$`,
			`^test-node +[0-9a-f-]{36} +127\.0\.0\.1 +dc1 +.*lan=127\.0\.0\.1`,
		}},
		{name: "node-meta", args: []string{"-node-meta", "rack=r1"}, lines: []string{
			`^Node +ID +Address +DC$`, `^ext-1 `,
		}},
		{name: "service", args: []string{"-service", "web"}, lines: []string{
			`^Node +ID +Address +DC$`, `^test-node `,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := clitest.Run(t, Run, append([]string{"nodes", "-http-addr", addr}, tt.args...)...)
			if r.Code != 0 {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
			got := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
			if len(got) != len(tt.lines) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tt.lines), r.Stdout)
			}
			for i, re := range tt.lines {
				if !regexp.MustCompile(re).MatchString(got[i]) {
					t.Errorf("line %d = %q, want match for %s", i, got[i], re)
				}
			}
		})
	}
}

func TestNodesNoMatch(t *testing.T) {
	addr := setup(t)
	r := clitest.Run(t, Run, "nodes", "-http-addr", addr, "-node-meta", "rack=none")
	if r.Code != 0 || r.Stdout != "" || !strings.Contains(r.Stderr, "No nodes match the given query") {
		t.Errorf("%+v", r)
	}
}

func TestServices(t *testing.T) {
	addr := setup(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		// The server's own "consul" service is listed, as Consul lists it.
		{name: "names", want: "cache\nconsul\ndb\nweb\n"},
		{name: "tags", args: []string{"-tags"}, want: "cache\nconsul\ndb      sql\nweb     primary,v2\n"},
		{name: "node", args: []string{"-node", "ext-1"}, want: "db\n"},
		{name: "node tags", args: []string{"-node", "test-node", "-tags"}, want: "cache\nconsul\nweb     primary,v2\n"},
		{name: "node-meta", args: []string{"-node-meta", "rack=r1"}, want: "db\n"},
		{name: "node filter", args: []string{"-node", "test-node", "-filter", `Service == "cache"`}, want: "cache\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := clitest.Run(t, Run, append([]string{"services", "-http-addr", addr}, tt.args...)...)
			if r.Code != 0 || r.Stdout != tt.want {
				t.Errorf("got exit %d stdout %q stderr %q, want %q", r.Code, r.Stdout, r.Stderr, tt.want)
			}
		})
	}
	if r := clitest.Run(t, Run, "services", "-http-addr", addr, "-filter", `ServiceName == "db"`); r.Code != 0 || r.Stdout != "db\n" {
		t.Errorf("-filter without -node: %+v", r)
	}
	if r := clitest.Run(t, Run, "services", "-http-addr", addr, "-filter", "=="); r.Code != 1 || !strings.Contains(r.Stderr, "boolean expression") {
		t.Errorf("bad -filter: %+v", r)
	}
	r := clitest.Run(t, Run, "services", "-http-addr", addr, "-node", "no-such-node")
	if r.Code != 0 || r.Stdout != "" || !strings.Contains(r.Stderr, "No services match") {
		t.Errorf("unknown node: %+v", r)
	}
}

func TestUsageAndErrors(t *testing.T) {
	if r := clitest.Run(t, Run); r.Code != 1 || !strings.Contains(r.Stderr, "Usage: trellis catalog <subcommand>") ||
		!strings.Contains(r.Stderr, "datacenters") {
		t.Errorf("no verb: %+v", r)
	}
	if r := clitest.Run(t, Run, "nodes", "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments") {
		t.Errorf("extra arg: %+v", r)
	}
	dead := clitest.DeadAddr(t)
	for _, verb := range []string{"datacenters", "nodes", "services"} {
		r := clitest.Run(t, Run, verb, "-http-addr", dead)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, `Error querying agent: Get "http://`+dead+`/v1/catalog/`) {
			t.Errorf("%s unreachable: %+v", verb, r)
		}
	}
	addr := setup(t)
	r := clitest.Run(t, Run, "nodes", "-http-addr", addr, "-datacenter", "dc9")
	if r.Code != 1 || !strings.Contains(r.Stderr, "Error listing nodes: Unexpected response code: 500 (No path to datacenter)") {
		t.Errorf("unknown datacenter: %+v", r)
	}
}
