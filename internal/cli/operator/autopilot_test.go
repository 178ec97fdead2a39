package operator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestAutopilotGetAndSetConfig(t *testing.T) {
	a, c := clitest.Agent(t)
	r := run(t, "autopilot", "get-config", "-http-addr", a.HTTPAddr)
	want := `CleanupDeadServers = true
LastContactThreshold = 200ms
MaxTrailingLogs = 250
MinQuorum = 0
ServerStabilizationTime = 10s
RedundancyZoneTag = ""
DisableUpgradeMigration = false
UpgradeVersionTag = ""
`
	if r.Code != 0 || r.Stdout != want || r.Stderr != "" {
		t.Fatalf("get-config: exit %d stdout %q stderr %q, want:\n%s", r.Code, r.Stdout, r.Stderr, want)
	}

	r = run(t, "autopilot", "set-config", "-http-addr", a.HTTPAddr, "-cleanup-dead-servers=false", "-min-quorum", "3",
		"-last-contact-threshold", "1s", "-upgrade-version-tag", "build")
	if r.Code != 0 || r.Stdout != "Configuration updated!\n" || r.Stderr != "" {
		t.Fatalf("set-config: %+v", r)
	}
	cfg, err := c.Operator().AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The flags given change; the others stay.
	if cfg.CleanupDeadServers || cfg.MinQuorum != 3 || cfg.LastContactThreshold.String() != "1s" || cfg.UpgradeVersionTag != "build" ||
		cfg.MaxTrailingLogs != 250 || cfg.ServerStabilizationTime.String() != "10s" || cfg.ModifyIndex == 0 {
		t.Errorf("after set-config: %+v", cfg)
	}
	r = run(t, "autopilot", "get-config", "-http-addr", a.HTTPAddr, "-stale")
	if r.Code != 0 || !strings.Contains(r.Stdout, "CleanupDeadServers = false\n") || !strings.Contains(r.Stdout, "MinQuorum = 3\n") {
		t.Errorf("get-config -stale after set-config: %+v", r)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"negative duration", []string{"-last-contact-threshold", "-1s"}, "Error: -last-contact-threshold must not be negative, got -1s\n"},
		{"negative count", []string{"-max-trailing-logs", "-1"}, `invalid value "-1" for flag -max-trailing-logs`},
		{"refused by the server", []string{"-last-contact-threshold", "0s"},
			"Error setting Autopilot configuration: Unexpected response code: 400 (Invalid autopilot configuration: LastContactThreshold must be a positive duration"},
		{"extra argument", []string{"extra"}, "Too many arguments (expected 0, got 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, append([]string{"autopilot", "set-config", "-http-addr", a.HTTPAddr}, tc.args...)...)
			if r.Code != 1 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("got %+v, want exit 1 and stderr containing %q", r, tc.want)
			}
		})
	}
	if after, err := c.Operator().AutopilotGetConfiguration(nil); err != nil || after.ModifyIndex != cfg.ModifyIndex {
		t.Errorf("failed set-configs changed the configuration: %+v, %v", after, err)
	}
}

// When the configuration changed between set-config's read and its write,
// nothing is written and the command says so.
func TestAutopilotSetConfigConflict(t *testing.T) {
	var put string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			io.WriteString(w, `{"CleanupDeadServers":true,"LastContactThreshold":"200ms","MaxTrailingLogs":250,"ServerStabilizationTime":"10s","ModifyIndex":7}`)
		case http.MethodPut:
			put = r.URL.RawQuery
			io.WriteString(w, "false")
		}
	}))
	defer srv.Close()
	r := run(t, "autopilot", "set-config", "-http-addr", srv.URL, "-min-quorum", "1")
	if r.Code != 1 || r.Stderr != "Configuration could not be atomically updated, please try again\n" || r.Stdout != "" {
		t.Errorf("got %+v", r)
	}
	if put != "cas=7" {
		t.Errorf("PUT query %q, want cas=7: the write is a check-and-set on what was read", put)
	}
}

func TestAutopilotState(t *testing.T) {
	a, c := clitest.Agent(t)
	rc, err := c.Operator().RaftGetConfiguration(nil)
	if err != nil || len(rc.Servers) != 1 {
		t.Fatalf("raft configuration %+v, %v", rc, err)
	}
	id := rc.Servers[0].ID
	r := run(t, "autopilot", "state", "-http-addr", a.HTTPAddr)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("state: %+v", r)
	}
	want := regexp.MustCompile(`^Healthy:                      true
Failure Tolerance:            0
Optimistic Failure Tolerance: 0
Leader:                       ` + id + `
Voters:
   ` + id + `
Servers:
   ` + id + `
      Name:            test-node
      Address:         ` + regexp.QuoteMeta(rc.Servers[0].Address) + `
      Version:         \S+
      Status:          leader
      Node Type:       voter
      Node Status:     alive
      Healthy:         true
      Last Contact:    0s
      Last Term:       [1-9]\d*
      Last Index:      [1-9]\d*
$`)
	if !want.MatchString(r.Stdout) {
		t.Errorf("state output:\n%s\nwant it to match:\n%s", r.Stdout, want)
	}

	r = run(t, "autopilot", "state", "-http-addr", a.HTTPAddr, "-format=json")
	var st api.AutopilotState
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil || st.Leader != id || st.Servers[id].Status != api.AutopilotServerLeader {
		t.Errorf("state -format=json: %+v (decoded %+v)", r, st)
	}
	if r := run(t, "autopilot", "state", "-http-addr", a.HTTPAddr, "-format=xml"); r.Code != 1 || !strings.Contains(r.Stderr, `unknown format "xml"`) {
		t.Errorf("state -format=xml: %+v", r)
	}
	dead := clitest.DeadAddr(t)
	if r := run(t, "autopilot", "state", "-http-addr", dead); r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error querying agent: ") {
		t.Errorf("state against a dead address: %+v", r)
	}
}

func TestAutopilotUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		prefix string
	}{
		{[]string{"autopilot"}, 1, "Usage: trellis operator autopilot <subcommand>"},
		{[]string{"autopilot", "get-config", "-h"}, 0, "Usage: trellis operator autopilot get-config [options]"},
		{[]string{"autopilot", "set-config", "-h"}, 0, "Usage: trellis operator autopilot set-config [options]"},
		{[]string{"autopilot", "state", "-h"}, 0, "Usage: trellis operator autopilot state [options]"},
	} {
		r := run(t, tc.args...)
		out := r.Stderr
		if tc.code == 0 {
			out = r.Stdout
		}
		if r.Code != tc.code || !strings.HasPrefix(out, tc.prefix) {
			t.Errorf("operator %v: %+v, want exit %d and output starting %q", tc.args, r, tc.code, tc.prefix)
		}
		if len(tc.args) == 1 {
			for _, v := range []string{"get-config", "set-config", "state"} {
				if !regexp.MustCompile(`(?m)^ +` + v + ` +\S`).MatchString(out) {
					t.Errorf("usage does not list %q:\n%s", v, out)
				}
			}
		}
	}
}
