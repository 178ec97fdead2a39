package operator

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// The success paths of remove-peer and transfer-leader need a cluster of
// several servers reachable over HTTP; with one server these tests cover
// the failures, which must leave the peer set as it was.

// noAgent returns the address of an HTTP server that fails the test if
// any request reaches it: for mistakes the command must catch itself.
func noAgent(t *testing.T) string {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "unexpected request", http.StatusTeapot)
	}))
	t.Cleanup(func() {
		srv.Close()
		if n := hits.Load(); n != 0 {
			t.Errorf("the agent was contacted %d times", n)
		}
	})
	return srv.URL
}

func TestRemovePeer(t *testing.T) {
	a, c := clitest.Agent(t)
	peers := func() []string {
		t.Helper()
		cfg, err := c.Operator().RaftGetConfiguration(nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range cfg.Servers {
			ids = append(ids, s.ID+"@"+s.Address)
		}
		return ids
	}
	before := peers()
	if len(before) != 1 {
		t.Fatalf("raft configuration %q, want one server", before)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown id", []string{"-id", "no-such-server"},
			`Error removing peer: Unexpected response code: 404 (id "no-such-server" was not found in the Raft configuration)`},
		{"unknown address", []string{"-address", "127.0.0.1:1"},
			`Error removing peer: Unexpected response code: 404 (address "127.0.0.1:1" was not found in the Raft configuration)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"raft", "remove-peer", "-http-addr", a.HTTPAddr}, tt.args...)...)
			if r.Code != 1 || r.Stdout != "" || strings.TrimSuffix(r.Stderr, "\n") != tt.want {
				t.Errorf("got exit %d stdout %q stderr %q, want exit 1 and %q", r.Code, r.Stdout, r.Stderr, tt.want)
			}
			if !strings.Contains(r.Stderr, "was not found") {
				t.Errorf("stderr %q does not say the peer was not found", r.Stderr)
			}
			if after := peers(); len(after) != 1 || after[0] != before[0] {
				t.Errorf("raft configuration changed: %q, was %q", after, before)
			}
		})
	}
}

func TestRemovePeerUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"neither", nil, "Error removing peer: an address or id is required for the peer to remove"},
		{"both", []string{"-id", "x", "-address", "127.0.0.1:8300"}, "Error removing peer: cannot give both an address and id"},
		{"empty values", []string{"-id", "", "-address", ""}, "Error removing peer: an address or id is required for the peer to remove"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"raft", "remove-peer", "-http-addr", noAgent(t)}, tt.args...)...)
			if r.Code != 1 || r.Stdout != "" || !strings.HasPrefix(r.Stderr, tt.want+"\nUsage: trellis operator raft remove-peer") {
				t.Errorf("got exit %d stdout %q stderr %q, want exit 1, %q and usage", r.Code, r.Stdout, r.Stderr, tt.want)
			}
		})
	}
	if r := run(t, "raft", "remove-peer", "-http-addr", noAgent(t), "-id", "x", "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments (expected 0, got 1)") {
		t.Errorf("extra argument: %+v", r)
	}
}

func TestTransferLeader(t *testing.T) {
	a, c := clitest.Agent(t)
	cfg, err := c.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 1 {
		t.Fatalf("raft configuration %+v, want one server", cfg)
	}
	self := cfg.Servers[0].ID
	for _, tt := range []struct {
		name string
		args []string
		want string // in stderr, after "Error transferring leadership: "
	}{
		{"lone server", nil, "Unexpected response code: "},
		{"unknown id", []string{"-id", "no-such-server"}, `(id "no-such-server" was not found in the Raft configuration)`},
		{"to itself", []string{"-id", self}, "(cannot transfer leadership to the current leader)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"raft", "transfer-leader", "-http-addr", a.HTTPAddr}, tt.args...)...)
			if r.Code != 1 || r.Stdout != "" || !strings.HasPrefix(r.Stderr, "Error transferring leadership: ") || !strings.Contains(r.Stderr, tt.want) {
				t.Errorf("got exit %d stdout %q stderr %q, want exit 1 and an error transferring leadership with %q", r.Code, r.Stdout, r.Stderr, tt.want)
			}
		})
	}
	// The lone server still leads.
	cfg, err = c.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 1 || cfg.Servers[0].ID != self || !cfg.Servers[0].Leader {
		t.Errorf("raft configuration after failed transfers %+v, want %s alone and leading", cfg, self)
	}
	if r := run(t, "raft", "transfer-leader", "-http-addr", noAgent(t), "extra"); r.Code != 1 || !strings.Contains(r.Stderr, "Too many arguments (expected 0, got 1)") {
		t.Errorf("extra argument: %+v", r)
	}
}

func TestRaftWriteUnreachable(t *testing.T) {
	dead := clitest.DeadAddr(t)
	for _, tt := range []struct {
		name string
		args []string
		req  string // the failed request, as net/http words it
	}{
		{"remove-peer id", []string{"remove-peer", "-id", "x"}, `Delete "http://` + dead + `/v1/operator/raft/peer?id=x"`},
		{"remove-peer address", []string{"remove-peer", "-address", "10.0.0.1:8300"}, `Delete "http://` + dead + `/v1/operator/raft/peer?address=10.0.0.1%3A8300"`},
		{"transfer-leader", []string{"transfer-leader"}, `Post "http://` + dead + `/v1/operator/raft/transfer-leader"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"raft", tt.args[0], "-http-addr", dead}, tt.args[1:]...)...)
			want := regexp.MustCompile(`^Error querying agent: ` + regexp.QuoteMeta(tt.req) + `: dial tcp ` +
				regexp.QuoteMeta(dead) + `: connect: connection refused\n$`)
			if r.Code != 1 || r.Stdout != "" || !want.MatchString(r.Stderr) {
				t.Errorf("got exit %d stdout %q stderr %q, want exit 1 and %s", r.Code, r.Stdout, r.Stderr, want)
			}
		})
	}
}
