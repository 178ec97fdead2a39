package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

const testNodeID = "11111111-2222-3333-4444-555555555555"

// startWithoutQuorum starts a server whose raft configuration also lists a
// voter that does not exist: it can never win an election, so every Apply
// fails with ErrNotLeader, and no leadership change ever touches its
// session timers.
func startWithoutQuorum(t *testing.T) *Server {
	t.Helper()
	dir := t.TempDir()
	rc := raft.DefaultConfig()
	rc.LocalID = testNodeID
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft", "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	conf := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: rc.LocalID, Address: "127.0.0.1:0"},
		{Suffrage: raft.Voter, ID: "ghost", Address: "127.0.0.1:1"},
	}}
	if err := raft.BootstrapCluster(rc, bolt, bolt, raft.NewDiscardSnapshotStore(), trans, conf); err != nil {
		t.Fatal(err)
	}
	bolt.Close()
	s, err := New(Config{NodeID: testNodeID, NodeName: "n1", DataDir: dir}, state.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	return s
}

func startInMemory(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{NodeID: testNodeID, NodeName: "n1"}, state.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(fsm.RegisterRequestType, &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) timerIDs() []string {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	var ids []string
	for id := range s.sessionTimers {
		ids = append(ids, id)
	}
	return ids
}

// Regression: SessionDestroy stopped the TTL timer before Apply, so a
// destroy that failed left the session in place with no timer: it never
// expired.
func TestSessionDestroyKeepsTimerWhenApplyFails(t *testing.T) {
	s := startWithoutQuorum(t)
	const id = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
	s.resetSessionTimer(id, "10s") // as when this server last led
	if err := s.SessionDestroy(id); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("SessionDestroy without a leader: err = %v, want ErrNotLeader", err)
	}
	if got := s.timerIDs(); len(got) != 1 || got[0] != id {
		t.Errorf("timers after a failed destroy = %v, want [%s]", got, id)
	}
}

// Regression: SessionCreate started the TTL timer only after Apply
// succeeded, but an entry whose Apply failed may still commit: a TTL
// session would then never expire.
func TestSessionCreateTimerOnlyWhenOutcomeUnknown(t *testing.T) {
	s := startWithoutQuorum(t)
	_, err := s.SessionCreate(&structs.Session{Node: "n1", TTL: "10s"})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("SessionCreate without a leader: err = %v, want ErrNotLeader", err)
	}
	// Refused before the log: no session can exist, so no timer.
	if got := s.timerIDs(); len(got) != 0 {
		t.Errorf("timers after a refused create = %v, want none", got)
	}
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{ErrNotLeader, false},
		{rejectedError{errors.New("Missing node registration")}, false},
		{ErrLeadershipLost, true},
		{raft.ErrEnqueueTimeout, true},
	}
	for _, tt := range tests {
		if got := outcomeUnknown(tt.err); got != tt.want {
			t.Errorf("outcomeUnknown(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// Regression: session timers were stopped only after the leader loops, and
// nothing kept a renewal or an expiry that raced Shutdown from arming a new
// timer or reaching raft while it shut down.
func TestSessionTimersStopWhenShutdownBegins(t *testing.T) {
	s := startInMemory(t)
	id, err := s.SessionCreate(&structs.Session{Node: "n1", TTL: "10s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if got := s.timerIDs(); len(got) != 0 {
		t.Errorf("timers after Shutdown = %v, want none", got)
	}
	s.resetSessionTimer(id, "10s") // a renewal finishing late
	if got := s.timerIDs(); len(got) != 0 {
		t.Errorf("timer armed after Shutdown: %v", got)
	}
	s.expireSession(id) // a timer that fired as Shutdown began: must not reach raft
	if err := s.Shutdown(); err != nil {
		t.Errorf("second Shutdown = %v, want nil", err)
	}
}

// Regression: timers were keyed by the ID as sent, so renewing with an
// upper-cased ID armed a second timer and the first still expired the
// session.
func TestSessionRenewIgnoresIDCase(t *testing.T) {
	s := startInMemory(t)
	id, err := s.SessionCreate(&structs.Session{Node: "n1", TTL: "10s"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.SessionRenew(strings.ToUpper(id))
	if err != nil || sess == nil {
		t.Fatalf("renew = %v, %v", sess, err)
	}
	if got := s.timerIDs(); len(got) != 1 || got[0] != id {
		t.Errorf("timers after renewing in upper case = %v, want [%s]", got, id)
	}
	if err := s.SessionDestroy(strings.ToUpper(id)); err != nil {
		t.Fatal(err)
	}
	if got := s.timerIDs(); len(got) != 0 {
		t.Errorf("timers after destroying in upper case = %v, want none", got)
	}
}

// Regression: raft's ErrLeadershipLost was reported as ErrNotLeader ("not
// applied"), though the entry may still commit.
func TestApplyErrorMapping(t *testing.T) {
	other := errors.New("disk on fire")
	for _, tc := range []struct {
		name string
		in   error
		want error
	}{
		{"not leader", raft.ErrNotLeader, ErrNotLeader},
		{"leadership lost", raft.ErrLeadershipLost, ErrLeadershipLost},
		{"wrapped leadership lost", fmt.Errorf("apply: %w", raft.ErrLeadershipLost), ErrLeadershipLost},
		{"other", other, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := applyError(tc.in); got != tc.want {
				t.Errorf("applyError(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// Consul's texts for a bad session TTL, which clients match on.
func TestParseSessionTTL(t *testing.T) {
	for _, tc := range []struct {
		ttl     string
		want    time.Duration
		wantErr string
	}{
		{"", 0, ""},
		{"0s", 0, ""},
		{"10s", 10 * time.Second, ""},
		{"10.0s", 10 * time.Second, ""},
		{"15", 15 * time.Second, ""},
		// Regression: the parse failure read "Invalid Session TTL '...': ...",
		// not Consul's text.
		{"soon", 0, `Session TTL 'soon' invalid: time: invalid duration "soon"`},
		{"5s", 0, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"},
		{"25h", 0, "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]"},
	} {
		t.Run(tc.ttl, func(t *testing.T) {
			got, err := ParseSessionTTL(tc.ttl)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("ParseSessionTTL(%q) error = %v, want %q", tc.ttl, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseSessionTTL(%q) = %v, %v; want %v", tc.ttl, got, err, tc.want)
			}
		})
	}
}
