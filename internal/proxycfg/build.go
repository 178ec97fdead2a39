package proxycfg

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Defaults of a snapshot.
const (
	defaultLocalAddress   = "127.0.0.1"
	defaultProtocol       = "tcp"
	defaultConnectTimeout = 5 * time.Second
)

// build makes def's snapshot from the store (adding what it reads to
// ws), the leaf and the roots. It returns nil until the leaf and the
// roots are known: a proxy cannot serve mTLS without them, so a
// snapshot without them would only make the proxy's listeners flap.
func (m *Manager) build(ws memdb.WatchSet, def *structs.NodeService, leaf *structs.IssuedCert, roots *structs.IndexedCARoots) (*Snapshot, error) {
	if leaf == nil || roots == nil || len(roots.Roots) == 0 {
		return nil, nil
	}
	p := def.Proxy
	dest := p.DestinationServiceName
	snap := &Snapshot{
		ProxyID:      def.ID,
		Service:      dest,
		Datacenter:   m.src.Datacenter,
		TrustDomain:  roots.TrustDomain,
		Address:      cmp.Or(def.Address, m.src.Address),
		Port:         def.Port,
		LocalAddress: cmp.Or(p.LocalServiceAddress, defaultLocalAddress),
		LocalPort:    p.LocalServicePort,
		Leaf:         &Leaf{CertPEM: leaf.CertPEM, PrivateKeyPEM: leaf.PrivateKeyPEM, ValidBefore: leaf.ValidBefore},
		Roots:        rootPEMs(roots),
	}

	rt := m.src.Store.Read()
	defer rt.Abort()
	r := reader{ws: ws, rt: rt}
	proxyDefaults, err := r.proxyDefaults()
	if err != nil {
		return nil, err
	}
	own, err := r.serviceDefaults(dest)
	if err != nil {
		return nil, err
	}
	snap.Protocol = protocol(own, proxyDefaults)
	var ownConnectMs, ownRequestMs int
	if own != nil {
		ownConnectMs, ownRequestMs = own.LocalConnectTimeoutMs, own.LocalRequestTimeoutMs
	}
	snap.LocalConnectTimeout = localTimeout(p.Config, "local_connect_timeout_ms", ownConnectMs, proxyDefaults)
	snap.LocalRequestTimeout = localTimeout(p.Config, "local_request_timeout_ms", ownRequestMs, proxyDefaults)

	if snap.Intentions, err = r.intentions(dest); err != nil {
		return nil, err
	}
	mesh, err := r.mesh()
	if err != nil {
		return nil, err
	}
	snap.DefaultAllow = !m.src.DefaultDeny
	if mesh != nil && mesh.DefaultIntentionPolicy != "" {
		snap.DefaultAllow = mesh.DefaultIntentionPolicy == configentry.IntentionDefaultAllow
	}

	for _, u := range p.Upstreams {
		// Prepared-query upstreams need the query executed (and
		// re-executed as its results change); peered ones need peering.
		// Neither exists here yet: they get no listener.
		if (u.DestinationType != "" && u.DestinationType != structs.UpstreamDestTypeService) || u.DestinationPeer != "" {
			continue
		}
		// An upstream in another datacenter gets this one's config
		// entries (as its protocol does): that datacenter's are not in
		// this store.
		resolver, err := r.resolver(u.DestinationName)
		if err != nil {
			return nil, err
		}
		up := Upstream{
			Name:             u.DestinationName,
			Datacenter:       cmp.Or(u.Datacenter, m.src.Datacenter),
			LocalBindAddress: cmp.Or(u.LocalBindAddress, defaultLocalAddress),
			LocalBindPort:    u.LocalBindPort,
			ConnectTimeout:   connectTimeout(u, own, resolver),
		}
		var badConfig error
		up.Limits, up.PassiveHealthCheck, badConfig = upstreamLimits(u, own)
		if badConfig != nil {
			m.log.Warn("proxycfg: ignoring the upstream's limits and passive_health_check config",
				"proxy", def.ID, "upstream", u.DestinationName, "error", badConfig)
		}
		if resolver != nil {
			up.LoadBalancer, up.RequestTimeout = resolver.LoadBalancer, resolver.RequestTimeout
		}
		sd, err := r.serviceDefaults(u.DestinationName)
		if err != nil {
			return nil, err
		}
		up.Protocol = protocol(sd, proxyDefaults)
		router, err := r.router(u.DestinationName)
		if err != nil {
			return nil, err
		}
		if router != nil && configentry.IsHTTPLike(up.Protocol) {
			up.Routes = router.Routes
		}
		// Another datacenter's instances are not in this store: reaching
		// them takes WAN federation (or a mesh gateway), later.
		if up.Datacenter == m.src.Datacenter {
			if up.Endpoints, err = r.endpoints(u.DestinationName); err != nil {
				return nil, err
			}
		}
		snap.Upstreams = append(snap.Upstreams, up)
	}
	return snap, nil
}

// rootPEMs lists the roots' certificates, the active one first.
func rootPEMs(roots *structs.IndexedCARoots) []string {
	out := make([]string, 0, len(roots.Roots))
	for _, r := range roots.Roots {
		if r.ID == roots.ActiveRootID {
			out = append(out, r.RootCert)
		}
	}
	for _, r := range roots.Roots {
		if r.ID != roots.ActiveRootID {
			out = append(out, r.RootCert)
		}
	}
	return out
}

// protocol is a service's protocol: its service-defaults', else
// proxy-defaults' config "protocol", else tcp.
func protocol(sd *configentry.ServiceConfigEntry, pd *configentry.ProxyConfigEntry) string {
	if sd != nil && sd.Protocol != "" {
		return strings.ToLower(sd.Protocol)
	}
	if pd != nil {
		if s, ok := pd.Config["protocol"].(string); ok && s != "" {
			return strings.ToLower(s)
		}
	}
	return defaultProtocol
}

// connectTimeout is an upstream's: the registration's config
// "connect_timeout_ms", else the upstream's service-resolver
// ConnectTimeout, else the downstream service's service-defaults
// UpstreamConfig (the override for the upstream, else the defaults),
// else 5 seconds. The registration wins, as in Consul, where the central
// upstream config is the base the local one overrides.
func connectTimeout(u structs.Upstream, own *configentry.ServiceConfigEntry, resolver *configentry.ServiceResolverConfigEntry) time.Duration {
	if ms, ok := millis(u.Config["connect_timeout_ms"]); ok {
		return time.Duration(ms) * time.Millisecond
	}
	if resolver != nil && resolver.ConnectTimeout > 0 {
		return resolver.ConnectTimeout
	}
	if o := upstreamOverride(u, own); o != nil && o.ConnectTimeoutMs > 0 {
		return time.Duration(o.ConnectTimeoutMs) * time.Millisecond
	}
	if own != nil && own.UpstreamConfig != nil {
		if d := own.UpstreamConfig.Defaults; d != nil && d.ConnectTimeoutMs > 0 {
			return time.Duration(d.ConnectTimeoutMs) * time.Millisecond
		}
	}
	return defaultConnectTimeout
}

// upstreamOverride is the downstream's service-defaults override for
// upstream u, or nil.
func upstreamOverride(u structs.Upstream, own *configentry.ServiceConfigEntry) *configentry.UpstreamConfig {
	if own == nil || own.UpstreamConfig == nil {
		return nil
	}
	for _, o := range own.UpstreamConfig.Overrides {
		if o != nil && o.Name == u.DestinationName && o.Peer == "" {
			return o
		}
	}
	return nil
}

// upstreamLimits are an upstream's limits and passive health check:
// each the registration's Config key when given, else the service-defaults
// override's field for the upstream, else the defaults' field. A
// registration Config that does not decode is reported, and the
// service-defaults values are returned with the error: the registration
// was accepted with it (its Config is opaque to the catalog), so the
// proxy must still be configured.
func upstreamLimits(u structs.Upstream, own *configentry.ServiceConfigEntry) (*Limits, *configentry.PassiveHealthCheck, error) {
	var lim *configentry.UpstreamLimits
	var phc *configentry.PassiveHealthCheck
	if own != nil && own.UpstreamConfig != nil && own.UpstreamConfig.Defaults != nil {
		lim, phc = own.UpstreamConfig.Defaults.Limits, own.UpstreamConfig.Defaults.PassiveHealthCheck
	}
	if o := upstreamOverride(u, own); o != nil {
		lim, phc = cmp.Or(o.Limits, lim), cmp.Or(o.PassiveHealthCheck, phc)
	}
	local, err := configentry.DecodeUpstreamRegistrationConfig(u.Config)
	if err == nil {
		lim, phc = cmp.Or(local.Limits, lim), cmp.Or(local.PassiveHealthCheck, phc)
	}
	if lim == nil {
		return nil, phc, err
	}
	return &Limits{MaxConnections: lim.MaxConnections, MaxPendingRequests: lim.MaxPendingRequests,
		MaxConcurrentRequests: lim.MaxConcurrentRequests}, phc, err
}

// localTimeout is a timeout towards the local application: the proxy
// registration's Config key (milliseconds), else the service-defaults
// value sdMs, else proxy-defaults' Config key; 0 when none is set.
func localTimeout(reg map[string]any, key string, sdMs int, pd *configentry.ProxyConfigEntry) time.Duration {
	if ms, ok := millis(reg[key]); ok {
		return time.Duration(ms) * time.Millisecond
	}
	if sdMs > 0 {
		return time.Duration(sdMs) * time.Millisecond
	}
	if pd != nil {
		if ms, ok := millis(pd.Config[key]); ok {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return 0
}

// millis reads a positive millisecond count from opaque config: JSON
// gives float64, HCL and Go callers integers, and some write strings.
func millis(v any) (int64, bool) {
	var ms int64
	switch x := v.(type) {
	case float64:
		ms = int64(x)
	case int:
		ms = int64(x)
	case int64:
		ms = x
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, false
		}
		ms = n
	default:
		return 0, false
	}
	return ms, ms > 0
}

// reader reads config entries and instances, watching what it reads.
type reader struct {
	ws memdb.WatchSet
	rt *state.ReadTxn
}

func (r reader) entry(kind, name string) (configentry.Entry, error) {
	_, e, err := r.rt.ConfigEntry(r.ws, kind, name)
	if err != nil {
		return nil, fmt.Errorf("proxycfg: %w", err)
	}
	return e, nil
}

func (r reader) proxyDefaults() (*configentry.ProxyConfigEntry, error) {
	e, err := r.entry(configentry.ProxyDefaults, configentry.ProxyConfigGlobal)
	if e == nil {
		return nil, err
	}
	return e.(*configentry.ProxyConfigEntry), nil
}

func (r reader) serviceDefaults(name string) (*configentry.ServiceConfigEntry, error) {
	e, err := r.entry(configentry.ServiceDefaults, name)
	if e == nil {
		return nil, err
	}
	return e.(*configentry.ServiceConfigEntry), nil
}

func (r reader) resolver(name string) (*configentry.ServiceResolverConfigEntry, error) {
	e, err := r.entry(configentry.ServiceResolver, name)
	if e == nil {
		return nil, err
	}
	return e.(*configentry.ServiceResolverConfigEntry), nil
}

func (r reader) router(name string) (*configentry.ServiceRouterConfigEntry, error) {
	e, err := r.entry(configentry.ServiceRouter, name)
	if e == nil {
		return nil, err
	}
	return e.(*configentry.ServiceRouterConfigEntry), nil
}

func (r reader) mesh() (*configentry.MeshConfigEntry, error) {
	e, err := r.entry(configentry.MeshConfig, configentry.MeshConfigMesh)
	if e == nil {
		return nil, err
	}
	return e.(*configentry.MeshConfigEntry), nil
}

// intentions are the service-intentions entries that can apply to
// connections to dest: its own, then the wildcard's.
func (r reader) intentions(dest string) ([]*configentry.ServiceIntentionsConfigEntry, error) {
	var out []*configentry.ServiceIntentionsConfigEntry
	for _, n := range []string{dest, configentry.WildcardName} {
		e, err := r.entry(configentry.ServiceIntentions, n)
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, e.(*configentry.ServiceIntentionsConfigEntry))
		}
		if dest == configentry.WildcardName {
			break
		}
	}
	return out, nil
}

// endpoints are the healthy connect-capable instances of name in this
// datacenter, sorted by address and port; see weight for which are
// healthy.
func (r reader) endpoints(name string) ([]Endpoint, error) {
	_, csns, err := r.rt.CheckConnectServiceNodes(r.ws, name)
	if err != nil {
		return nil, fmt.Errorf("proxycfg: instances of %q: %w", name, err)
	}
	var out []Endpoint
	for _, csn := range csns {
		w := weight(csn)
		if w == 0 {
			continue
		}
		out = append(out, Endpoint{
			Address: cmp.Or(csn.Service.Address, csn.Node.Address),
			Port:    csn.Service.Port,
			Weight:  w,
		})
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	return out, nil
}

// weight is an instance's load-balancing weight, 0 when it must get no
// traffic. The rule is Consul's for its proxies' endpoints (not its
// DNS's, which keeps warning instances at full weight): an instance with
// a critical check (maintenance included) is out; one with a warning
// check stays, at its Weights.Warning, and is out when that is 0 (the
// operator asked for no traffic while warning); a passing one gets its
// Weights.Passing, at least 1. Zero Weights are unset ones: 1 and 1, as
// the catalog's register endpoint defaults them.
func weight(csn *structs.CheckServiceNode) int {
	ws := csn.Service.Weights
	if ws == (structs.Weights{}) {
		ws = structs.Weights{Passing: 1, Warning: 1}
	}
	warning := false
	for _, c := range csn.Checks {
		switch c.Status {
		case structs.HealthPassing:
		case structs.HealthWarning:
			warning = true
		default: // critical, maintenance, or anything unknown
			return 0
		}
	}
	if warning {
		return max(ws.Warning, 0)
	}
	return max(ws.Passing, 1)
}
