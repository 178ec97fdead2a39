package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// Compiling a Config checks every part of it before anything runs, so
// that Apply can refuse it whole; what it makes is immutable and shared
// by the connections that start while it is current.

const (
	defaultConnectTimeout = 5 * time.Second
	// Envoy's tcp_proxy closes a connection idle for an hour unless told
	// otherwise; 0 disables.
	defaultIdleTimeout = time.Hour
	handshakeTimeout   = 10 * time.Second
)

// state is one applied Config, as the connections and requests see it:
// a request reads the current state once and works with it throughout.
type state struct {
	listeners map[string]*listenerSpec
	clusters  map[string]*cluster
	routes    map[string]*routeTable      // RDS route configurations
	certs     map[string]*tls.Certificate // tls_certificate secrets
	roots     map[string]*x509.CertPool   // validation_context secrets
}

// cluster is where a listener or a route sends its traffic.
type cluster struct {
	name           string
	connectTimeout time.Duration
	tls            *upstreamTLS // nil: plain TCP
	proto          upstreamProtocol
	idleTimeout    time.Duration // of pooled HTTP connections; 0: none
	lb             lbSettings
	limits         circuitLimits
	outlier        outlierSettings
	// balance and endpoints are what the cluster's balancer is updated
	// with: lb, limits and outlier, and the healthy endpoints with their
	// weights.
	balance   balance.Config
	endpoints []balance.Endpoint
	poolKey   string // the settings its HTTP pool depends on

	// Set by Apply: the balancer's hosts, picker and guard (the picker
	// and guard may be replaced by Proxy.balance in tests), the pool and
	// metrics.
	hosts      []*host // healthy only
	hostByAddr map[string]*host
	picker     picker
	guard      guard
	bal        *balancer
	pool       *pool
	m          *clusterMetrics
}

type upstreamTLS struct {
	certSecret, rootsSecret string
	sni                     string
	san                     []stringMatcher // any, on URI SANs
	minVersion              uint16
	alpn                    []string
}

// listenerSpec is a listener's compiled configuration: a tcp_proxy to
// cluster, or an HTTP connection manager (http).
type listenerSpec struct {
	name    string
	addr    string // host:port to bind
	tls     *downstreamTLS
	rbac    []*rbacEngine // network RBAC: all must allow
	cluster string        // tcp_proxy
	idle    time.Duration // tcp_proxy; 0: none
	http    *httpSpec
	m       *listenerMetrics // set by Apply
}

type downstreamTLS struct {
	certSecret, rootsSecret string
	san                     []stringMatcher
	requireClientCert       bool
	minVersion              uint16
	alpn                    []string
}

func compile(cfg Config) (*state, error) {
	st := &state{
		listeners: map[string]*listenerSpec{},
		clusters:  map[string]*cluster{},
		routes:    map[string]*routeTable{},
		certs:     map[string]*tls.Certificate{},
		roots:     map[string]*x509.CertPool{},
	}
	for _, s := range cfg.Secrets {
		if err := st.addSecret(s); err != nil {
			return nil, fmt.Errorf("secret %q: %w", s.GetName(), err)
		}
	}
	cla := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, e := range cfg.Endpoints {
		if _, dup := cla[e.GetClusterName()]; dup {
			return nil, fmt.Errorf("endpoints %q: defined twice", e.GetClusterName())
		}
		cla[e.GetClusterName()] = e
	}
	for _, c := range cfg.Clusters {
		cl, err := st.compileCluster(c, cla)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		if _, dup := st.clusters[cl.name]; dup {
			return nil, fmt.Errorf("cluster %q: defined twice", cl.name)
		}
		st.clusters[cl.name] = cl
	}
	for _, rc := range cfg.Routes {
		if rc.GetName() == "" {
			return nil, errors.New("route configuration with no name")
		}
		if _, dup := st.routes[rc.GetName()]; dup {
			return nil, fmt.Errorf("route configuration %q: defined twice", rc.GetName())
		}
		t, err := compileRouteTable(rc, st.clusters)
		if err != nil {
			return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
		}
		st.routes[rc.GetName()] = t
	}
	addrs := map[string]string{}
	for _, l := range cfg.Listeners {
		ls, err := st.compileListener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if _, dup := st.listeners[ls.name]; dup {
			return nil, fmt.Errorf("listener %q: defined twice", ls.name)
		}
		if other, dup := addrs[ls.addr]; dup && !isPortZero(ls.addr) {
			return nil, fmt.Errorf("listener %q: address %s already used by listener %q", ls.name, ls.addr, other)
		}
		addrs[ls.addr] = ls.name
		st.listeners[ls.name] = ls
	}
	return st, nil
}

func isPortZero(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	return port == "0"
}

func (st *state) addSecret(s *tlsv3.Secret) error {
	if s.GetName() == "" {
		return errors.New("no name")
	}
	if _, ok := st.certs[s.GetName()]; ok {
		return errors.New("defined twice")
	}
	if _, ok := st.roots[s.GetName()]; ok {
		return errors.New("defined twice")
	}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		chain, err := inlineBytes(t.TlsCertificate.GetCertificateChain())
		if err != nil {
			return fmt.Errorf("certificate_chain: %w", err)
		}
		key, err := inlineBytes(t.TlsCertificate.GetPrivateKey())
		if err != nil {
			return fmt.Errorf("private_key: %w", err)
		}
		cert, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return err
		}
		st.certs[s.GetName()] = &cert
	case *tlsv3.Secret_ValidationContext:
		vc := t.ValidationContext
		if len(vc.GetMatchTypedSubjectAltNames()) > 0 || len(vc.GetMatchSubjectAltNames()) > 0 {
			return errors.New("subject alt name matchers in a validation context secret are not supported")
		}
		pem, err := inlineBytes(vc.GetTrustedCa())
		if err != nil {
			return fmt.Errorf("trusted_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("trusted_ca: no PEM certificate")
		}
		st.roots[s.GetName()] = pool
	default:
		return fmt.Errorf("unsupported secret type %T", t)
	}
	return nil
}

func inlineBytes(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	default:
		return nil, fmt.Errorf("unsupported data source %T (inline only)", s)
	}
}

func socketAddr(a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", errors.New("not a socket address")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("protocol %s is not supported", sa.GetProtocol())
	}
	pv, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok {
		return "", errors.New("no port value")
	}
	if pv.PortValue > 65535 {
		return "", fmt.Errorf("port %d out of range", pv.PortValue)
	}
	if net.ParseIP(sa.GetAddress()) == nil {
		return "", fmt.Errorf("address %q is not an IP", sa.GetAddress())
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(pv.PortValue))), nil
}

func (st *state) compileCluster(c *clusterv3.Cluster, cla map[string]*endpointv3.ClusterLoadAssignment) (*cluster, error) {
	if c.GetName() == "" {
		return nil, errors.New("no name")
	}
	if err := onlyFields(c, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"load_assignment", "circuit_breakers", "outlier_detection", "transport_socket",
		"typed_extension_protocol_options", "http2_protocol_options", "alt_stat_name",
		"least_request_lb_config", "ring_hash_lb_config", "maglev_lb_config"); err != nil {
		return nil, err
	}
	cl := &cluster{name: c.GetName(), connectTimeout: defaultConnectTimeout}
	if d := c.GetConnectTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf("connect_timeout %v is not a positive duration", d.AsDuration())
		}
		cl.connectTimeout = d.AsDuration()
	}
	var err error
	if cl.lb, err = parseLB(c); err != nil {
		return nil, err
	}
	if cl.limits, err = parseCircuitBreakers(c.GetCircuitBreakers()); err != nil {
		return nil, err
	}
	if cl.outlier, err = parseOutlierDetection(c.GetOutlierDetection()); err != nil {
		return nil, err
	}
	if cl.proto, cl.idleTimeout, err = parseProtocolOptions(c); err != nil {
		return nil, err
	}
	var la *endpointv3.ClusterLoadAssignment
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		if _, ok := c.GetClusterDiscoveryType().(*clusterv3.Cluster_Type); !ok {
			return nil, errors.New("unsupported cluster discovery type")
		}
		la = c.GetLoadAssignment()
		if la == nil {
			return nil, errors.New("static cluster with no load_assignment")
		}
	case clusterv3.Cluster_EDS:
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		var ok bool
		if la, ok = cla[name]; !ok {
			return nil, fmt.Errorf("no endpoints (ClusterLoadAssignment %q)", name)
		}
	default:
		return nil, fmt.Errorf("cluster type %s is not supported", c.GetType())
	}
	// Localities and priorities are not implemented: every healthy
	// endpoint is a host, with its weight.
	seen := map[string]bool{}
	for _, loc := range la.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
			default:
				continue
			}
			addr, err := socketAddr(lb.GetEndpoint().GetAddress())
			if err != nil {
				return nil, fmt.Errorf("endpoint: %w", err)
			}
			if seen[addr] {
				return nil, fmt.Errorf("endpoint %s listed twice", addr)
			}
			seen[addr] = true
			cl.endpoints = append(cl.endpoints, balance.Endpoint{Addr: addr, Weight: max(uint32Or(lb.GetLoadBalancingWeight(), 1), 1)})
		}
	}
	if cl.balance, err = balanceConfig(cl.lb, cl.limits, cl.outlier, len(cl.endpoints)); err != nil {
		return nil, err
	}
	if ts := c.GetTransportSocket(); ts != nil {
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := unpackTransportSocket(ts, ctx); err != nil {
			return nil, err
		}
		u, err := st.compileUpstreamTLS(ctx)
		if err != nil {
			return nil, fmt.Errorf("upstream TLS: %w", err)
		}
		switch {
		case len(u.alpn) > 0:
		case cl.proto == protoHTTP2:
			u.alpn = []string{"h2"}
		case cl.proto == protoAuto:
			u.alpn = []string{"h2", "http/1.1"}
		}
		cl.tls = u
	}
	cl.poolKey = poolKey(c)
	return cl, nil
}

// poolKey is what a cluster's HTTP pool depends on: its transport
// socket, protocol options and connect timeout (not its endpoints, nor
// the secrets' contents).
func poolKey(c *clusterv3.Cluster) string {
	var b strings.Builder
	det := proto.MarshalOptions{Deterministic: true}
	for _, m := range []proto.Message{c.GetTransportSocket(), c.GetConnectTimeout(), c.GetHttp2ProtocolOptions()} {
		raw, _ := det.Marshal(m)
		b.Write(raw)
		b.WriteByte(0)
	}
	keys := make([]string, 0, len(c.GetTypedExtensionProtocolOptions()))
	for k := range c.GetTypedExtensionProtocolOptions() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		raw, _ := det.Marshal(c.GetTypedExtensionProtocolOptions()[k])
		b.WriteString(k)
		b.Write(raw)
		b.WriteByte(0)
	}
	return b.String()
}

// onlyFields returns an error naming the fields set in m that are not
// among known: what the proxy does not implement is refused, not
// silently ignored.
func onlyFields(m proto.Message, known ...string) error {
	var bad []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(known, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("unsupported field %s", strings.Join(bad, ", "))
}

func unpackTransportSocket(ts *corev3.TransportSocket, into proto.Message) error {
	tc := ts.GetTypedConfig()
	if tc == nil {
		return fmt.Errorf("transport socket %q: no typed_config", ts.GetName())
	}
	if err := tc.UnmarshalTo(into); err != nil {
		return fmt.Errorf("transport socket %q: unsupported config %s: %v", ts.GetName(), tc.GetTypeUrl(), err)
	}
	return nil
}

// tlsCommon is a compiled CommonTlsContext.
type tlsCommon struct {
	cert, roots string // SDS secret names
	san         []stringMatcher
	minVersion  uint16
	alpn        []string
}

// commonTLS checks a CommonTlsContext of the form generate emits: the
// certificate and roots from SDS secrets (which must be in the Config),
// URI SAN matchers in the default validation context, ALPN protocols.
func (st *state) commonTLS(c *tlsv3.CommonTlsContext) (tc tlsCommon, err error) {
	if err := onlyFields(c, "tls_params", "tls_certificate_sds_secret_configs", "combined_validation_context", "alpn_protocols"); err != nil {
		return tc, err
	}
	switch v := c.GetTlsParams().GetTlsMinimumProtocolVersion(); v {
	case tlsv3.TlsParameters_TLS_AUTO, tlsv3.TlsParameters_TLSv1_2:
		tc.minVersion = tls.VersionTLS12
	case tlsv3.TlsParameters_TLSv1_3:
		tc.minVersion = tls.VersionTLS13
	default:
		return tc, fmt.Errorf("minimum TLS version %s is not supported", v)
	}
	sds := c.GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 {
		return tc, fmt.Errorf("want exactly one tls_certificate_sds_secret_config, have %d", len(sds))
	}
	tc.cert = sds[0].GetName()
	if _, ok := st.certs[tc.cert]; !ok {
		return tc, fmt.Errorf("no tls_certificate secret %q", tc.cert)
	}
	cv, ok := c.GetValidationContextType().(*tlsv3.CommonTlsContext_CombinedValidationContext)
	if !ok {
		return tc, fmt.Errorf("unsupported validation context %T: want combined_validation_context", c.GetValidationContextType())
	}
	tc.roots = cv.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName()
	if _, ok := st.roots[tc.roots]; !ok {
		return tc, fmt.Errorf("no validation_context secret %q", tc.roots)
	}
	def := cv.CombinedValidationContext.GetDefaultValidationContext()
	if def.GetTrustedCa() != nil || len(def.GetMatchSubjectAltNames()) > 0 {
		return tc, errors.New("default validation context: only match_typed_subject_alt_names is supported")
	}
	for _, m := range def.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			return tc, fmt.Errorf("SAN type %s is not supported", m.GetSanType())
		}
		f, err := compileStringMatcher(m.GetMatcher())
		if err != nil {
			return tc, fmt.Errorf("SAN matcher: %w", err)
		}
		tc.san = append(tc.san, f)
	}
	tc.alpn = c.GetAlpnProtocols()
	return tc, nil
}

func (st *state) compileUpstreamTLS(ctx *tlsv3.UpstreamTlsContext) (*upstreamTLS, error) {
	tc, err := st.commonTLS(ctx.GetCommonTlsContext())
	if err != nil {
		return nil, err
	}
	return &upstreamTLS{certSecret: tc.cert, rootsSecret: tc.roots, san: tc.san, sni: ctx.GetSni(),
		minVersion: tc.minVersion, alpn: tc.alpn}, nil
}

func (st *state) compileListener(l *listenerv3.Listener) (*listenerSpec, error) {
	if l.GetName() == "" {
		return nil, errors.New("no name")
	}
	addr, err := socketAddr(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	if len(l.GetListenerFilters()) > 0 {
		return nil, errors.New("listener filters are not supported")
	}
	if len(l.GetFilterChains()) != 1 || l.GetDefaultFilterChain() != nil {
		return nil, fmt.Errorf("want exactly one filter chain, have %d", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if fc.GetFilterChainMatch() != nil {
		return nil, errors.New("filter_chain_match is not supported")
	}
	ls := &listenerSpec{name: l.GetName(), addr: addr}
	if ts := fc.GetTransportSocket(); ts != nil {
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := unpackTransportSocket(ts, ctx); err != nil {
			return nil, err
		}
		tc, err := st.commonTLS(ctx.GetCommonTlsContext())
		if err != nil {
			return nil, fmt.Errorf("downstream TLS: %w", err)
		}
		ls.tls = &downstreamTLS{certSecret: tc.cert, rootsSecret: tc.roots, san: tc.san, minVersion: tc.minVersion,
			requireClientCert: ctx.GetRequireClientCertificate().GetValue(), alpn: tc.alpn}
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, errors.New("no filters")
	}
	for i, f := range filters {
		tc := f.GetTypedConfig()
		if tc == nil {
			return nil, fmt.Errorf("filter %q: no typed_config", f.GetName())
		}
		last := i == len(filters)-1
		msg, err := tc.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("filter %q: unsupported config %s: %v", f.GetName(), tc.GetTypeUrl(), err)
		}
		switch c := msg.(type) {
		case *netrbacv3.RBAC:
			if last {
				return nil, fmt.Errorf("filter %q: RBAC cannot be the last filter", f.GetName())
			}
			if c.GetShadowRules() != nil || c.GetMatcher() != nil || c.GetShadowMatcher() != nil {
				return nil, fmt.Errorf("filter %q: only rules are supported", f.GetName())
			}
			e, err := compileRBAC(c.GetRules(), true)
			if err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			ls.rbac = append(ls.rbac, e)
		case *tcpproxyv3.TcpProxy:
			if !last {
				return nil, fmt.Errorf("filter %q: tcp_proxy must be the last filter", f.GetName())
			}
			cl := c.GetCluster()
			if cl == "" {
				return nil, fmt.Errorf("filter %q: only a single cluster is supported", f.GetName())
			}
			ls.cluster = cl
			ls.idle = defaultIdleTimeout
			if d := c.GetIdleTimeout(); d != nil {
				ls.idle = d.AsDuration()
			}
		case *hcmv3.HttpConnectionManager:
			if !last {
				return nil, fmt.Errorf("filter %q: http_connection_manager must be the last filter", f.GetName())
			}
			h, err := st.compileHCM(c, ls.tls)
			if err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			ls.http = h
		default:
			return nil, fmt.Errorf("filter %q: unsupported config %s", f.GetName(), tc.GetTypeUrl())
		}
	}
	if ls.http != nil {
		return ls, nil
	}
	if ls.cluster == "" {
		return nil, errors.New("no terminal filter")
	}
	if _, ok := st.clusters[ls.cluster]; !ok {
		return nil, fmt.Errorf("no cluster %q", ls.cluster)
	}
	return ls, nil
}
