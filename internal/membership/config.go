package membership

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Tag keys the pool sets on its own member, as Consul's members show them.
const (
	TagDatacenter = "dc" // Config.Datacenter
	TagNodeID     = "id" // Config.NodeID, when set
)

// DefaultReconnectTimeout is how long a failed member is kept (and
// reconnected to) before it is reaped: Consul's reconnect_timeout default.
const DefaultReconnectTimeout = 72 * time.Hour

// DefaultSubscriberQueue is the per-subscriber event queue length when
// Config.SubscriberQueue is zero.
const DefaultSubscriberQueue = 256

// Config is the runtime configuration of one gossip pool. The agent builds
// one per pool: a LAN pool on every agent, and a WAN pool (WAN: true) on
// servers.
type Config struct {
	// NodeName is the agent's node name; required. In a WAN pool the
	// member name becomes "<NodeName>.<Datacenter>", as in Consul.
	NodeName string
	// NodeID, when set, is published as the member tag "id".
	NodeID string
	// Datacenter is required and published as the member tag "dc".
	Datacenter string

	// BindAddr is the IP address to listen on (TCP and UDP); empty means
	// "0.0.0.0".
	BindAddr string
	// BindPort is the port to listen on; 0 picks a free port, which
	// Pool.Addr and Pool.LocalMember report.
	BindPort int
	// AdvertiseAddr is the IP address other members use to reach this
	// one; empty means BindAddr, or a private IP of the host when BindAddr
	// is "0.0.0.0". The advertised port is always the bound port.
	AdvertiseAddr string

	// Tags are the member's initial tags. "dc" and "id" are set by the
	// pool; a different value for either is an error.
	Tags map[string]string

	// Logger receives serf's and memberlist's log lines at their own
	// level, with attribute pool="lan"|"wan". Nil means slog.Default().
	Logger *slog.Logger

	// WAN selects memberlist's WAN profile and "<node>.<dc>" member names.
	WAN bool

	// ReconnectTimeout is how long a failed member is kept, and
	// reconnected to, before it is reaped (EventMemberReap). Zero means
	// DefaultReconnectTimeout. Consul rejects values under 8h in its
	// config; this package accepts any positive value so tests can reap.
	ReconnectTimeout time.Duration

	// EncryptKey, when set, is the AES key (16, 24 or 32 bytes, already
	// base64-decoded) that encrypts gossip, as Consul's encrypt. Members
	// with a different key, or none, cannot join.
	EncryptKey []byte

	// SnapshotPath, when set, is a file where serf records members and
	// clocks so that a restarted agent rejoins the members it knew (and
	// does not replay old user events), as Consul's serf/local.snapshot.
	SnapshotPath string
	// RejoinAfterLeave makes a restart rejoin from the snapshot even after
	// a graceful Leave, as Consul's rejoin_after_leave.
	RejoinAfterLeave bool

	// SubscriberQueue is the number of events buffered per subscriber
	// before it is dropped (see Pool.Subscribe). Zero means
	// DefaultSubscriberQueue.
	SubscriberQueue int

	// Timing tunes failure detection and gossip; zero fields keep the
	// defaults (memberlist's LAN or WAN profile and serf's defaults).
	// Tests use FastTiming.
	Timing Timing
}

// Timing holds the gossip timers. A zero field keeps the default of the
// pool's profile.
type Timing struct {
	// memberlist
	ProbeInterval           time.Duration // how often a random member is probed
	ProbeTimeout            time.Duration // wait for a direct ack before indirect probes
	GossipInterval          time.Duration // how often queued broadcasts are gossiped
	GossipToTheDeadTime     time.Duration // how long dead members still receive gossip
	PushPullInterval        time.Duration // full state sync with a random member
	TCPTimeout              time.Duration // join, push/pull and TCP-fallback probe deadline
	SuspicionMult           int           // suspicion timeout = mult * log(N) * ProbeInterval
	SuspicionMaxTimeoutMult int           // upper bound of the suspicion timeout, as a multiple

	// serf
	BroadcastTimeout    time.Duration // wait for leave / force-leave broadcasts to go out
	LeavePropagateDelay time.Duration // stay up after Leave so the leave spreads
	ReapInterval        time.Duration // how often failed and left members are reaped
	ReconnectInterval   time.Duration // how often a failed member is re-joined
}

// FastTiming returns timers for tests on loopback: a member that stops
// without leaving is declared failed within about a second (a few seconds
// under the race detector), and Leave returns within a fraction of one.
// Never use it across a real network: it will declare slow members failed.
func FastTiming() Timing {
	return Timing{
		ProbeInterval:           100 * time.Millisecond,
		ProbeTimeout:            50 * time.Millisecond,
		GossipInterval:          20 * time.Millisecond,
		GossipToTheDeadTime:     time.Second,
		PushPullInterval:        time.Second,
		TCPTimeout:              time.Second,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 2,
		BroadcastTimeout:        time.Second,
		LeavePropagateDelay:     50 * time.Millisecond,
		ReapInterval:            100 * time.Millisecond,
		ReconnectInterval:       500 * time.Millisecond,
	}
}

// memberName is the name the pool gossips under.
func (c *Config) memberName() string {
	if c.WAN {
		return c.NodeName + "." + c.Datacenter
	}
	return c.NodeName
}

func (c *Config) kind() string {
	if c.WAN {
		return "wan"
	}
	return "lan"
}

// Validate reports the first problem with c, naming the field.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("membership: node name is required")
	}
	if c.Datacenter == "" {
		return fmt.Errorf("membership: node %q: datacenter is required", c.NodeName)
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("membership: node %q: bind address %q is not an IP", c.NodeName, c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return fmt.Errorf("membership: node %q: bind port %d out of range", c.NodeName, c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		return fmt.Errorf("membership: node %q: advertise address %q is not an IP", c.NodeName, c.AdvertiseAddr)
	}
	if c.ReconnectTimeout < 0 {
		return fmt.Errorf("membership: node %q: reconnect timeout %s is negative", c.NodeName, c.ReconnectTimeout)
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("membership: node %q: encrypt key is %d bytes, want 16, 24 or 32", c.NodeName, n)
	}
	if c.SubscriberQueue < 0 {
		return fmt.Errorf("membership: node %q: subscriber queue %d is negative", c.NodeName, c.SubscriberQueue)
	}
	if _, err := c.tags(c.Tags); err != nil {
		return err
	}
	return nil
}

// tags returns a copy of user with the pool's own tags added.
func (c *Config) tags(user map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(user)+2)
	for k, v := range user {
		out[k] = v
	}
	own := map[string]string{TagDatacenter: c.Datacenter}
	if c.NodeID != "" {
		own[TagNodeID] = c.NodeID
	}
	for k, v := range own {
		if got, ok := out[k]; ok && got != v {
			return nil, fmt.Errorf("membership: node %q: tag %q is %q, but the pool sets it to %q", c.NodeName, k, got, v)
		}
		out[k] = v
	}
	return out, nil
}

// serfConfig builds serf's and memberlist's configuration. c must be valid.
func (c *Config) serfConfig(eventCh chan<- serf.Event, tags map[string]string, logger *log.Logger) *serf.Config {
	var ml *memberlist.Config
	if c.WAN {
		ml = memberlist.DefaultWANConfig()
	} else {
		ml = memberlist.DefaultLANConfig()
	}
	ml.BindAddr = c.BindAddr
	if ml.BindAddr == "" {
		ml.BindAddr = "0.0.0.0"
	}
	ml.BindPort = c.BindPort
	ml.AdvertiseAddr = c.AdvertiseAddr
	ml.AdvertisePort = c.BindPort // memberlist replaces it when BindPort is 0
	if len(c.EncryptKey) > 0 {
		ml.SecretKey = append([]byte(nil), c.EncryptKey...)
	}
	ml.LogOutput = nil
	ml.Logger = logger

	t := c.Timing
	setDur(&ml.ProbeInterval, t.ProbeInterval)
	setDur(&ml.ProbeTimeout, t.ProbeTimeout)
	setDur(&ml.GossipInterval, t.GossipInterval)
	setDur(&ml.GossipToTheDeadTime, t.GossipToTheDeadTime)
	setDur(&ml.PushPullInterval, t.PushPullInterval)
	setDur(&ml.TCPTimeout, t.TCPTimeout)
	if t.SuspicionMult > 0 {
		ml.SuspicionMult = t.SuspicionMult
	}
	if t.SuspicionMaxTimeoutMult > 0 {
		ml.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	}

	sc := serf.DefaultConfig()
	sc.NodeName = c.memberName()
	sc.Tags = tags
	sc.EventCh = eventCh
	sc.MemberlistConfig = ml
	sc.LogOutput = nil
	sc.Logger = logger
	sc.ReconnectTimeout = c.ReconnectTimeout
	if sc.ReconnectTimeout == 0 {
		sc.ReconnectTimeout = DefaultReconnectTimeout
	}
	sc.SnapshotPath = c.SnapshotPath
	sc.RejoinAfterLeave = c.RejoinAfterLeave
	// Serf's resolution shuts the losing member down on its own, behind
	// the pool's back; duplicate names are the agent's to refuse (by node
	// ID), so conflicts are only logged.
	sc.EnableNameConflictResolution = false
	sc.DisableCoordinates = false
	setDur(&sc.BroadcastTimeout, t.BroadcastTimeout)
	setDur(&sc.LeavePropagateDelay, t.LeavePropagateDelay)
	setDur(&sc.ReapInterval, t.ReapInterval)
	setDur(&sc.ReconnectInterval, t.ReconnectInterval)
	return sc
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}
