// Package agent is the composition root of a Trellis agent: it builds the
// state store, the raft server, the HTTP and DNS interfaces and the check
// runners from a runtime config, keeps the agent's own services and checks,
// and keeps the catalog equal to them (anti-entropy).
package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/dns"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
	"github.com/trellis-mesh/trellis/internal/version"
)

// Options tune an agent beyond its user config; tests shorten the timers.
type Options struct {
	Logger *slog.Logger
	// Args are the command-line arguments the config was loaded from;
	// Reload loads them again.
	Args []string
	// SyncInterval is the anti-entropy period; default 1 minute.
	SyncInterval time.Duration
	// ReapInterval is how often critical services are checked for
	// deregistration; default 30 seconds.
	ReapInterval time.Duration
	// MinDeregisterAfter is the shortest deregister_critical_service_after
	// honoured; default 1 minute, as Consul.
	MinDeregisterAfter time.Duration
	// GossipTiming, when set, replaces the LAN pool's timers (tests use
	// membership.FastTiming to see failures within a second).
	GossipTiming *membership.Timing
	// ReconcileInterval is how often the leader reconciles the pool's
	// members into the catalog besides on every change; default 30s.
	ReconcileInterval time.Duration
	// CoordinateUpdateInterval is how often the agent sends its network
	// coordinate to the servers when it has moved; default 15 seconds.
	CoordinateUpdateInterval time.Duration
	// LeafRenewAfter, when set, replaces the timer that fires when a
	// cached Connect leaf is due for renewal: it gets the wait the agent
	// chose, and the leaf is renewed when the channel it returns sends.
	LeafRenewAfter func(d time.Duration) <-chan time.Time
	// LeafIdleAfter, when set, replaces the timer after which a cached
	// Connect leaf nobody asked for is dropped (default 72 hours after
	// the last request): it gets the wait, and the leaf is dropped when
	// the channel it returns sends, unless it was asked for since.
	LeafIdleAfter func(d time.Duration) <-chan time.Time
	// LeafSigned, when set, is called after the leader signed a leaf for
	// a cached service and before the agent keeps it (tests hold it there
	// to change the roots meanwhile).
	LeafSigned func(service string)
	// ProxySnapshots, when set, receives the snapshots of the local
	// connect-proxies (proxycfg.go) instead of the agent's xDS server.
	ProxySnapshots proxycfg.Publisher
}

// Agent is a running Trellis agent.
type Agent struct {
	cfg      *config.RuntimeConfig
	opts     Options
	logger   *slog.Logger
	nodeName string
	nodeID   string
	started  time.Time

	store   *state.Store
	srv     *server.Server
	api     *httpapi.API
	metrics *metrics

	// Cluster plumbing, for servers with a data dir: the server port's
	// mux (raft and RPC), the RPC server for forwarded requests, and the
	// client that forwards them.
	mux        *rpc.Mux
	rpcServer  *rpc.Server
	rpcClient  *rpc.Client
	serverPort int // the bound server port

	httpServers []*http.Server
	httpAddrs   []string
	// endRequests cancels the context of every HTTP request, so that
	// blocking queries answer at Close instead of holding up shutdown.
	endRequests context.CancelFunc
	dnsServer   *dns.Server
	xds         xdsServing // xds.go

	syncMu   sync.Mutex // held across a change's sync so syncs apply in order
	mu       sync.Mutex
	services map[string]*localService // guarded by mu
	checks   map[string]*localCheck   // guarded by mu
	// servicesCh is closed and replaced at each change to services.
	servicesCh chan struct{} // guarded by mu
	closed     bool          // guarded by mu: Close has stopped the check runners
	// heldSidecarPorts, while the agent starts, are the ports of persisted
	// sidecars not yet restored; guarded by mu.
	heldSidecarPorts map[int]bool
	// view is what alias checks read of services and checks (alias.go);
	// replaced under mu, read without it.
	view atomic.Pointer[localView]

	// applyMu is held from taking queued check results to applying them,
	// so that a result is never applied after a later one.
	applyMu sync.Mutex
	pendMu  sync.Mutex
	pending map[string]checkResult // guarded by pendMu
	pendCh  chan struct{}

	eventMu sync.Mutex
	events  []*structs.UserEvent // guarded by eventMu; a ring of the latest
	eventCh chan struct{}        // guarded by eventMu; closed at the next event

	lan       *membership.Pool     // the datacenter's gossip pool
	wan       *membership.Pool     // servers only: the pool of every datacenter's servers
	stopJoins []context.CancelFunc // end the retry-joins that run

	leaveCh   chan struct{}
	leaveOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New starts an agent: raft and the state store, the agent's node
// registration, its configured services and checks, and its listeners.
// Close stops it.
func New(ctx context.Context, cfg *config.RuntimeConfig, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Minute
	}
	if opts.ReapInterval == 0 {
		opts.ReapInterval = 30 * time.Second
	}
	if opts.MinDeregisterAfter == 0 {
		opts.MinDeregisterAfter = time.Minute
	}
	if opts.ReconcileInterval == 0 {
		opts.ReconcileInterval = 30 * time.Second
	}
	if opts.CoordinateUpdateInterval <= 0 {
		opts.CoordinateUpdateInterval = defaultCoordinateInterval
	}
	a := &Agent{
		cfg:        cfg,
		opts:       opts,
		logger:     opts.Logger,
		nodeName:   cfg.NodeName,
		started:    time.Now(),
		services:   make(map[string]*localService),
		checks:     make(map[string]*localCheck),
		servicesCh: make(chan struct{}),
		pending:    make(map[string]checkResult),
		pendCh:     make(chan struct{}, 1),
		eventCh:    make(chan struct{}),
		leaveCh:    make(chan struct{}),
		done:       make(chan struct{}),
	}
	a.view.Store(newLocalView())
	var err error
	if a.nodeID, err = a.loadNodeID(); err != nil {
		return nil, err
	}
	if cfg.Server {
		if err := a.startServer(); err != nil {
			return nil, err
		}
	} else {
		// A client agent keeps no raft state: it reaches the catalog
		// through the servers.
		a.rpcClient = rpc.NewClient(rpc.ClientConfig{})
	}
	a.metrics = newMetrics(a)
	if err := a.start(ctx); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Agent) start(ctx context.Context) error {
	if err := a.startGossip(); err != nil {
		return err
	}
	if err := a.startAutopilot(); err != nil {
		return err
	}
	standalone := a.cfg.Server && (a.cfg.DevMode || a.cfg.Bootstrap)
	if standalone {
		// A lone server leads within moments: wait, so that the agent
		// serves with its node registered.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := a.srv.WaitForLeader(wctx); err != nil {
			return fmt.Errorf("agent: waiting for raft leadership: %w", err)
		}
		a.syncMu.Lock()
		err := a.registerSelf()
		a.syncMu.Unlock()
		if err != nil {
			return fmt.Errorf("agent: registering node: %w", err)
		}
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runCheckUpdates(a.done)
	}()
	// Config first: persisted API checks may belong to config services.
	// The ports of persisted sidecars are held meanwhile, so that a config
	// sidecar does not take one.
	a.mu.Lock()
	a.heldSidecarPorts = a.persistedSidecarPorts()
	a.mu.Unlock()
	if err := a.loadConfigDefinitions(a.cfg); err != nil {
		return err
	}
	if err := a.loadPersisted(); err != nil {
		return err
	}
	a.mu.Lock()
	a.heldSidecarPorts = nil
	a.mu.Unlock()
	if standalone {
		if err := a.SyncFull(); err != nil {
			return fmt.Errorf("agent: first sync: %w", err)
		}
	}
	ca := newCAClient(a) // connect_ca.go
	deps := httpapi.Deps{
		Store: a.store, Server: a.srv, Agent: a, Datacenter: a.cfg.Datacenter,
		NodeName: a.nodeName, Logger: a.logger, MaxKVSize: a.cfg.KVMaxValueSize,
		Blocked:              a.metrics.blocked,
		IntentionDefaultDeny: a.cfg.ACLEnabled && a.cfg.ACLDefaultPolicy == "deny",
		ConnectCA:            ca,
	}
	if a.rpcClient != nil {
		deps.Forwarder = forwarder{a.rpcClient}
		deps.Servers = a.serverAddrs
		deps.DatacenterServers = a.datacenterServers
		if a.srv == nil {
			c := newIntentionCache() // intentions.go
			deps.RemoteIntentions = c.get
			a.wg.Add(1)
			go a.runIntentionCache(c)
		}
	}
	a.api = httpapi.New(deps)
	a.startRPCServer()
	if err := a.startHTTP(); err != nil {
		return err
	}
	if err := a.startDNS(); err != nil {
		return err
	}
	if err := a.startXDS(); err != nil {
		return err
	}
	a.startProxyConfig(ca) // proxycfg.go: feeds the xDS server
	a.wg.Add(2)
	go a.loop(!standalone)
	go a.runCoordinateUpdates()
	return nil
}

func (a *Agent) startHTTP() error {
	handler := a.metrics.instrument(stripInternalHeaders(a.api))
	reqCtx, cancel := context.WithCancel(context.Background())
	a.endRequests = cancel
	for _, addr := range a.cfg.HTTPAddrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("agent: HTTP listener on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
			BaseContext: func(net.Listener) context.Context { return reqCtx }}
		a.httpServers = append(a.httpServers, srv)
		a.httpAddrs = append(a.httpAddrs, ln.Addr().String())
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("HTTP server stopped", "addr", ln.Addr().String(), "error", err)
			}
		}()
		a.logger.Info("HTTP API listening", "addr", ln.Addr().String())
	}
	return nil
}

func (a *Agent) startDNS() error {
	if len(a.cfg.DNSAddrs) == 0 {
		return nil
	}
	d := a.cfg.DNS
	srv, err := dns.New(dns.Config{
		Domain: d.Domain, AltDomain: d.AltDomain, Datacenter: a.cfg.Datacenter,
		NodeName: a.nodeName, NodeTTL: d.NodeTTL, ServiceTTL: d.ServiceTTL,
		OnlyPassing: d.OnlyPassing, UDPAnswerLimit: d.UDPAnswerLimit,
		EnableTruncate: d.EnableTruncate, Recursors: d.Recursors,
		RecursorTimeout: d.RecursorTimeout, Logger: a.logger,
	}, a.dnsCatalog())
	if err != nil {
		return fmt.Errorf("agent: DNS: %w", err)
	}
	a.dnsServer = srv
	for _, addr := range a.cfg.DNSAddrs {
		if err := srv.Start(addr); err != nil {
			return fmt.Errorf("agent: DNS listener on %s: %w", addr, err)
		}
	}
	a.logger.Info("DNS listening", "addrs", srv.Addrs())
	return nil
}

// loop runs anti-entropy and the critical-service reaper until Close. When
// the agent started before its cluster had a leader, the first full sync
// is retried every half second until it succeeds.
func (a *Agent) loop(unsynced bool) {
	defer a.wg.Done()
	sync := time.NewTicker(a.opts.SyncInterval)
	defer sync.Stop()
	for unsynced {
		if err := a.SyncFull(); err == nil {
			break
		}
		select {
		case <-a.done:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	reap := time.NewTicker(a.opts.ReapInterval)
	defer reap.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-sync.C:
			if err := a.SyncFull(); err != nil {
				a.logger.Warn("anti-entropy sync failed", "error", err)
			}
		case now := <-reap.C:
			a.reapCritical(now)
		}
	}
}

// registerSelf registers this node and its serfHealth check. syncMu held.
func (a *Agent) registerSelf() error {
	addr := a.cfg.AdvertiseAddr
	req := &structs.RegisterRequest{
		Datacenter: a.cfg.Datacenter,
		ID:         a.nodeID,
		Node:       a.nodeName,
		Address:    addr,
		TaggedAddresses: map[string]string{
			"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr,
		},
		NodeMeta: a.nodeMeta(),
		Check: &structs.HealthCheck{
			Node: a.nodeName, CheckID: structs.SerfCheckID, Name: structs.SerfCheckName,
			Status: structs.HealthPassing, Output: structs.SerfCheckAliveOutput, Type: "",
		},
	}
	if a.cfg.Server {
		// Servers appear in the catalog as the "consul" service, as tools
		// that look for the servers expect.
		req.Service = a.serverService()
	}
	n, svcs, checks, err := a.catalogNode()
	if err != nil {
		return err
	}
	var c *structs.HealthCheck
	for _, ch := range checks {
		if ch.CheckID == structs.SerfCheckID {
			c = ch
		}
	}
	var svc *structs.NodeService
	for _, s := range svcs {
		if s.ID == serverServiceID {
			svc = s
		}
	}
	if c != nil {
		// Once registered, serfHealth is the leader's, from gossip.
		req.Check = nil
	}
	if n != nil && c != nil && n.Address == addr && n.ID == a.nodeID &&
		mapsEqual(n.Meta, req.NodeMeta) && mapsEqual(n.TaggedAddresses, req.TaggedAddresses) &&
		(req.Service == nil || (svc != nil && sameService(svc, req.Service))) {
		return nil
	}
	return a.applyCatalog(fsm.RegisterRequestType, req)
}

// serverServiceID is the ID (and name) of the service every server
// registers for itself.
const serverServiceID = "consul"

func (a *Agent) serverService() *structs.NodeService {
	return &structs.NodeService{
		ID: serverServiceID, Service: serverServiceID, Tags: []string{}, Port: a.serverPort,
		Weights: structs.Weights{Passing: 1, Warning: 1},
		Meta: map[string]string{
			"non_voter": "false", "read_replica": "false", "raft_version": "3",
			"serf_protocol_current": "2", "serf_protocol_min": "1", "serf_protocol_max": "5",
			"version": version.Version,
		},
	}
}

func (a *Agent) nodeMeta() map[string]string {
	m := map[string]string{"consul-network-segment": "", "consul-version": version.Version}
	for k, v := range a.cfg.NodeMeta {
		m[k] = v
	}
	return m
}

func mapsEqual(x, y map[string]string) bool {
	if len(x) != len(y) {
		return false
	}
	for k, v := range x {
		if w, ok := y[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// loadNodeID returns the configured node ID, or the one persisted in the
// data dir, or a new one (persisted when there is a data dir).
func (a *Agent) loadNodeID() (string, error) {
	if a.cfg.NodeID != "" {
		return strings.ToLower(a.cfg.NodeID), nil
	}
	if a.cfg.DataDir == "" {
		return uuid.GenerateUUID()
	}
	path := filepath.Join(a.cfg.DataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("agent: data dir: %w", err)
	}
	if err := writeFileAtomic(path, []byte(id)); err != nil {
		return "", fmt.Errorf("agent: writing node ID: %w", err)
	}
	return id, nil
}

// loadConfigDefinitions registers the services and checks of a config.
func (a *Agent) loadConfigDefinitions(cfg *config.RuntimeConfig) error {
	for _, def := range cfg.Services {
		if err := a.addService(def, false, sourceConfig); err != nil {
			return fmt.Errorf("agent: service %q from config: %w", def.Name, err)
		}
	}
	for _, def := range cfg.Checks {
		if err := a.addCheck(def, sourceConfig); err != nil {
			return fmt.Errorf("agent: check %q from config: %w", def.Name, err)
		}
	}
	return nil
}

// Reload re-reads the config files: the services and checks they define
// replace the previous ones; those registered over the API stay. Every new
// definition is validated first, so a bad config changes nothing. Checks
// that remain keep their status, so sessions bound to them survive.
func (a *Agent) Reload() error {
	cfg, err := config.Load(a.opts.Args)
	if err != nil {
		return fmt.Errorf("Failed to reload configs: %v", err)
	}
	for _, w := range cfg.Warnings {
		a.logger.Warn(w)
	}
	// The swap happens under syncMu, so anti-entropy never sees it half
	// done; preparing under it too keeps sidecar ports consistent.
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	svcs := make([]*preparedService, 0, len(cfg.Services))
	newSvc := make(map[string]*structs.NodeService, len(cfg.Services))
	reserved := map[int]bool{}
	for _, def := range cfg.Services {
		ps, _, err := a.prepareWithSidecar(def, sourceConfig, reserved)
		if err != nil {
			return fmt.Errorf("Failed to reload configs: service %q: %v", def.Name, err)
		}
		for _, p := range ps {
			svcs = append(svcs, p)
			newSvc[p.svc.ID] = p.svc
		}
	}
	resolve := func(id string) *structs.NodeService {
		if s := newSvc[id]; s != nil {
			return s
		}
		return a.lookupService(id)
	}
	hcs := make([]*structs.HealthCheck, len(cfg.Checks))
	for i, def := range cfg.Checks {
		if hcs[i], err = a.checkFromDef(def, nil, 0, 1, sourceConfig, resolve); err != nil {
			return fmt.Errorf("Failed to reload configs: check %q: %v", def.Name, err)
		}
	}

	a.mu.Lock()
	keepChecks := make(map[string]bool)
	for _, p := range svcs {
		for _, hc := range p.hcs {
			keepChecks[hc.CheckID] = true
		}
	}
	for _, hc := range hcs {
		keepChecks[hc.CheckID] = true
	}
	for id, ls := range a.services {
		if ls.source == sourceConfig && newSvc[id] == nil {
			a.removeServiceLocked(id)
		}
	}
	for id, lc := range a.checks {
		if lc.source == sourceConfig && !keepChecks[id] {
			a.dropCheckLocked(id)
		}
	}
	for _, p := range svcs {
		a.installServiceLocked(p, sourceConfig)
	}
	for i, hc := range hcs {
		if hc.ServiceID != "" && a.services[hc.ServiceID] == nil {
			a.logger.Warn("reload: check's service went away", "check", hc.CheckID, "service", hc.ServiceID)
			continue
		}
		a.putCheckLocked(hc, cfg.Checks[i], sourceConfig)
	}
	a.cfg.Services, a.cfg.Checks = cfg.Services, cfg.Checks
	a.mu.Unlock()
	return a.syncFullLocked()
}

// Leave asks the agent to shut down, as `consul leave` does.
func (a *Agent) Leave() error {
	a.leaveOnce.Do(func() { close(a.leaveCh) })
	return nil
}

// LeaveCh is closed when a leave was requested.
func (a *Agent) LeaveCh() <-chan struct{} { return a.leaveCh }

// HTTPAddrs returns the addresses the HTTP API listens on.
func (a *Agent) HTTPAddrs() []string { return a.httpAddrs }

// DNSAddrs returns the addresses DNS listens on.
func (a *Agent) DNSAddrs() []string {
	if a.dnsServer == nil {
		return nil
	}
	return a.dnsServer.Addrs()
}

// Store returns the state store (for tests and benchmarks in-process).
func (a *Agent) Store() *state.Store { return a.store }

// Close shuts the agent down: listeners first (in-flight requests finish;
// blocking queries answer at once with what they have), then check
// runners, then raft, which flushes its log.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if a.endRequests != nil {
			a.endRequests()
		}
		for _, s := range a.httpServers {
			if e := s.Shutdown(ctx); e != nil {
				s.Close()
			}
		}
		if a.dnsServer != nil {
			a.dnsServer.Close()
		}
		a.stopXDS(ctx)
		if a.rpcServer != nil {
			a.rpcServer.Stop() // forwarded requests finish like local ones
		}
		for _, stop := range a.stopJoins {
			stop()
		}
		close(a.done)
		if a.lan != nil {
			a.lan.Shutdown()
		}
		if a.wan != nil {
			a.wan.Shutdown()
		}
		a.mu.Lock()
		a.closed = true
		for _, lc := range a.checks {
			if lc.runner != nil {
				lc.runner.Stop()
			}
		}
		a.mu.Unlock()
		a.wg.Wait()
		if a.srv != nil {
			err = a.srv.Shutdown()
		}
		a.closeRPC()
	})
	return err
}

func clusterElectionTimeout(cfg *config.RuntimeConfig) time.Duration {
	if cfg.DevMode || cfg.Bootstrap {
		return 0 // the server's own default for a lone voter
	}
	return time.Second
}

// startServer starts the raft server and its state store.
func (a *Agent) startServer() error {
	cfg := a.cfg
	a.store = state.New()
	a.serverPort = max(cfg.ServerPort, 0)
	raftAddr := net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(a.serverPort))
	var trans raft.Transport
	if cfg.DataDir != "" {
		// On disk, the server port carries raft and the internal RPC;
		// dev mode keeps raft in memory, with no one to talk to.
		var err error
		if a.mux, err = a.startMux(); err != nil {
			return err
		}
		trans = a.mux.RaftTransport(3, 10*time.Second, raftTransportLogger())
		a.rpcClient = rpc.NewClient(rpc.ClientConfig{})
	}
	srv, err := server.New(server.Config{
		NodeID: a.nodeID, NodeName: a.nodeName, DataDir: cfg.DataDir,
		RaftAddr: raftAddr, Logger: a.logger, Transport: trans,
		// A server bootstraps alone only when told to (dev, -bootstrap,
		// bootstrap_expect 1); otherwise it waits for bootstrap_expect
		// peers or to be added to a cluster.
		NoBootstrap: !cfg.Bootstrap && !cfg.DevMode,
		// A lone server elects itself in moments; servers that may have
		// peers use raft's usual second, which tolerates real networks.
		ElectionTimeout: clusterElectionTimeout(cfg),
		ConnectCA:       connectCAOptions(cfg), // connect_ca.go
	}, a.store)
	if err != nil {
		a.closeRPC()
		return err
	}
	a.srv = srv
	return nil
}

// stripInternalHeaders removes the headers servers use among themselves
// from requests that arrive on the HTTP API: only the internal RPC may set
// them (a forged "forwarded" header would make a follower serve a stale
// read as the leader's, or a client agent serve what it has no state for).
func stripInternalHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(httpapi.ForwardedHeader)
		r.Header.Del(httpapi.OriginNodeHeader)
		r.Header.Del(httpapi.InternalHeader)
		h.ServeHTTP(w, r)
	})
}

// GracefulLeave leaves the cluster before shutting down, as `consul leave`
// does: a leader first hands its leadership over, then the agent leaves
// gossip, so the others see it as left (a server is removed from raft by
// the next leader) rather than failed.
func (a *Agent) GracefulLeave() {
	if a.srv != nil && a.srv.IsLeader() && a.srv.HasPeers() {
		if cfg, err := a.srv.Configuration(); err == nil && len(cfg.Servers) > 1 {
			if err := a.srv.TransferLeader(""); err != nil {
				a.logger.Warn("leave: leadership transfer failed", "error", err)
			}
		}
	}
	if a.wan != nil {
		if err := a.wan.Leave(); err != nil {
			a.logger.Warn("leave: leaving WAN gossip failed", "error", err)
		}
	}
	if a.lan != nil {
		if err := a.lan.Leave(); err != nil {
			a.logger.Warn("leave: leaving gossip failed", "error", err)
		}
	}
}

// opContext returns a context for one call to another server: bounded by
// d, and ended at once by Close.
func (a *Agent) opContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-a.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// dnsCatalog is what DNS reads: the store on a server, the servers on a
// client agent.
func (a *Agent) dnsCatalog() dns.Catalog {
	if a.store == nil {
		return dnsRouter{a: a, local: remoteDNSCatalog{a}}
	}
	return dnsRouter{a: a, local: newDNSCatalog(a.store)}
}

func (a *Agent) raftStats() map[string]string {
	if a.srv == nil {
		return map[string]string{}
	}
	return a.srv.Stats()
}

// closeRPC closes the server port and the RPC client, after raft.
func (a *Agent) closeRPC() {
	if a.rpcClient != nil {
		a.rpcClient.Close()
	}
	if a.mux != nil {
		a.mux.Close()
	}
}

// FireEvent sends a user event to every agent of the datacenter by gossip;
// each records it, this one included, when gossip delivers it.
func (a *Agent) FireEvent(ev *structs.UserEvent) error {
	payload, err := encodeUserEvent(ev)
	if err != nil {
		return err
	}
	if err := a.lan.UserEvent(ev.Name, payload); err != nil {
		return structs.BadRequestError{Reason: fmt.Sprintf("event %q: %v", ev.Name, err)}
	}
	// Record it here at once, so that a list right after the fire has it;
	// gossip's own delivery then only adds the Lamport time.
	a.storeEvent(ev)
	return nil
}

// storeEvent records a user event in the ring of recent ones; an event
// already there (by ID) only has its LTime filled in.
func (a *Agent) storeEvent(ev *structs.UserEvent) {
	a.eventMu.Lock()
	defer a.eventMu.Unlock()
	for i, e := range a.events {
		if e.ID == ev.ID {
			if e.LTime == 0 {
				// Readers may hold e: replace it, never change it.
				c := *e
				c.LTime = ev.LTime
				a.events[i] = &c
			}
			return
		}
	}
	a.events = append(a.events, ev)
	if len(a.events) > 256 {
		a.events = a.events[len(a.events)-256:]
	}
	close(a.eventCh)
	a.eventCh = make(chan struct{})
}

// Events returns the recent events and a channel closed at the next one.
func (a *Agent) Events() ([]*structs.UserEvent, <-chan struct{}) {
	a.eventMu.Lock()
	defer a.eventMu.Unlock()
	return append([]*structs.UserEvent(nil), a.events...), a.eventCh
}

// Members lists the members of the LAN pool, or with wan of the WAN pool
// (empty on a client agent, which is in none).
func (a *Agent) Members(wan bool) []structs.AgentMember {
	pool := a.lan
	if wan {
		if a.wan == nil {
			return []structs.AgentMember{}
		}
		pool = a.wan
	}
	members := pool.Members()
	out := make([]structs.AgentMember, 0, len(members))
	for _, m := range members {
		out = append(out, toAgentMember(m))
	}
	return out
}

func toAgentMember(m membership.Member) structs.AgentMember {
	return structs.AgentMember{
		Name: m.Name, Addr: m.Addr, Port: m.Port, Tags: m.Tags, Status: int(m.Status),
		ProtocolMin: m.ProtocolMin, ProtocolMax: m.ProtocolMax, ProtocolCur: m.ProtocolCur,
		DelegateMin: m.DelegateMin, DelegateMax: m.DelegateMax, DelegateCur: m.DelegateCur,
	}
}

// Self describes the agent, as /v1/agent/self.
func (a *Agent) Self() map[string]any {
	cfg := map[string]any{
		"Datacenter": a.cfg.Datacenter, "PrimaryDatacenter": a.cfg.Datacenter,
		"NodeName": a.nodeName, "NodeID": a.nodeID, "Server": a.cfg.Server,
		"Revision": "", "Version": version.Version, "BuildDate": "",
	}
	return map[string]any{
		"Config":      cfg,
		"DebugConfig": map[string]any{"DevMode": a.cfg.DevMode, "DataDir": a.cfg.DataDir, "ClientAddrs": a.cfg.ClientAddrs},
		"Coord":       a.selfCoordinate(),
		"Member":      toAgentMember(a.lan.LocalMember()),
		"Stats": map[string]any{
			"raft":  a.raftStats(),
			"agent": map[string]string{"checks": strconv.Itoa(len(a.Checks())), "services": strconv.Itoa(len(a.Services()))},
		},
		"Meta": a.nodeMeta(),
	}
}

var _ httpapi.Agent = (*Agent)(nil)

// writeFileAtomic writes data to path through a temporary file and a
// rename, so a crash leaves the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
