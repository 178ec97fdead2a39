package members

import (
	"regexp"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestMembers(t *testing.T) {
	a, _ := clitest.Agent(t)
	r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr)
	if r.Code != 0 {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want header and one member:\n%s", len(lines), r.Stdout)
	}
	header := regexp.MustCompile(`^Node +Address +Status +Type +Build +Protocol +DC +Partition +Segment$`)
	if !header.MatchString(lines[0]) {
		t.Errorf("header = %q", lines[0])
	}
	row := regexp.MustCompile(`^test-node +127\.0\.0\.1:\d+ +alive +server +\S+ +2 +dc1 +default +<all>$`)
	if !row.MatchString(lines[1]) {
		t.Errorf("row = %q", lines[1])
	}
	// Columns line up: each header word starts where its value does.
	if strings.Index(lines[0], "Status") != strings.Index(lines[1], "alive") {
		t.Errorf("columns not aligned:\n%s", r.Stdout)
	}
}

func TestMembersDetailed(t *testing.T) {
	a, _ := clitest.Agent(t)
	r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr, "-detailed")
	if r.Code != 0 {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^Node +Address +Status +Tags$`).MatchString(lines[0]) {
		t.Fatalf("output:\n%s", r.Stdout)
	}
	if !regexp.MustCompile(`^test-node +\S+ +alive +.*\bdc=dc1,.*\brole=consul\b`).MatchString(lines[1]) {
		t.Errorf("row = %q", lines[1])
	}
}

func TestMembersStatusFilter(t *testing.T) {
	a, _ := clitest.Agent(t)
	if r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr, "-status", "ali.e"); r.Code != 0 || !strings.Contains(r.Stdout, "test-node") {
		t.Errorf("-status matching: %+v", r)
	}
	if r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr, "-status", "failed"); r.Code != 2 || r.Stdout != "" {
		t.Errorf("-status matching nothing: %+v, want exit 2 and no output", r)
	}
	if r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr, "-status", "("); r.Code != 1 {
		t.Errorf("bad regexp: %+v", r)
	}
}

func TestMembersUnreachable(t *testing.T) {
	dead := clitest.DeadAddr(t)
	r := clitest.Run(t, Run, "-http-addr", dead)
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1", r.Code)
	}
	want := `Error querying agent: Get "http://` + dead + `/v1/agent/members`
	if !strings.HasPrefix(r.Stderr, want) || !strings.Contains(r.Stderr, "connection refused") {
		t.Errorf("stderr = %q, want prefix %q and connection refused", r.Stderr, want)
	}
}

func TestMembersArgs(t *testing.T) {
	if r := clitest.Run(t, Run, "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments") {
		t.Errorf("%+v", r)
	}
}

// -wan lists the WAN pool, where a server is "<node>.<dc>".
func TestMembersWAN(t *testing.T) {
	a, _ := clitest.Agent(t)
	r := clitest.Run(t, Run, "-http-addr", a.HTTPAddr, "-wan")
	if r.Code != 0 {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
	row := regexp.MustCompile(`^test-node\.dc1 +127\.0\.0\.1:\d+ +alive +server +\S+ +2 +dc1 +`)
	if len(lines) != 2 || !row.MatchString(lines[1]) {
		t.Fatalf("members -wan:\n%s\nwant the header and test-node.dc1", r.Stdout)
	}
}
