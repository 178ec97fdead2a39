package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultDomain          = "consul."
	DefaultUDPAnswerLimit  = 3
	DefaultRecursorTimeout = 2 * time.Second
)

// SOA timers, Consul's defaults. The serial is the current unix time.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
	soaMinTTL  = 0
)

// Catalog is what the DNS server reads. Implementations return data from the
// agent's state store. Both methods are called concurrently from many
// queries and must be safe for that; the server does not modify what they
// return.
//
// Names are passed lower-cased, because DNS names are case-insensitive (and
// some resolvers randomise case): implementations must match service and
// node names case-insensitively, as Consul's catalog does.
type Catalog interface {
	// HealthService returns every instance of service name (any health)
	// in datacenter dc with its node and all checks (node-level checks and
	// the service's checks) — the same as /v1/health/service/:name. Tag
	// filtering is done by the DNS server. An unknown service is an empty
	// result, not an error; ErrNoDatacenter makes the answer NXDOMAIN; any
	// other error makes it SERVFAIL.
	HealthService(dc, name string) ([]*structs.CheckServiceNode, error)
	// HealthConnect is HealthService for <name>.connect: the instances
	// that accept Connect traffic for service name (its proxies and its
	// native instances) — the same as /v1/health/connect/:name.
	HealthConnect(dc, name string) ([]*structs.CheckServiceNode, error)
	// Node returns the node by name in datacenter dc, or nil if unknown.
	Node(dc, name string) (*structs.Node, error)
}

// ErrNoDatacenter is the Catalog's error for a datacenter it cannot reach
// or does not know.
var ErrNoDatacenter = errors.New("dns: no path to datacenter")

// Config is the runtime configuration of the DNS server. New validates it
// and fills in defaults; it is not modified afterwards.
type Config struct {
	// Domain is the domain the server is authoritative for, "consul." by
	// default. It is made lower case and fully qualified.
	Domain string
	// AltDomain is an optional second domain answered like Domain. Answers
	// use the domain the question was asked in.
	AltDomain string
	// Datacenter is this agent's datacenter, e.g. "dc1". Names that carry
	// another datacenter answer NXDOMAIN (no WAN federation yet).
	Datacenter string
	// NodeName is this agent's node; the NS record of the domain points to
	// <NodeName>.node.<Datacenter>.<domain>.
	NodeName string
	// NodeTTL is the TTL of node (and .addr) records. Zero means 0.
	NodeTTL time.Duration
	// ServiceTTL is the TTL of service records by service name. A key
	// ending in "*" is a prefix ("web*"); the longest matching prefix wins
	// and "*" alone is the default. Names without a match get 0.
	ServiceTTL map[string]time.Duration
	// OnlyPassing drops instances in warning too; critical (and
	// maintenance) instances are always dropped.
	OnlyPassing bool
	// UDPAnswerLimit is the most A/AAAA records in a UDP answer, 3 when 0.
	// It does not apply to SRV (as many as fit) nor to TCP.
	UDPAnswerLimit int
	// EnableTruncate sets the TC bit when the UDP answer limit dropped
	// records. Records dropped to fit the UDP message size always set TC.
	EnableTruncate bool
	// Recursors are upstream servers ("host:port", or "host" for port 53)
	// that queries outside our domains are forwarded to, in order.
	Recursors []string
	// RecursorTimeout bounds each upstream exchange, 2s when 0.
	RecursorTimeout time.Duration
	// Logger receives query failures at Debug/Warn; nil discards.
	Logger *slog.Logger
}

// ttlTable resolves the TTL of a service name.
type ttlTable struct {
	exact    map[string]uint32
	prefixes []ttlPrefix // longest first
	def      uint32
}

type ttlPrefix struct {
	prefix string
	ttl    uint32
}

func (t *ttlTable) lookup(name string) uint32 {
	if ttl, ok := t.exact[name]; ok {
		return ttl
	}
	for _, p := range t.prefixes {
		if strings.HasPrefix(name, p.prefix) {
			return p.ttl
		}
	}
	return t.def
}

// normalize checks cfg and returns a copy with defaults applied.
func normalize(cfg Config) (Config, ttlTable, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("dns: config: "+format, args...))
	}

	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	cfg.Domain = strings.ToLower(dns.Fqdn(cfg.Domain))
	if _, ok := dns.IsDomainName(cfg.Domain); !ok || cfg.Domain == "." {
		bad("Domain %q is not a domain name", cfg.Domain)
	}
	if cfg.AltDomain != "" {
		cfg.AltDomain = strings.ToLower(dns.Fqdn(cfg.AltDomain))
		if _, ok := dns.IsDomainName(cfg.AltDomain); !ok || cfg.AltDomain == "." {
			bad("AltDomain %q is not a domain name", cfg.AltDomain)
		}
		if cfg.AltDomain == cfg.Domain {
			bad("AltDomain %q is the same as Domain", cfg.AltDomain)
		}
	}
	cfg.Datacenter = strings.ToLower(cfg.Datacenter)
	if cfg.Datacenter == "" || strings.Contains(cfg.Datacenter, ".") {
		bad("Datacenter %q must be a single DNS label", cfg.Datacenter)
	}
	if cfg.NodeName == "" {
		bad("NodeName is required (it names the NS record)")
	}
	if cfg.NodeTTL < 0 {
		bad("NodeTTL %s is negative", cfg.NodeTTL)
	}
	if cfg.UDPAnswerLimit < 0 {
		bad("UDPAnswerLimit %d is negative", cfg.UDPAnswerLimit)
	}
	if cfg.UDPAnswerLimit == 0 {
		cfg.UDPAnswerLimit = DefaultUDPAnswerLimit
	}
	if cfg.RecursorTimeout < 0 {
		bad("RecursorTimeout %s is negative", cfg.RecursorTimeout)
	}
	if cfg.RecursorTimeout == 0 {
		cfg.RecursorTimeout = DefaultRecursorTimeout
	}
	recursors := make([]string, 0, len(cfg.Recursors))
	for _, r := range cfg.Recursors {
		addr, err := recursorAddr(r)
		if err != nil {
			bad("recursor %q: %v", r, err)
			continue
		}
		recursors = append(recursors, addr)
	}
	cfg.Recursors = recursors
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	ttls := ttlTable{exact: make(map[string]uint32)}
	for name, d := range cfg.ServiceTTL {
		if d < 0 {
			bad("ServiceTTL[%q] %s is negative", name, d)
			continue
		}
		name = strings.ToLower(name)
		switch {
		case name == "*":
			ttls.def = seconds(d)
		case strings.HasSuffix(name, "*"):
			ttls.prefixes = append(ttls.prefixes, ttlPrefix{strings.TrimSuffix(name, "*"), seconds(d)})
		default:
			ttls.exact[name] = seconds(d)
		}
	}
	sort.Slice(ttls.prefixes, func(i, j int) bool {
		return len(ttls.prefixes[i].prefix) > len(ttls.prefixes[j].prefix)
	})
	return cfg, ttls, errors.Join(errs...)
}

// recursorAddr returns r as host:port, adding port 53 when r has none.
func recursorAddr(r string) (string, error) {
	if host, port, err := net.SplitHostPort(r); err == nil {
		if host == "" || port == "" {
			return "", errors.New("want host:port")
		}
		return r, nil
	}
	// A bare IPv6 address has colons but no port.
	h := strings.TrimSuffix(strings.TrimPrefix(r, "["), "]")
	if h == "" || strings.ContainsAny(h, "[]") {
		return "", errors.New("want host:port")
	}
	return net.JoinHostPort(h, "53"), nil
}

// seconds converts d to a DNS TTL, saturating.
func seconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 1<<31-1 { // RFC 2181 §8: TTLs are at most 2^31-1.
		return 1<<31 - 1
	}
	return uint32(s)
}
