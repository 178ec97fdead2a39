package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Autopilot watches the health of the servers from the leader and, when
// the configuration allows, removes failed servers from the raft
// configuration. It is hashicorp/raft-autopilot, run on the leader only:
// started when this server gains leadership (once it has applied what
// earlier leaders committed) and stopped when it loses it.
//
// What raft does not know comes from an AutopilotBackend, which the agent
// implements over gossip and the internal RPC. The configuration is the
// one an operator stored through raft (AutopilotSetConfiguration), or,
// until one did, the leader's own defaults (AutopilotOptions.Defaults).

// AutopilotBackend is what autopilot learns from, and acts on, outside
// raft. Its methods may be called concurrently with each other.
type AutopilotBackend interface {
	// KnownServers returns the servers of this datacenter that gossip
	// knows, failed and left ones included, by raft ID. A server in the
	// raft configuration but not here is taken as gone for good and is
	// removed (when CleanupDeadServers is on), so this must list every
	// server gossip knows, never a partial view.
	KnownServers() map[raft.ServerID]*autopilot.Server
	// FetchServerStats asks each of servers (never this one) for its raft
	// stats, within ctx. A server that does not answer is left out.
	FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats
	// ForceLeave marks a failed server as left in gossip, once raft has
	// dropped it, so that it is not taken for a server still to come back.
	ForceLeave(name string) error
}

// AutopilotOptions tune autopilot.
type AutopilotOptions struct {
	// Defaults is the configuration in force until an operator stores
	// one: the agent config's autopilot block.
	Defaults structs.AutopilotConfig
	// UpdateInterval is how often the servers' health is refreshed;
	// ReconcileInterval how often failed servers are looked for. Zero
	// means raft-autopilot's defaults, 2s and 10s.
	UpdateInterval    time.Duration
	ReconcileInterval time.Duration
}

// DefaultAutopilotConfig is Consul's default autopilot configuration,
// the one a server that was given none applies.
func DefaultAutopilotConfig() structs.AutopilotConfig {
	return structs.AutopilotConfig{
		CleanupDeadServers:      true,
		LastContactThreshold:    structs.Duration(200 * time.Millisecond),
		MaxTrailingLogs:         250,
		ServerStabilizationTime: structs.Duration(10 * time.Second),
	}
}

// autopilotStateWait bounds how long a request for the autopilot state
// waits for a new leader's first one.
const autopilotStateWait = 5 * time.Second

// Errors of the autopilot state requests.
var (
	// ErrAutopilotNotLeader: only the leader runs autopilot.
	ErrAutopilotNotLeader = errors.New("Autopilot state is only available on the leader")
	// ErrAutopilotNotRunning: the server was started without autopilot
	// (no gossip backend), or its first state is not ready yet.
	ErrAutopilotNotRunning = errors.New("Autopilot state is not available yet")
)

// autopilotRunner is the Server's autopilot, once StartAutopilot was
// called.
type autopilotRunner struct {
	mu       sync.Mutex
	ap       *autopilot.Autopilot     // guarded by mu; nil until StartAutopilot
	delegate *autopilotDelegate       // guarded by mu
	defaults *structs.AutopilotConfig // guarded by mu; nil: DefaultAutopilotConfig
}

func (r *autopilotRunner) get() (*autopilot.Autopilot, *autopilotDelegate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ap, r.delegate
}

// StartAutopilot starts autopilot, which then runs on this server
// whenever it leads, until ctx ends or the server shuts down (Shutdown
// waits for it). It may be called once.
func (s *Server) StartAutopilot(ctx context.Context, b AutopilotBackend, opts AutopilotOptions) error {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	if s.shutdown {
		return errors.New("server: autopilot: server is shut down")
	}
	r := &s.autopilot
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ap != nil {
		return errors.New("server: autopilot: already started")
	}
	defaults := opts.Defaults
	r.defaults = &defaults
	logger := s.cfg.Logger.With("component", "autopilot")
	d := &autopilotDelegate{s: s, backend: b, logger: logger, localID: raft.ServerID(s.cfg.NodeID),
		seen: make(map[raft.ServerID]seenStats), removing: make(map[raft.ServerID]bool), readyCh: make(chan struct{})}
	r.delegate = d
	r.ap = autopilot.New(s.raft, d,
		// raft-autopilot names its logger "autopilot" itself.
		autopilot.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Info,
			Output: levelWriter{logger}, DisableTime: true})),
		autopilot.WithUpdateInterval(opts.UpdateInterval),
		autopilot.WithReconcileInterval(opts.ReconcileInterval))
	s.wg.Add(1)
	go s.runAutopilot(ctx, r.ap, d)
	return nil
}

// runAutopilot starts autopilot at each gain of leadership and stops it
// at each loss, until ctx ends or the server shuts down.
func (s *Server) runAutopilot(ctx context.Context, ap *autopilot.Autopilot, d *autopilotDelegate) {
	defer s.wg.Done()
	running := false
	stop := func() {
		if running {
			<-ap.Stop()
			// Removals started by this term finish before the next
			// term, or Shutdown, goes on.
			d.removals.Wait()
			running = false
		}
	}
	defer stop()
	for {
		changed := s.LeadershipChanged()
		switch lead := s.IsLeader(); {
		case lead && !running && !s.readyForReads.Load():
			// A new leader's store may lack what earlier leaders
			// committed, the autopilot configuration among it, until
			// its leader loop's barrier: look again shortly, or at the
			// next change of leadership.
			select {
			case <-ctx.Done():
				return
			case <-s.shutdownCh:
				return
			case <-changed:
			case <-time.After(5 * time.Millisecond):
			}
			continue
		case lead && !running:
			d.newTerm()
			ap.Start(ctx)
			running = true
		case !lead:
			stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.shutdownCh:
			return
		case <-changed:
		}
	}
}

// autopilotDelegate is raft-autopilot's view of this server and of its
// backend.
type autopilotDelegate struct {
	s       *Server
	backend AutopilotBackend
	logger  *slog.Logger
	localID raft.ServerID

	// removals owns the goroutines that remove failed servers; the
	// runner waits for them when autopilot stops.
	removals sync.WaitGroup

	mu       sync.Mutex
	seen     map[raft.ServerID]seenStats // guarded by mu: each server's last stats
	removing map[raft.ServerID]bool      // guarded by mu: removals in flight
	readyCh  chan struct{}               // guarded by mu: closed at the term's first state
	ready    bool                        // guarded by mu: readyCh is closed
}

// seenStats is a server's last answer and when it came.
type seenStats struct {
	stats autopilot.ServerStats
	at    time.Time
}

// newTerm forgets what the previous term learnt.
func (d *autopilotDelegate) newTerm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = make(map[raft.ServerID]seenStats)
	if d.ready {
		d.readyCh, d.ready = make(chan struct{}), false
	}
}

// stateReady returns a channel closed once this term has a state.
func (d *autopilotDelegate) stateReady() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.readyCh
}

// AutopilotConfig implements autopilot.ApplicationIntegration. It is nil
// (autopilot then neither computes a state nor removes anything) while
// this server may lack committed entries.
func (d *autopilotDelegate) AutopilotConfig() *autopilot.Config {
	if !d.s.readyForReads.Load() {
		return nil
	}
	return toAutopilotConfig(d.s.AutopilotConfiguration())
}

func toAutopilotConfig(c *structs.AutopilotConfig) *autopilot.Config {
	return &autopilot.Config{
		CleanupDeadServers:      c.CleanupDeadServers,
		LastContactThreshold:    c.LastContactThreshold.D(),
		MaxTrailingLogs:         c.MaxTrailingLogs,
		MinQuorum:               c.MinQuorum,
		ServerStabilizationTime: c.ServerStabilizationTime.D(),
	}
}

// NotifyState implements autopilot.ApplicationIntegration: the first state
// of a term releases the requests waiting for one.
func (d *autopilotDelegate) NotifyState(st *autopilot.State) {
	if st == nil || len(st.Servers) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		close(d.readyCh)
		d.ready = true
	}
}

// KnownServers implements autopilot.ApplicationIntegration. Every server
// is meant to vote: raft-autopilot counts only servers typed as voters
// when it bounds how many failed ones it may remove, so an untyped server
// would make it remove none.
func (d *autopilotDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	known := d.backend.KnownServers()
	for _, srv := range known {
		if srv.NodeType == "" {
			srv.NodeType = autopilot.NodeVoter
		}
	}
	return known
}

// FetchServerStats implements autopilot.ApplicationIntegration: this
// server's stats come from raft, the others' from the backend. A server
// that answered before but not now keeps its last term and index, and
// its last contact grows by the time since that answer, so that one gone
// silent turns unhealthy once past LastContactThreshold, before gossip
// declares it failed.
func (d *autopilotDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	remote := make(map[raft.ServerID]*autopilot.Server, len(servers))
	for id, srv := range servers {
		if id != d.localID {
			remote[id] = srv
		}
	}
	var got map[raft.ServerID]*autopilot.ServerStats
	if len(remote) > 0 {
		got = d.backend.FetchServerStats(ctx, remote)
	}
	return d.mergeStats(time.Now(), servers, got)
}

// mergeStats builds the stats of servers from this server's raft, the
// answers got, and the last answers of those that did not answer.
func (d *autopilotDelegate) mergeStats(now time.Time, servers map[raft.ServerID]*autopilot.Server, got map[raft.ServerID]*autopilot.ServerStats) map[raft.ServerID]*autopilot.ServerStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[raft.ServerID]*autopilot.ServerStats, len(servers))
	seen := make(map[raft.ServerID]seenStats, len(servers))
	for id := range servers {
		if id == d.localID {
			st := d.s.RaftStats()
			out[id] = &autopilot.ServerStats{LastContact: st.LastContact.D(), LastTerm: st.LastTerm, LastIndex: st.LastIndex}
			continue
		}
		if st, ok := got[id]; ok && st != nil {
			out[id] = st
			seen[id] = seenStats{stats: *st, at: now}
			continue
		}
		if prev, ok := d.seen[id]; ok {
			st := prev.stats
			if st.LastContact >= 0 {
				st.LastContact += now.Sub(prev.at)
			}
			out[id] = &st
			seen[id] = prev
		}
	}
	// Servers no longer asked about (left, or gone from gossip) are
	// forgotten.
	d.seen = seen
	return out
}

// RemoveFailedServer implements autopilot.ApplicationIntegration: it
// removes the server from raft, then forces it out of gossip, in the
// background as raft-autopilot wants. A removal already in flight is not
// started again.
func (d *autopilotDelegate) RemoveFailedServer(srv *autopilot.Server) {
	d.mu.Lock()
	if d.removing[srv.ID] {
		d.mu.Unlock()
		return
	}
	d.removing[srv.ID] = true
	d.mu.Unlock()
	id, name := srv.ID, srv.Name
	d.removals.Add(1)
	go func() {
		defer d.removals.Done()
		defer func() {
			d.mu.Lock()
			delete(d.removing, id)
			d.mu.Unlock()
		}()
		if err := d.s.RemovePeer(string(id), ""); err != nil && !structs.IsNotFound(err) {
			d.logger.Warn("removing a failed server from raft", "id", id, "name", name, "error", err)
			return
		}
		d.logger.Info("removed a failed server from raft", "id", id, "name", name)
		if name == "" {
			return
		}
		if err := d.backend.ForceLeave(name); err != nil {
			d.logger.Warn("forcing a failed server out of gossip", "name", name, "error", err)
		}
	}()
}

// RaftStats returns this server's raft stats, as the leader's autopilot
// asks for them. LastContact is 0 on the leader, and -1ns when this
// server never heard from one.
func (s *Server) RaftStats() structs.RaftStats {
	stats := s.raft.Stats()
	term, _ := strconv.ParseUint(stats["last_log_term"], 10, 64)
	out := structs.RaftStats{LastTerm: term, LastIndex: s.raft.LastIndex()}
	if s.raft.State() != raft.Leader {
		if lc := s.raft.LastContact(); lc.IsZero() {
			out.LastContact = -1
		} else {
			out.LastContact = structs.Duration(time.Since(lc))
		}
	}
	return out
}

// AutopilotConfiguration returns the autopilot configuration in force:
// the stored one, or this server's defaults (with indexes 0) while none
// is stored.
func (s *Server) AutopilotConfiguration() *structs.AutopilotConfig {
	rt := s.store.Read()
	_, c, err := rt.AutopilotConfig(nil)
	rt.Abort()
	if err == nil && c != nil {
		return c
	}
	r := &s.autopilot
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.defaults != nil {
		d := *r.defaults
		return &d
	}
	d := DefaultAutopilotConfig()
	return &d
}

// AutopilotSetConfiguration stores cfg through raft; with cas, only when
// casIndex is the stored configuration's ModifyIndex (0 while none is
// stored). It reports whether cfg was stored. Enabling CleanupDeadServers
// takes effect at once: the leader looks for dead servers right after.
func (s *Server) AutopilotSetConfiguration(cfg *structs.AutopilotConfig, cas bool, casIndex uint64) (bool, error) {
	c := *cfg
	c.CreateIndex, c.ModifyIndex = 0, 0
	resp, err := s.Apply(fsm.AutopilotSetConfigType, &fsm.AutopilotSetConfigRequest{Config: c, CAS: cas, CASIndex: casIndex})
	if err != nil {
		return false, err
	}
	ok, _ := resp.(bool)
	if ap, _ := s.autopilot.get(); ok && ap != nil && s.IsLeader() {
		ap.RemoveDeadServers()
	}
	return ok, nil
}

// autopilotState returns this term's autopilot state, waiting up to
// autopilotStateWait (or until ctx ends) for a new leader's first.
func (s *Server) autopilotState(ctx context.Context) (*autopilot.State, error) {
	ap, d := s.autopilot.get()
	if ap == nil {
		return nil, ErrAutopilotNotRunning
	}
	if !s.IsLeader() {
		return nil, ErrAutopilotNotLeader
	}
	select {
	case <-d.stateReady():
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(autopilotStateWait):
		return nil, ErrAutopilotNotRunning
	}
	st := ap.GetState()
	if !s.IsLeader() {
		return nil, ErrAutopilotNotLeader
	}
	if st == nil || len(st.Servers) == 0 {
		return nil, ErrAutopilotNotRunning
	}
	return st, nil
}

// AutopilotHealth returns the health of the servers, as the leader's
// autopilot last saw it (GET /v1/operator/autopilot/health).
func (s *Server) AutopilotHealth(ctx context.Context) (*structs.AutopilotHealthReply, error) {
	st, err := s.autopilotState(ctx)
	if err != nil {
		return nil, err
	}
	return healthReply(st), nil
}

// AutopilotState returns the leader's autopilot state (GET
// /v1/operator/autopilot/state).
func (s *Server) AutopilotState(ctx context.Context) (*structs.AutopilotState, error) {
	st, err := s.autopilotState(ctx)
	if err != nil {
		return nil, err
	}
	return stateReply(st), nil
}

// levelWriter hands each line hclog writes to a slog logger at the level
// hclog gave it.
type levelWriter struct{ logger *slog.Logger }

func (w levelWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		level := slog.LevelInfo
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "[ERROR]"):
			level = slog.LevelError
		case strings.HasPrefix(line, "[WARN]"):
			level = slog.LevelWarn
		case strings.HasPrefix(line, "[DEBUG]"), strings.HasPrefix(line, "[TRACE]"):
			level = slog.LevelDebug
		}
		w.logger.Log(context.Background(), level, line)
	}
	return len(p), nil
}

var _ autopilot.ApplicationIntegration = (*autopilotDelegate)(nil)
