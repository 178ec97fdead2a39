package api_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// Until an operator sets one, the autopilot configuration is the agent
// config's autopilot block, with indexes 0; set and check-and-set then
// store one through raft, as Consul's client expects.
func TestAutopilotConfiguration(t *testing.T) {
	t.Parallel()
	a := start(t, agenttest.Options{Args: []string{"-hcl",
		`autopilot { cleanup_dead_servers = false  last_contact_threshold = "300ms"  max_trailing_logs = 100  min_quorum = 2  server_stabilization_time = "5s" }`}})
	op := a.c.Operator()
	cfg, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CleanupDeadServers || cfg.LastContactThreshold.Duration() != 300*time.Millisecond || cfg.MaxTrailingLogs != 100 ||
		cfg.MinQuorum != 2 || cfg.ServerStabilizationTime.Duration() != 5*time.Second || cfg.CreateIndex != 0 || cfg.ModifyIndex != 0 {
		t.Fatalf("configuration before any set = %+v, want the agent config's block with indexes 0", cfg)
	}

	// A check-and-set against index 0 succeeds while none is stored.
	cfg.MaxTrailingLogs = 50
	if ok, err := op.AutopilotCASConfiguration(cfg, nil); err != nil || !ok {
		t.Fatalf("CAS at index 0 = %v, %v; want true", ok, err)
	}
	stored, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if stored.MaxTrailingLogs != 50 || stored.ModifyIndex == 0 || stored.CreateIndex != stored.ModifyIndex {
		t.Fatalf("configuration after CAS = %+v", stored)
	}
	// A stale index changes nothing.
	stale := *stored
	stale.ModifyIndex--
	stale.MinQuorum = 9
	if ok, err := op.AutopilotCASConfiguration(&stale, nil); err != nil || ok {
		t.Fatalf("CAS at a stale index = %v, %v; want false", ok, err)
	}
	stale.ModifyIndex = 0
	if ok, err := op.AutopilotCASConfiguration(&stale, nil); err != nil || ok {
		t.Fatalf("CAS at index 0 once set = %v, %v; want false", ok, err)
	}
	if got, _ := op.AutopilotGetConfiguration(nil); got == nil || got.MinQuorum != 2 || got.ModifyIndex != stored.ModifyIndex {
		t.Fatalf("refused CAS changed the configuration: %+v", got)
	}

	// A plain set replaces it; CreateIndex stays.
	set := api.NewAutopilotConfiguration()
	set.CleanupDeadServers = false
	set.MinQuorum = 3
	set.RedundancyZoneTag = "zone"
	if err := op.AutopilotSetConfiguration(&set, nil); err != nil {
		t.Fatal(err)
	}
	got, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.CleanupDeadServers || got.MinQuorum != 3 || got.RedundancyZoneTag != "zone" || got.MaxTrailingLogs != 250 ||
		got.LastContactThreshold.Duration() != 200*time.Millisecond || got.CreateIndex != stored.CreateIndex || got.ModifyIndex <= stored.ModifyIndex {
		t.Fatalf("configuration after set = %+v", got)
	}
	// CAS at the current index succeeds, and the raw answer is Consul's.
	r := a.do(t, "PUT", "/v1/operator/autopilot/configuration?cas="+strconv.FormatUint(got.ModifyIndex, 10),
		`{"CleanupDeadServers":true,"LastContactThreshold":"1s","MaxTrailingLogs":1}`).expect(t, "CAS", 200)
	if strings.TrimSpace(r.body) != "true" {
		t.Errorf("CAS body %q, want true", r.body)
	}
	r = a.do(t, "PUT", "/v1/operator/autopilot/configuration?cas="+strconv.FormatUint(got.ModifyIndex, 10),
		`{"CleanupDeadServers":true,"LastContactThreshold":"1s","MaxTrailingLogs":2}`).expect(t, "stale CAS", 200)
	if strings.TrimSpace(r.body) != "false" {
		t.Errorf("stale CAS body %q, want false", r.body)
	}
	a.do(t, "DELETE", "/v1/operator/autopilot/configuration", nil).expect(t, "DELETE", 405)
}

// Bad input is a 400 naming the field, and nothing is stored.
func TestAutopilotConfigurationBadInput(t *testing.T) {
	t.Parallel()
	a := start(t)
	before, err := a.c.Operator().AutopilotGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"negative", "", `{"LastContactThreshold":"1s","MaxTrailingLogs":-5}`, "MaxTrailingLogs: must not be negative"},
		{"unparsable duration", "", `{"LastContactThreshold":"1 second"}`, "LastContactThreshold: must be a duration"},
		{"negative duration", "", `{"LastContactThreshold":"1s","ServerStabilizationTime":"-1s"}`, "ServerStabilizationTime: must not be negative"},
		{"unknown field", "", `{"LastContactThreshold":"1s","CleanupDeadServer":true}`, `unknown field "CleanupDeadServer"`},
		{"wrong type", "", `{"LastContactThreshold":"1s","MinQuorum":"3"}`, "MinQuorum: must be a whole number"},
		{"not an object", "", `"CleanupDeadServers"`, "must be a JSON object"},
		{"no threshold", "", `{"CleanupDeadServers":false}`, "LastContactThreshold must be a positive duration"},
		{"bad cas", "?cas=x", `{"LastContactThreshold":"1s"}`, "Invalid cas index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, "PUT", "/v1/operator/autopilot/configuration"+tc.path, tc.body).expect(t, tc.name, 400)
			if !strings.Contains(r.body, tc.want) {
				t.Errorf("body %q, want it to contain %q", r.body, tc.want)
			}
		})
	}
	after, err := a.c.Operator().AutopilotGetConfiguration(nil)
	if err != nil || *after.LastContactThreshold != *before.LastContactThreshold || after.ModifyIndex != 0 || after.MaxTrailingLogs != before.MaxTrailingLogs {
		t.Errorf("after refused writes: %+v, %v; want %+v unchanged", after, err, before)
	}
}

// A lone server is healthy, with no failure tolerance; the state lists it
// as the leader and only voter.
func TestAutopilotHealthAndState(t *testing.T) {
	t.Parallel()
	a := start(t)
	rc, err := a.c.Operator().RaftGetConfiguration(nil)
	if err != nil || len(rc.Servers) != 1 {
		t.Fatalf("raft configuration %+v, %v", rc, err)
	}
	self := rc.Servers[0]
	h, err := a.c.Operator().AutopilotServerHealth(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Healthy || h.FailureTolerance != 0 || len(h.Servers) != 1 {
		t.Fatalf("health = %+v, want one healthy server", h)
	}
	s := h.Servers[0]
	if s.ID != self.ID || s.Name != nodeName || s.Address != self.Address || s.SerfStatus != "alive" || s.Version == "" ||
		!s.Leader || !s.Voter || !s.Healthy || s.LastContact == nil || s.LastContact.Duration() != 0 ||
		s.LastTerm == 0 || s.LastIndex == 0 || s.StableSince.IsZero() {
		t.Errorf("server health = %+v (last contact %v)", s, s.LastContact)
	}
	a.do(t, "GET", "/v1/operator/autopilot/health", nil).expect(t, "healthy", http.StatusOK)

	st, err := a.c.Operator().AutopilotState(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || st.FailureTolerance != 0 || st.Leader != self.ID || len(st.Voters) != 1 || st.Voters[0] != self.ID {
		t.Fatalf("state = %+v", st)
	}
	srv, ok := st.Servers[self.ID]
	if !ok || srv.Name != nodeName || srv.Status != api.AutopilotServerLeader || srv.NodeType != api.AutopilotTypeVoter ||
		srv.NodeStatus != "alive" || !srv.Healthy || srv.LastIndex == 0 {
		t.Errorf("state of %s = %+v", self.ID, srv)
	}
}

// The servers' internal stats path is not part of the public API.
func TestAutopilotInternalPathIsNotPublic(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, h := range []string{"", "X-Trellis-Forwarded"} {
		req, err := http.NewRequest("GET", a.base+"/v1/internal/raft-stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		if h != "" {
			req.Header.Set(h, "1") // stripped at the HTTP API
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /v1/internal/raft-stats (header %q): status %d, want 404", h, resp.StatusCode)
		}
	}
}

// A stored autopilot configuration is part of a snapshot: restoring one
// taken before a change brings the earlier configuration back.
func TestAutopilotConfigurationInSnapshot(t *testing.T) {
	t.Parallel()
	a := start(t)
	op := a.c.Operator()
	set := api.NewAutopilotConfiguration()
	set.MinQuorum = 5
	must(t, op.AutopilotSetConfiguration(&set, nil))
	saved, err := op.AutopilotGetConfiguration(nil)
	must(t, err)
	rc, _, err := a.c.Snapshot().Save(nil)
	must(t, err)
	archive, err := io.ReadAll(rc)
	rc.Close()
	must(t, err)

	set.MinQuorum = 1
	must(t, op.AutopilotSetConfiguration(&set, nil))
	must(t, a.c.Snapshot().Restore(nil, bytes.NewReader(archive)))
	got, err := op.AutopilotGetConfiguration(nil)
	must(t, err)
	if got.MinQuorum != 5 || got.ModifyIndex != saved.ModifyIndex || got.CreateIndex != saved.CreateIndex {
		t.Errorf("after restore: %+v, want %+v", got, saved)
	}
}
