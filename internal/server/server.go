// Package server runs the raft side of a Trellis server: the raft node and
// its stores, the path by which writes reach the FSM, and the leader's own
// duties (session TTL timers, tombstone reaping, autopilot). Reads do not
// pass through here: they go straight to the state store.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Config is what a server needs to start.
type Config struct {
	NodeID   string
	NodeName string
	// DataDir holds the raft log and snapshots; empty means in memory
	// (dev mode).
	DataDir string
	// RaftAddr is the TCP address raft binds when DataDir is set
	// ("127.0.0.1:8300"; port 0 picks one); in memory, it is the name the
	// server reports itself by.
	RaftAddr string
	Logger   *slog.Logger
	// TombstoneTTL is how long KV tombstones are kept; 0 means 15 minutes.
	TombstoneTTL time.Duration

	// Transport, when set, is used instead of the one New would build;
	// the in-process test harness joins servers with raft's in-memory
	// transports this way.
	Transport raft.Transport
	// Bootstrap lists the voters of a new cluster, this server among
	// them. Empty means a cluster of this server alone. It is ignored
	// when the data dir already holds raft state.
	Bootstrap []raft.Server
	// NoBootstrap starts raft without bootstrapping a new cluster: the
	// server waits to be bootstrapped (BootstrapCluster, once
	// bootstrap_expect servers are seen) or added by a leader.
	NoBootstrap bool
	// ElectionTimeout scales raft's timers (heartbeat and election
	// timeouts; the leader lease is half of it). Zero means 100ms for a
	// lone server, which has no one to wait for, and 1s otherwise.
	ElectionTimeout time.Duration
	// ConnectCA, when set, enables Connect: the leader runs the CA (see
	// connect_ca.go).
	ConnectCA *ConnectCAOptions
}

// ErrNotLeader is returned for writes while this server has no
// leadership: raft refused the entry, so it was not applied.
var ErrNotLeader = errors.New("No cluster leader")

// ErrLeadershipLost is returned when this server lost leadership while a
// write was in flight. The outcome is unknown: the entry may yet commit
// under the next leader, or be lost. A caller must read the state back, or
// repeat a write that is safe to repeat, before relying on either.
var ErrLeadershipLost = errors.New("leadership lost while committing log")

// Server is a raft node with its FSM and state store.
type Server struct {
	cfg    Config
	logger *slog.Logger
	store  *state.Store
	fsm    *fsm.FSM
	raft   *raft.Raft

	closers []io.Closer
	trans   raft.Transport

	// readyForReads is true while this server leads and has applied
	// everything committed before its term.
	readyForReads atomic.Bool

	leaderMu sync.Mutex
	leaderCh chan struct{} // guarded by leaderMu: closed at the next leadership change

	sessionMu     sync.Mutex
	sessionTimers map[string]*time.Timer // guarded by sessionMu; keyed by lower-cased session ID
	shutdown      bool                   // guarded by sessionMu; set when Shutdown begins

	shutdownCh chan struct{}   // closed when Shutdown begins
	autopilot  autopilotRunner // see autopilot.go; its runner is one of wg's
	ca         caState         // see connect_ca.go
	// wg owns monitorLeadership and every session expiry in progress;
	// Shutdown waits for them before stopping raft.
	wg sync.WaitGroup
}

// New starts a single-voter raft node over store. With a DataDir that holds
// earlier state, the state is restored from the latest snapshot and log.
func New(cfg Config, store *state.Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.TombstoneTTL == 0 {
		cfg.TombstoneTTL = 15 * time.Minute
	}
	s := &Server{
		cfg:           cfg,
		logger:        cfg.Logger.With("component", "server"),
		store:         store,
		fsm:           fsm.New(store, cfg.Logger.With("component", "fsm")),
		sessionTimers: make(map[string]*time.Timer),
		leaderCh:      make(chan struct{}),
		shutdownCh:    make(chan struct{}),
	}
	if err := s.setupRaft(); err != nil {
		s.closeStores()
		return nil, err
	}
	s.wg.Add(1)
	go s.monitorLeadership()
	return s, nil
}

func (s *Server) setupRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	timeout := s.cfg.ElectionTimeout
	if timeout == 0 {
		// A lone voter has no one to wait for: elect quickly.
		timeout = 100 * time.Millisecond
		if len(s.cfg.Bootstrap) > 1 {
			timeout = time.Second
		}
	}
	rc.HeartbeatTimeout = timeout
	rc.ElectionTimeout = timeout
	rc.LeaderLeaseTimeout = timeout / 2
	rc.CommitTimeout = 5 * time.Millisecond
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	// raft logs through hclog; its lines go to the agent's logger, so that
	// -log-json and the log destination apply to them too.
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error,
		Output: slogWriter{s.logger}, DisableTime: true})

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		addr   raft.ServerAddress
	)
	if s.cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable = mem, mem
		// In memory the log is the agent's largest heap: snapshot often
		// and keep a short tail, so memory follows the state, not the
		// write history.
		rc.SnapshotInterval = 5 * time.Second
		rc.SnapshotThreshold = 1024
		rc.TrailingLogs = 1024
		snaps = raft.NewInmemSnapshotStore()
		// The address is only a name in memory, but it is what
		// /v1/status/leader and /v1/status/peers report, and clients
		// expect host:port there.
		if s.cfg.Transport != nil {
			addr, s.trans = s.cfg.Transport.LocalAddr(), s.cfg.Transport
		} else {
			name := s.cfg.RaftAddr
			if name == "" {
				name = s.cfg.NodeID
			}
			a, t := raft.NewInmemTransport(raft.ServerAddress(name))
			addr, s.trans = a, t
		}
	} else {
		dir := filepath.Join(s.cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("server: data dir: %w", err)
		}
		bolt, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		if err != nil {
			return fmt.Errorf("server: raft log store: %w", err)
		}
		s.closers = append(s.closers, bolt)
		cache, err := raft.NewLogCache(512, bolt)
		if err != nil {
			return err
		}
		logs, stable = cache, bolt
		snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
		if err != nil {
			return fmt.Errorf("server: snapshot store: %w", err)
		}
		if s.cfg.Transport != nil {
			addr, s.trans = s.cfg.Transport.LocalAddr(), s.cfg.Transport
		} else {
			bindAddr := s.cfg.RaftAddr
			if bindAddr == "" {
				bindAddr = "127.0.0.1:0"
			}
			tcpAddr, err := net.ResolveTCPAddr("tcp", bindAddr)
			if err != nil {
				return fmt.Errorf("server: raft address %q: %w", bindAddr, err)
			}
			var advertise net.Addr = tcpAddr
			if tcpAddr.Port == 0 {
				advertise = nil // advertise the port the listener got
			}
			t, err := raft.NewTCPTransportWithLogger(bindAddr, advertise, 3, 10*time.Second, rc.Logger)
			if err != nil {
				return fmt.Errorf("server: raft transport: %w", err)
			}
			addr, s.trans = t.LocalAddr(), t
		}
	}
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return err
	}
	if !has && !s.cfg.NoBootstrap {
		conf := raft.Configuration{Servers: s.cfg.Bootstrap}
		if len(conf.Servers) == 0 {
			conf.Servers = []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: addr}}
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, s.trans, conf); err != nil {
			return fmt.Errorf("server: bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, s.trans)
	if err != nil {
		return fmt.Errorf("server: start raft: %w", err)
	}
	s.raft = r
	return nil
}

func (s *Server) closeStores() {
	if c, ok := s.trans.(io.Closer); ok {
		c.Close()
	}
	for _, c := range s.closers {
		c.Close()
	}
}

// Store returns the state store.
func (s *Server) Store() *state.Store { return s.store }

// WaitForLeader blocks until this server leads and is ready to serve
// consistent reads, or ctx ends.
func (s *Server) WaitForLeader(ctx context.Context) error {
	for {
		if s.raft.State() == raft.Leader {
			// The leader loop is finishing its barrier: moments, at start.
			for !s.readyForReads.Load() {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Millisecond):
				}
				if s.raft.State() != raft.Leader {
					break
				}
			}
			if s.readyForReads.Load() {
				return nil
			}
			continue
		}
		obs := make(chan raft.Observation, 1)
		o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.RaftState)
			return ok
		})
		s.raft.RegisterObserver(o)
		if s.raft.State() == raft.Leader {
			s.raft.DeregisterObserver(o)
			return nil
		}
		select {
		case <-obs:
			s.raft.DeregisterObserver(o)
		case <-ctx.Done():
			s.raft.DeregisterObserver(o)
			return ctx.Err()
		}
	}
}

// IsLeader reports whether this server leads.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's raft address, or "" when there is none.
func (s *Server) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Peers returns the raft addresses of the voters.
func (s *Server) Peers() ([]string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.Address))
		}
	}
	return out, nil
}

// LastContact is the time since the leader was last heard from; zero on
// the leader itself.
func (s *Server) LastContact() time.Duration {
	if s.IsLeader() {
		return 0
	}
	lc := s.raft.LastContact()
	if lc.IsZero() {
		return 0
	}
	return time.Since(lc)
}

// VerifyLeader confirms leadership with a quorum, for consistent reads.
func (s *Server) VerifyLeader() error {
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return ErrNotLeader
	}
	if !s.readyForReads.Load() {
		return ErrNotReady
	}
	return nil
}

// ErrNotReady is returned for consistent reads on a new leader that has not
// yet applied every entry its predecessors committed.
var ErrNotReady = errors.New("Not ready to serve consistent reads")

// Apply commits a command and returns what the FSM returned for it. An
// error the FSM returned is returned as the error.
func (s *Server) Apply(t fsm.MessageType, msg any) (any, error) {
	buf, err := s.fsm.Encode(t, msg)
	if err != nil {
		return nil, err
	}
	f := s.raft.Apply(buf, 30*time.Second)
	if err := f.Error(); err != nil {
		return nil, applyError(err)
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, rejectedError{err}
	}
	return resp, nil
}

// rejectedError is an error the FSM returned: the entry committed and was
// refused, so nothing changed. Its text is the FSM's.
type rejectedError struct{ error }

func (e rejectedError) Unwrap() error { return e.error }

// outcomeUnknown reports whether an Apply error leaves open whether the
// entry committed (a timeout, a lost leadership), as opposed to an entry
// that was refused before or by the FSM.
func outcomeUnknown(err error) bool {
	var rej rejectedError
	return err != nil && !errors.As(err, &rej) && !errors.Is(err, ErrNotLeader)
}

// applyError maps raft's Apply errors to this package's: ErrNotLeader when
// the entry was refused, ErrLeadershipLost when its outcome is unknown.
func applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrLeadershipLost
	}
	return err
}

// Stats returns raft's statistics.
func (s *Server) Stats() map[string]string { return s.raft.Stats() }

// Shutdown stops the session timers, the leader loops and raft, and
// closes the stores. Timers go first: an expiry must not reach raft while
// it shuts down. Calls after the first return nil.
func (s *Server) Shutdown() error {
	s.sessionMu.Lock()
	if s.shutdown {
		s.sessionMu.Unlock()
		return nil
	}
	s.shutdown = true
	s.stopSessionTimersLocked()
	s.sessionMu.Unlock()
	close(s.shutdownCh)
	s.wg.Wait()
	err := s.raft.Shutdown().Error()
	s.closeStores()
	return err
}

// monitorLeadership runs the leader's duties while this server leads.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	var stopLeader context.CancelFunc
	var leaderDone chan struct{}
	stop := func() {
		if stopLeader != nil {
			stopLeader()
			<-leaderDone
			stopLeader = nil
		}
	}
	defer stop()
	for {
		select {
		case <-s.shutdownCh:
			return
		case isLeader := <-s.raft.LeaderCh():
			stop()
			s.notifyLeadership()
			if !isLeader {
				s.stopSessionTimers()
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			stopLeader, leaderDone = cancel, make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				s.leaderLoop(ctx)
			}(leaderDone)
		}
	}
}

func (s *Server) leaderLoop(ctx context.Context) {
	// A barrier makes every committed entry visible in the store before
	// timers are rebuilt from it.
	if err := s.raft.Barrier(time.Minute).Error(); err != nil {
		s.logger.Error("leader barrier failed", "error", err)
		return
	}
	s.initSessionTimers()
	// Until the barrier above, a new leader's store may lack entries that
	// an earlier leader acknowledged: consistent reads wait for it.
	s.readyForReads.Store(true)
	defer s.readyForReads.Store(false)
	defer s.runConnectCALeader(ctx)()
	reap := time.NewTicker(s.cfg.TombstoneTTL / reapSamples)
	defer reap.Stop()
	var horizon tombstoneHorizon
	for {
		select {
		case <-ctx.Done():
			return
		case <-reap.C:
			s.reapTombstones(horizon.next(s.store.MaxIndex("kvs", "tombstones")))
		}
	}
}

func (s *Server) reapTombstones(idx uint64) {
	if idx == 0 {
		return
	}
	if _, err := s.Apply(fsm.TombstoneReapType, &fsm.TombstoneReapRequest{Index: idx}); err != nil {
		s.logger.Warn("tombstone reap failed", "error", err)
	}
}

// reapSamples is how many reap ticks make up one tombstone TTL.
const reapSamples = 4

// tombstoneHorizon tracks the KV index as it was one tombstone TTL ago:
// sampled every TTL/reapSamples, the oldest of the last reapSamples samples
// was taken a full TTL before the current tick. Tombstones at or below it
// have been kept for at least the TTL, so they are in no blocking query's
// recent past. The zero value is ready to use; a new leader starts afresh.
type tombstoneHorizon struct {
	samples [reapSamples]uint64 // ring of the last samples
	n       int                 // samples taken
}

// next records cur, the KV index now, and returns the index to reap up
// to: the sample taken reapSamples ticks ago, or 0 (reap nothing) until
// there is one.
func (h *tombstoneHorizon) next(cur uint64) uint64 {
	i := h.n % reapSamples
	old := h.samples[i]
	if h.n < reapSamples {
		old = 0
	}
	h.samples[i] = cur
	h.n++
	return old
}

// ParseSessionTTL parses and checks a session TTL; "" and 0 mean none.
// Its error texts are Consul's, which clients match on: "Session TTL '%s'
// invalid: %v" when it does not parse, "Invalid Session TTL '%d', must be
// between [%v=%v]" when it is out of range.
func ParseSessionTTL(ttl string) (time.Duration, error) {
	if ttl == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(ttl)
	if err != nil {
		// Trellis also takes a bare number of seconds; otherwise the
		// reason is Go's, as in Consul.
		var lerr error
		if d, lerr = structs.ParseDuration(ttl); lerr != nil {
			return 0, fmt.Errorf("Session TTL '%s' invalid: %v", ttl, err)
		}
	}
	if d != 0 && (d < structs.SessionTTLMin || d > structs.SessionTTLMax) {
		return 0, fmt.Errorf("Invalid Session TTL '%d', must be between [%v=%v]",
			d, time.Duration(structs.SessionTTLMin), time.Duration(structs.SessionTTLMax))
	}
	return d, nil
}

// slogWriter hands each line hclog writes to a slog logger.
type slogWriter struct{ logger *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if line != "" {
			w.logger.Error(line)
		}
	}
	return len(p), nil
}
