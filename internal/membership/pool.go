package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
	"github.com/hashicorp/serf/serf"
)

// ErrShutdown is returned by the methods of a pool after Shutdown.
var ErrShutdown = errors.New("membership: pool is shut down")

// ErrUnknownMember is returned by ForceLeave for a name that is not in
// Members.
var ErrUnknownMember = errors.New("member not found")

// serfEventBuffer is the capacity of the channel serf sends events on. It
// is larger than serf's internal queue (1024) so that, after Shutdown,
// serf's forwarding goroutine can never block on it (see eventLoop).
const serfEventBuffer = 4096

// DefaultRetryInterval is RetryJoin's wait between attempts when given
// none, as Consul's retry_interval.
const DefaultRetryInterval = 30 * time.Second

// Pool is one running gossip pool: this agent's serf member and its view
// of the others. Its methods are safe for concurrent use.
type Pool struct {
	kind     string // "lan" or "wan", for errors
	name     string // member name
	addr     string // bound host:port
	logger   *slog.Logger
	serf     *serf.Serf
	serfCh   chan serf.Event
	queueLen int
	tagsFor  func(map[string]string) (map[string]string, error)

	shut    atomic.Bool   // set when Shutdown starts
	stop    chan struct{} // closed once serf is shut down
	wg      sync.WaitGroup
	shutMu  sync.Mutex // serialises Shutdown
	shutErr error      // guarded by shutMu

	// The peers file (peers.go); peersPath is empty without a snapshot.
	peersPath        string
	peersDirty       chan struct{}
	rejoinAfterLeave bool
	peersMu          sync.Mutex  // held while the file is written or removed
	leaving          atomic.Bool // set by Leave: the file is gone for good

	subMu      sync.Mutex
	subs       map[*subscriber]struct{} // guarded by subMu
	subsClosed bool                     // guarded by subMu: no new subscribers
	dropped    atomic.Uint64
}

// New validates cfg and starts a serf member listening on cfg's address.
// It does not join anyone: call Join or RetryJoin. The caller must call
// Shutdown (after Leave, for a graceful exit).
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("pool", cfg.kind())
	tags, err := cfg.tags(cfg.Tags)
	if err != nil {
		return nil, err
	}
	queueLen := cfg.SubscriberQueue
	if queueLen == 0 {
		queueLen = DefaultSubscriberQueue
	}

	serfCh := make(chan serf.Event, serfEventBuffer)
	sc := cfg.serfConfig(serfCh, tags, newStdLogger(logger))
	fail := func(err error) (*Pool, error) {
		return nil, fmt.Errorf("membership: start %s pool for %q on %s: %w",
			cfg.kind(), cfg.memberName(), net.JoinHostPort(sc.MemberlistConfig.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	// Everything that commonly fails (the listeners, the advertise
	// address, the snapshot file) is tried before serf.Create: serf
	// starts goroutines that it never stops when Create fails.
	nt, err := listen(sc.MemberlistConfig)
	if err != nil {
		return fail(err)
	}
	if _, _, err := nt.FinalAdvertiseAddr(sc.MemberlistConfig.AdvertiseAddr, sc.MemberlistConfig.AdvertisePort); err != nil {
		_ = nt.Shutdown()
		return fail(err)
	}
	var peers []string
	if cfg.SnapshotPath != "" {
		f, err := os.OpenFile(cfg.SnapshotPath, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			_ = nt.Shutdown()
			return fail(err)
		}
		f.Close()
		if peers, err = readPeers(peersPath(cfg.SnapshotPath)); err != nil {
			_ = nt.Shutdown()
			return fail(err)
		}
	}
	s, err := serf.Create(sc)
	if err != nil {
		_ = nt.Shutdown()
		return fail(err)
	}
	p := &Pool{
		kind:     cfg.kind(),
		name:     cfg.memberName(),
		addr:     net.JoinHostPort(sc.MemberlistConfig.BindAddr, strconv.Itoa(sc.MemberlistConfig.BindPort)),
		logger:   logger,
		serf:     s,
		serfCh:   serfCh,
		queueLen: queueLen,
		tagsFor:  cfg.tags,
		stop:     make(chan struct{}),
		subs:     make(map[*subscriber]struct{}),

		peersDirty:       make(chan struct{}, 1),
		rejoinAfterLeave: cfg.RejoinAfterLeave,
	}
	if cfg.SnapshotPath != "" {
		p.peersPath = peersPath(cfg.SnapshotPath)
	}
	p.wg.Add(1)
	go p.eventLoop()
	if p.peersPath != "" {
		p.wg.Add(2)
		go p.persistPeers()
		go p.rejoinPeers(peers)
	}
	return p, nil
}

// listen opens memberlist's TCP and UDP listeners for ml and makes them
// its transport, filling in the real port when ml.BindPort is 0.
func listen(ml *memberlist.Config) (*memberlist.NetTransport, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{ml.BindAddr},
		BindPort:  ml.BindPort,
		Logger:    ml.Logger,
	}
	// With port 0 the kernel picks a free TCP port, which may be taken
	// for UDP: try a few times, as memberlist itself does.
	attempts := 1
	if ml.BindPort == 0 {
		attempts = 10
	}
	var err error
	for range attempts {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			if ml.BindPort == 0 {
				ml.BindPort = nt.GetAutoBindPort()
				ml.AdvertisePort = ml.BindPort
			}
			ml.Transport = nt
			return nt, nil
		}
	}
	return nil, err
}

// Name returns this member's name in the pool ("<node>.<dc>" in a WAN pool).
func (p *Pool) Name() string { return p.name }

// Addr returns the bound host:port, with the real port when Config.BindPort
// was 0. Other members reach this one at LocalMember's Addr and Port,
// which differ when an advertise address is set or the bind address is
// "0.0.0.0".
func (p *Pool) Addr() string { return p.addr }

// Done is closed once Shutdown has stopped serf.
func (p *Pool) Done() <-chan struct{} { return p.stop }

// Join contacts each of addrs ("host" or "host:port"; the port defaults to
// this pool's bound port) and merges its member list. It returns how many
// addresses answered. An error with n > 0 means some failed and some
// answered: the pool has joined. User events fired before the join are not
// replayed.
func (p *Pool) Join(addrs []string) (int, error) {
	if p.shut.Load() {
		return 0, ErrShutdown
	}
	if len(addrs) == 0 {
		return 0, fmt.Errorf("membership: %s join: no addresses", p.kind)
	}
	n, err := p.serf.Join(addrs, true)
	if err != nil {
		return n, fmt.Errorf("membership: %s join %v: %d joined: %w", p.kind, addrs, n, err)
	}
	return n, nil
}

// RetryJoin calls Join every interval (DefaultRetryInterval if interval
// <= 0) until one attempt reaches at least one address, and returns that
// count. It blocks: the caller runs it in a goroutine it owns if needed.
// It gives up when ctx ends or the pool shuts down, returning an error
// that wraps ctx.Err() or ErrShutdown and says what the last attempt got.
func (p *Pool) RetryJoin(ctx context.Context, addrs []string, interval time.Duration) (int, error) {
	if interval <= 0 {
		interval = DefaultRetryInterval
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("membership: %s retry join %v: gave up after %d attempts: %w (last: %v)", p.kind, addrs, attempt-1, ctx.Err(), last)
		case <-p.stop:
			return 0, fmt.Errorf("membership: %s retry join %v: %w", p.kind, addrs, ErrShutdown)
		case <-timer.C:
		}
		n, err := p.Join(addrs)
		if n > 0 {
			if err != nil {
				p.logger.Warn("membership: retry join: some addresses failed", "joined", n, "err", err)
			}
			return n, nil
		}
		if errors.Is(err, ErrShutdown) {
			return 0, fmt.Errorf("membership: %s retry join %v: %w", p.kind, addrs, err)
		}
		last = err
		p.logger.Warn("membership: retry join failed", "attempt", attempt, "retry_in", interval, "err", err)
		timer.Reset(interval)
	}
}

// Leave leaves the pool gracefully: the others see this member as left
// (StatusLeft) rather than failed. It blocks until the leave has been
// broadcast (bounded by the broadcast timeout and leave propagate delay).
// Call Shutdown afterwards; the pool cannot rejoin.
func (p *Pool) Leave() error {
	if p.shut.Load() {
		return ErrShutdown
	}
	if err := p.serf.Leave(); err != nil {
		return fmt.Errorf("membership: %s leave %q: %w", p.kind, p.name, err)
	}
	if p.peersPath != "" && !p.rejoinAfterLeave {
		// As serf's snapshot does: after a leave, a restart does not
		// rejoin by itself.
		p.peersMu.Lock()
		p.leaving.Store(true)
		err := os.Remove(p.peersPath)
		p.peersMu.Unlock()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("membership: %s leave %q: %w", p.kind, p.name, err)
		}
	}
	return nil
}

// ForceLeave marks a failed member as left, which stops reconnection
// attempts and reaping waits; with prune it is also removed from the
// member list at once (EventMemberReap). node is a name as Members reports
// it. An alive member refutes the leave and stays. The force-leave is
// gossiped, so every member converges; an error after the local change
// means only that the broadcast did not go out within the broadcast
// timeout.
func (p *Pool) ForceLeave(node string, prune bool) error {
	if p.shut.Load() {
		return ErrShutdown
	}
	known := false
	for _, m := range p.serf.Members() {
		if m.Name == node {
			known = true
			break
		}
	}
	if !known {
		return fmt.Errorf("membership: %s force-leave %q: %w", p.kind, node, ErrUnknownMember)
	}
	var err error
	if prune {
		err = p.serf.RemoveFailedNodePrune(node)
	} else {
		err = p.serf.RemoveFailedNode(node)
	}
	if err != nil {
		return fmt.Errorf("membership: %s force-leave %q: %w", p.kind, node, err)
	}
	return nil
}

// Members returns this member's view of the pool, sorted by name,
// including left and failed members until they are reaped.
func (p *Pool) Members() []Member {
	out := fromSerfAll(p.serf.Members())
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LocalMember returns this member as the pool sees it.
func (p *Pool) LocalMember() Member {
	return fromSerf(p.serf.LocalMember())
}

// SetTags replaces this member's tags (the pool's "dc" and "id" are kept)
// and gossips them; the others see EventMemberUpdate. Encoded tags must
// fit memberlist's 512-byte metadata limit.
func (p *Pool) SetTags(tags map[string]string) error {
	if p.shut.Load() {
		return ErrShutdown
	}
	all, err := p.tagsFor(tags)
	if err != nil {
		return err
	}
	if err := p.serf.SetTags(all); err != nil {
		return fmt.Errorf("membership: %s set tags of %q: %w", p.kind, p.name, err)
	}
	return nil
}

// UserEvent gossips a user event to every member (this one included).
// Events are not coalesced. Name plus payload are limited to 512 bytes
// (serf's default).
func (p *Pool) UserEvent(name string, payload []byte) error {
	if p.shut.Load() {
		return ErrShutdown
	}
	if name == "" {
		return fmt.Errorf("membership: %s user event: name is required", p.kind)
	}
	if err := p.serf.UserEvent(name, payload, false); err != nil {
		return fmt.Errorf("membership: %s user event %q: %w", p.kind, name, err)
	}
	return nil
}

// Coordinate returns this member's network coordinate (for /v1/coordinate).
func (p *Pool) Coordinate() (*coordinate.Coordinate, error) {
	c, err := p.serf.GetCoordinate()
	if err != nil {
		return nil, fmt.Errorf("membership: %s coordinate: %w", p.kind, err)
	}
	return c, nil
}

// GetCachedCoordinate returns the last coordinate node (a name as Members
// reports it) sent this member, if any.
func (p *Pool) GetCachedCoordinate(node string) (*coordinate.Coordinate, bool) {
	return p.serf.GetCachedCoordinate(node)
}

// Shutdown stops the pool without leaving (the others will see this member
// fail; call Leave first for a graceful exit), closes every subscriber
// channel and waits for the pool's goroutines. Serf's own goroutines end
// on their next wake-up, at most a TCP timeout later. Safe to call more
// than once; later calls return the first call's result.
func (p *Pool) Shutdown() error {
	p.shutMu.Lock()
	defer p.shutMu.Unlock()
	if p.shut.Swap(true) {
		return p.shutErr
	}
	if err := p.serf.Shutdown(); err != nil {
		p.shutErr = fmt.Errorf("membership: %s shutdown %q: %w", p.kind, p.name, err)
	}
	close(p.stop)
	p.wg.Wait()
	return p.shutErr
}
