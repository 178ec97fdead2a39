package operator

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func run(t *testing.T, args ...string) clitest.Result {
	t.Helper()
	return clitest.Run(t, Run, args...)
}

func TestListPeers(t *testing.T) {
	a, c := clitest.Agent(t)
	cfg, err := c.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 1 {
		t.Fatalf("raft configuration %+v, want one server", cfg)
	}
	srv := cfg.Servers[0]
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"default", []string{"raft", "list-peers", "-http-addr", a.HTTPAddr}},
		{"stale with scheme", []string{"raft", "list-peers", "-http-addr", "http://" + a.HTTPAddr, "-stale"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			if r.Code != 0 || r.Stderr != "" {
				t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("want a header and one row, got:\n%s", r.Stdout)
			}
			if got, want := strings.Fields(lines[0]), []string{"Node", "ID", "Address", "State", "Voter", "RaftProtocol"}; !slices.Equal(got, want) {
				t.Errorf("header %q, want %q", got, want)
			}
			if got, want := strings.Fields(lines[1]), []string{"test-node", srv.ID, srv.Address, "leader", "true", "3"}; !slices.Equal(got, want) {
				t.Errorf("row %q, want %q", got, want)
			}
			// Columns line up: each header starts where its value does.
			for _, col := range []string{"ID", "Address", "State", "Voter", "RaftProtocol"} {
				i := strings.Index(lines[0], " "+col) + 1
				if i == 0 || lines[1][i-1] != ' ' || lines[1][i] == ' ' {
					t.Errorf("column %s not aligned:\n%s", col, r.Stdout)
				}
			}
		})
	}
}

func TestListPeersErrors(t *testing.T) {
	dead := clitest.DeadAddr(t)
	r := run(t, "raft", "list-peers", "-http-addr", dead)
	want := regexp.MustCompile(`^Error querying agent: Get "http://` + regexp.QuoteMeta(dead) + `/v1/operator/raft/configuration": dial tcp ` +
		regexp.QuoteMeta(dead) + `: connect: connection refused\n$`)
	if r.Code != 1 || r.Stdout != "" || !want.MatchString(r.Stderr) {
		t.Errorf("unreachable: exit %d stdout %q stderr %q, want 1 and %s", r.Code, r.Stdout, r.Stderr, want)
	}
	if r := run(t, "raft", "list-peers", "-http-addr", dead, "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments (expected 0, got 1)") {
		t.Errorf("extra argument: %+v", r)
	}
}

func TestUsage(t *testing.T) {
	raftVerbs := []string{"list-peers", "remove-peer", "transfer-leader"}
	tests := []struct {
		args     []string
		code     int
		prefix   string
		verbs    []string
		toStdout bool
	}{
		{args: nil, code: 1, prefix: "Usage: trellis operator <subcommand>", verbs: []string{"raft"}},
		{args: []string{"raft"}, code: 1, prefix: "Usage: trellis operator raft <subcommand>", verbs: raftVerbs},
		{args: []string{"raft", "-h"}, code: 0, prefix: "Usage: trellis operator raft <subcommand>", verbs: raftVerbs, toStdout: true},
		{args: []string{"raft", "list-peers", "-h"}, code: 0, prefix: "Usage: trellis operator raft list-peers [options]", toStdout: true},
		{args: []string{"raft", "remove-peer", "-h"}, code: 0, prefix: "Usage: trellis operator raft remove-peer -id ID | -address IP:port [options]", toStdout: true},
		{args: []string{"raft", "transfer-leader", "-h"}, code: 0, prefix: "Usage: trellis operator raft transfer-leader [-id ID] [options]", toStdout: true},
		{args: []string{"raft", "add-peer"}, code: 1, prefix: `trellis operator raft: unknown subcommand "add-peer"`, verbs: raftVerbs},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"operator"}, tt.args...), " "), func(t *testing.T) {
			r := run(t, tt.args...)
			out := r.Stderr
			if tt.toStdout {
				out = r.Stdout
			}
			if r.Code != tt.code || !strings.HasPrefix(out, tt.prefix) {
				t.Fatalf("got %+v, want exit %d and output starting %q", r, tt.code, tt.prefix)
			}
			for _, v := range tt.verbs {
				if !regexp.MustCompile(`(?m)^ +` + v + ` +\S`).MatchString(out) {
					t.Errorf("usage does not list %q:\n%s", v, out)
				}
			}
		})
	}
}
