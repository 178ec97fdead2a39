package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/state"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
	"github.com/trellis-mesh/trellis/internal/version"
)

// Gossip tags, as Consul's agents set them.
const (
	tagRole    = "role"
	roleServer = "consul"
	roleClient = "node"
	tagPort    = "port"
	tagExpect  = "expect"
)

// serfCheckFailedOutput is the serfHealth output of a failed member.
const serfCheckFailedOutput = "Agent not live or unreachable"

// startGossip joins this agent to its datacenter's LAN pool.
func (a *Agent) startGossip() error {
	tags := map[string]string{
		tagRole: roleClient, "build": version.Version, "vsn": "2", "vsn_min": "2", "vsn_max": "3", "segment": "",
	}
	if a.cfg.Server {
		tags[tagRole] = roleServer
		tags[tagPort] = strconv.Itoa(a.serverPort)
		if a.cfg.BootstrapExpect > 1 {
			tags[tagExpect] = strconv.Itoa(a.cfg.BootstrapExpect)
		}
		if a.cfg.Bootstrap {
			tags["bootstrap"] = "1"
		}
	}
	cfg := membership.Config{
		NodeName: a.nodeName, NodeID: a.nodeID, Datacenter: a.cfg.Datacenter,
		BindAddr: a.cfg.BindAddr, BindPort: max(a.cfg.SerfLANPort, 0), AdvertiseAddr: a.cfg.AdvertiseAddr,
		Tags: tags, Logger: a.logger,
	}
	cfg.ReconnectTimeout = a.cfg.ReconnectTimeout
	if a.cfg.DataDir != "" {
		// The snapshot lets a restarted agent remember the members (and
		// rejoin them), so that a restarted leader does not take members
		// it has not heard from yet for reaped ones.
		dir := filepath.Join(a.cfg.DataDir, "serf")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("agent: gossip snapshot dir: %w", err)
		}
		cfg.SnapshotPath = filepath.Join(dir, "local.snapshot")
	}
	if a.opts.GossipTiming != nil {
		cfg.Timing = *a.opts.GossipTiming
	}
	pool, err := membership.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: gossip: %w", err)
	}
	a.lan = pool
	if err := a.joinPool(pool, a.cfg.Join, a.cfg.RetryJoin, a.cfg.RetryInterval); err != nil {
		return err
	}
	if a.cfg.Server && a.cfg.SerfWANPort >= 0 {
		if err := a.startWAN(tags); err != nil {
			return err
		}
	}
	events, cancel := pool.Subscribe()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runMembership(events, cancel)
	}()
	return nil
}

// joinPool joins pool through join at once (failing if none answers), and
// through retry in the background until one answers or the agent closes.
func (a *Agent) joinPool(pool *membership.Pool, join, retry []string, interval time.Duration) error {
	if len(join) > 0 {
		if n, err := pool.Join(join); n == 0 {
			return fmt.Errorf("agent: join %v: %w", join, err)
		}
	}
	if len(retry) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopJoins = append(a.stopJoins, cancel)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if interval == 0 {
			interval = 30 * time.Second
		}
		if n, err := pool.RetryJoin(ctx, retry, interval); err != nil && ctx.Err() == nil {
			a.logger.Warn("retry-join gave up", "error", err)
		} else if n > 0 {
			a.logger.Info("joined the cluster", "via", retry)
		}
	}()
	return nil
}

// startWAN joins this server to the WAN pool, which the servers of every
// datacenter share: it is how a server finds the servers of another
// datacenter to forward ?dc= requests to.
func (a *Agent) startWAN(lanTags map[string]string) error {
	tags := make(map[string]string, len(lanTags))
	for k, v := range lanTags {
		if k != tagExpect && k != "bootstrap" {
			tags[k] = v
		}
	}
	cfg := membership.Config{
		NodeName: a.nodeName, NodeID: a.nodeID, Datacenter: a.cfg.Datacenter, WAN: true,
		BindAddr: a.cfg.BindAddr, BindPort: a.cfg.SerfWANPort, AdvertiseAddr: a.cfg.AdvertiseAddrWAN,
		Tags: tags, Logger: a.logger, ReconnectTimeout: a.cfg.ReconnectTimeout,
	}
	if a.cfg.DataDir != "" {
		cfg.SnapshotPath = filepath.Join(a.cfg.DataDir, "serf", "remote.snapshot")
	}
	if a.opts.GossipTiming != nil {
		cfg.Timing = *a.opts.GossipTiming
	}
	pool, err := membership.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: WAN gossip: %w", err)
	}
	a.wan = pool
	return a.joinPool(pool, a.cfg.JoinWAN, a.cfg.RetryJoinWAN, a.cfg.RetryIntervalWAN)
}

// runMembership handles gossip events: user events are recorded;
// membership changes drive bootstrap and, on the leader, reconciliation.
// A periodic pass repairs whatever an event missed.
func (a *Agent) runMembership(events <-chan membership.Event, cancelSub func()) {
	defer func() { cancelSub() }()
	tick := time.NewTicker(a.opts.ReconcileInterval)
	defer tick.Stop()
	for {
		var leaderCh <-chan struct{}
		if a.srv != nil {
			leaderCh = a.srv.LeadershipChanged()
		}
		select {
		case <-a.done:
			return
		case ev, ok := <-events:
			if !ok {
				select {
				case <-a.lan.Done():
					return
				default:
				}
				// Dropped for falling behind: resubscribe, then reconcile.
				cancelSub()
				events, cancelSub = a.lan.Subscribe()
			} else if ev.Type == membership.EventUser {
				a.recordEvent(ev)
				continue
			}
		case <-leaderCh:
		case <-tick.C:
		}
		if a.srv == nil {
			continue // a client agent has no cluster duties
		}
		a.maybeBootstrap()
		if a.srv.IsLeader() && a.srv.VerifyLeader() == nil {
			// VerifyLeader also waits for a new leader's barrier: before it,
			// this store may lack what earlier leaders committed.
			if err := a.reconcileMembers(); err != nil {
				a.logger.Warn("reconciling members", "error", err)
			}
		}
	}
}

// maybeBootstrap starts the cluster once bootstrap_expect servers of this
// datacenter, all expecting the same number, are alive in the pool.
func (a *Agent) maybeBootstrap() {
	if a.cfg.BootstrapExpect < 2 || a.srv.HasPeers() {
		return
	}
	var peers []server.Peer
	for _, m := range a.lan.Members() {
		p, ok := serverPeer(m, a.cfg.Datacenter)
		if !ok || m.Status != membership.StatusAlive {
			continue
		}
		if m.Tags[tagExpect] != strconv.Itoa(a.cfg.BootstrapExpect) {
			a.logger.Error("server expects a different bootstrap_expect: not bootstrapping", "member", m.Name, "expect", m.Tags[tagExpect])
			return
		}
		peers = append(peers, p)
	}
	if len(peers) != a.cfg.BootstrapExpect {
		// Fewer: wait. More: some may already form a cluster, and a
		// bootstrap of a different set would diverge; the peer check
		// below cannot tell which, so leave it to an operator.
		if len(peers) > a.cfg.BootstrapExpect {
			a.logger.Warn("more servers than bootstrap_expect: not bootstrapping", "seen", len(peers))
		}
		return
	}
	// A server that already has a raft configuration belongs to a cluster:
	// join it (its leader adds this server) rather than start another.
	for _, p := range peers {
		if p.ID == a.nodeID {
			continue
		}
		if has, err := a.peerHasConfiguration(p.Address); err != nil || has {
			if err != nil {
				a.logger.Debug("bootstrap: cannot ask a server for its peers yet", "server", p.Address, "error", err)
			}
			return
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	a.logger.Info("bootstrapping the cluster", "servers", len(peers))
	if err := a.srv.BootstrapCluster(peers); err != nil {
		a.logger.Error("bootstrap failed", "error", err)
	}
}

// peerHasConfiguration asks a server, over the RPC, whether its raft has a
// configuration (it bootstrapped or was added to a cluster).
func (a *Agent) peerHasConfiguration(addr string) (bool, error) {
	ctx, cancel := a.opContext(5 * time.Second)
	defer cancel()
	resp, err := a.rpcClient.ForwardHTTP(ctx, addr, &rpc.HTTPRequest{Method: http.MethodGet, Path: "/v1/status/peers",
		Header: map[string][]string{httpapi.ForwardedHeader: {"1"}}})
	if err != nil {
		return false, err
	}
	if resp.Status != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.Status)
	}
	var peers []string
	if err := json.Unmarshal(resp.Body, &peers); err != nil {
		return false, err
	}
	return len(peers) > 0, nil
}

// serverPeer returns the raft peer of a server member of datacenter dc.
func serverPeer(m membership.Member, dc string) (server.Peer, bool) {
	if m.Tags[tagRole] != roleServer || m.Tags[membership.TagDatacenter] != dc || m.Tags[tagPort] == "" {
		return server.Peer{}, false
	}
	return server.Peer{ID: m.Tags[membership.TagNodeID], Address: net.JoinHostPort(m.Addr, m.Tags[tagPort])}, true
}

// reconcileMembers makes the catalog follow the pool, on the leader: live
// members' nodes have a passing serfHealth, failed ones a critical one,
// and members that left or were reaped leave the catalog. New servers
// become raft voters.
func (a *Agent) reconcileMembers() error {
	var errs error
	known := make(map[string]bool)
	for _, m := range a.lan.Members() {
		if m.Tags[membership.TagDatacenter] != a.cfg.Datacenter {
			continue
		}
		known[m.Name] = true
		errs = errors.Join(errs, a.reconcileMember(m))
	}
	// Nodes with a serfHealth check belong to gossip: one no longer in
	// the pool was reaped.
	rt := a.store.Read()
	_, checks, err := rt.ChecksInState(nil, structs.HealthAny)
	rt.Abort()
	if err != nil {
		return errors.Join(errs, err)
	}
	for _, c := range checks {
		if c.CheckID == structs.SerfCheckID && !known[c.Node] {
			_, err := a.srv.Apply(fsm.DeregisterRequestType, &structs.DeregisterRequest{Node: c.Node})
			errs = errors.Join(errs, err)
		}
	}
	return errs
}

func (a *Agent) reconcileMember(m membership.Member) error {
	if p, ok := serverPeer(m, a.cfg.Datacenter); ok && a.srv.HasPeers() {
		switch m.Status {
		case membership.StatusAlive:
			if err := a.srv.AddVoter(p); err != nil {
				return err
			}
		case membership.StatusLeft:
			if p.ID != a.nodeID {
				if err := a.srv.RemovePeer(p.ID, ""); err != nil && !structs.IsNotFound(err) {
					return err
				}
			}
		}
	}
	status, output := structs.HealthPassing, structs.SerfCheckAliveOutput
	switch m.Status {
	case membership.StatusAlive, membership.StatusLeaving:
	case membership.StatusFailed:
		status, output = structs.HealthCritical, serfCheckFailedOutput
	case membership.StatusLeft:
		_, err := a.srv.Apply(fsm.DeregisterRequestType, &structs.DeregisterRequest{Node: m.Name})
		return err
	default:
		return nil
	}
	rt := a.store.Read()
	_, n, _ := rt.Node(nil, m.Name)
	c, _ := rt.Check(m.Name, structs.SerfCheckID)
	rt.Abort()
	if n != nil && n.Address == m.Addr && c != nil && c.Status == status {
		return nil
	}
	req := &structs.RegisterRequest{
		Datacenter: a.cfg.Datacenter, ID: m.Tags[membership.TagNodeID], Node: m.Name, Address: m.Addr,
		Check: &structs.HealthCheck{Node: m.Name, CheckID: structs.SerfCheckID, Name: structs.SerfCheckName,
			Status: status, Output: output},
	}
	if n != nil && n.Address == m.Addr {
		// Only the health is gossip's: the node's own agent owns the rest
		// (tagged addresses, meta), which this read may not have seen.
		req.SkipNodeUpdate = true
	} else if n != nil {
		req.TaggedAddresses, req.NodeMeta = n.TaggedAddresses, n.Meta
	}
	_, err := a.srv.Apply(fsm.RegisterRequestType, req)
	return err
}

// recordEvent adds a user event received by gossip to the agent's list.
func (a *Agent) recordEvent(ev membership.Event) {
	ue, err := decodeUserEvent(ev.Payload)
	if err != nil {
		a.logger.Warn("dropping an undecodable user event", "name", ev.Name, "error", err)
		return
	}
	ue.LTime = ev.LTime
	a.storeEvent(ue)
}

// encodeUserEvent is the gossip payload of a user event: the event with
// its filters, as every agent needs them.
func encodeUserEvent(ev *structs.UserEvent) ([]byte, error) {
	var buf []byte
	if err := codec.NewEncoderBytes(&buf, state.NewMsgpackHandle()).Encode(ev); err != nil {
		return nil, fmt.Errorf("agent: encode event: %w", err)
	}
	return buf, nil
}

func decodeUserEvent(b []byte) (*structs.UserEvent, error) {
	var ev structs.UserEvent
	if err := codec.NewDecoderBytes(b, state.NewMsgpackHandle()).Decode(&ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Join joins the LAN pool, or with wan the WAN pool, through addrs.
func (a *Agent) Join(addrs []string, wan bool) (int, error) {
	pool := a.lan
	if wan {
		if a.wan == nil {
			return 0, errors.New("Must be a server to join WAN cluster")
		}
		pool = a.wan
	}
	n, err := pool.Join(addrs)
	if n == 0 {
		return 0, fmt.Errorf("agent: join %v: %w", addrs, err)
	}
	return n, nil
}

// ForceLeave marks a failed member as left, as `consul force-leave` does;
// with prune it is also forgotten at once. A server is also forced out of
// the WAN pool, where it is "<node>.<dc>", as Consul's servers do.
func (a *Agent) ForceLeave(node string, prune bool) error {
	err := a.lan.ForceLeave(node, prune)
	if errors.Is(err, membership.ErrUnknownMember) {
		return structs.NotFoundError{Reason: fmt.Sprintf("agent: No node found with name '%s'", node)}
	}
	if err != nil {
		return err
	}
	if a.wan != nil {
		err := a.wan.ForceLeave(node+"."+a.cfg.Datacenter, prune)
		if err != nil && !errors.Is(err, membership.ErrUnknownMember) {
			return err
		}
	}
	return nil
}
