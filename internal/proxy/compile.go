package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
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

// state is one applied Config, as the connections see it.
type state struct {
	clusters map[string]*cluster
	certs    map[string]*tls.Certificate // tls_certificate secrets
	roots    map[string]*x509.CertPool   // validation_context secrets
}

// cluster is where a listener sends its connections.
type cluster struct {
	name           string
	connectTimeout time.Duration
	endpoints      []string // host:port, healthy only
	next           atomic.Uint64
	tls            *upstreamTLS       // nil: plain TCP
	connectErrors  prometheus.Counter // set by Apply
}

type upstreamTLS struct {
	certSecret, rootsSecret string
	sni                     string
	san                     []stringMatcher // any, on URI SANs
	minVersion              uint16
}

// listenerSpec is a listener's compiled configuration.
type listenerSpec struct {
	name    string
	addr    string // host:port to bind
	tls     *downstreamTLS
	rbac    []*rbacEngine // all must allow
	cluster string
	idle    time.Duration    // 0: none
	m       *listenerMetrics // set by Apply
}

type downstreamTLS struct {
	certSecret, rootsSecret string
	san                     []stringMatcher
	requireClientCert       bool
	minVersion              uint16
}

type compiled struct {
	state     *state
	listeners map[string]*listenerSpec
}

func compile(cfg Config) (*compiled, error) {
	st := &state{
		clusters: map[string]*cluster{},
		certs:    map[string]*tls.Certificate{},
		roots:    map[string]*x509.CertPool{},
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
	out := &compiled{state: st, listeners: map[string]*listenerSpec{}}
	addrs := map[string]string{}
	for _, l := range cfg.Listeners {
		ls, err := st.compileListener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if _, dup := out.listeners[ls.name]; dup {
			return nil, fmt.Errorf("listener %q: defined twice", ls.name)
		}
		if other, dup := addrs[ls.addr]; dup && !isPortZero(ls.addr) {
			return nil, fmt.Errorf("listener %q: address %s already used by listener %q", ls.name, ls.addr, other)
		}
		addrs[ls.addr] = ls.name
		out.listeners[ls.name] = ls
	}
	return out, nil
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
	cl := &cluster{name: c.GetName(), connectTimeout: defaultConnectTimeout}
	if d := c.GetConnectTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf("connect_timeout %v is not a positive duration", d.AsDuration())
		}
		cl.connectTimeout = d.AsDuration()
	}
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, fmt.Errorf("lb_policy %s is not supported", c.GetLbPolicy())
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
	// Localities, priorities and weights are not implemented yet: every
	// healthy endpoint is one round-robin slot.
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
			cl.endpoints = append(cl.endpoints, addr)
		}
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
		cl.tls = u
	}
	return cl, nil
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

// commonTLS checks a CommonTlsContext of the form generate emits: the
// certificate and roots from SDS secrets (which must be in the Config),
// URI SAN matchers in the default validation context.
func (st *state) commonTLS(c *tlsv3.CommonTlsContext) (cert, roots string, san []stringMatcher, minVersion uint16, err error) {
	switch v := c.GetTlsParams().GetTlsMinimumProtocolVersion(); v {
	case tlsv3.TlsParameters_TLS_AUTO, tlsv3.TlsParameters_TLSv1_2:
		minVersion = tls.VersionTLS12
	case tlsv3.TlsParameters_TLSv1_3:
		minVersion = tls.VersionTLS13
	default:
		return "", "", nil, 0, fmt.Errorf("minimum TLS version %s is not supported", v)
	}
	if len(c.GetTlsCertificates()) > 0 {
		return "", "", nil, 0, errors.New("inline tls_certificates are not supported: use SDS")
	}
	sds := c.GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 {
		return "", "", nil, 0, fmt.Errorf("want exactly one tls_certificate_sds_secret_config, have %d", len(sds))
	}
	cert = sds[0].GetName()
	if _, ok := st.certs[cert]; !ok {
		return "", "", nil, 0, fmt.Errorf("no tls_certificate secret %q", cert)
	}
	cv, ok := c.GetValidationContextType().(*tlsv3.CommonTlsContext_CombinedValidationContext)
	if !ok {
		return "", "", nil, 0, fmt.Errorf("unsupported validation context %T: want combined_validation_context", c.GetValidationContextType())
	}
	roots = cv.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName()
	if _, ok := st.roots[roots]; !ok {
		return "", "", nil, 0, fmt.Errorf("no validation_context secret %q", roots)
	}
	def := cv.CombinedValidationContext.GetDefaultValidationContext()
	if def.GetTrustedCa() != nil || len(def.GetMatchSubjectAltNames()) > 0 {
		return "", "", nil, 0, errors.New("default validation context: only match_typed_subject_alt_names is supported")
	}
	for _, m := range def.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			return "", "", nil, 0, fmt.Errorf("SAN type %s is not supported", m.GetSanType())
		}
		f, err := compileStringMatcher(m.GetMatcher())
		if err != nil {
			return "", "", nil, 0, fmt.Errorf("SAN matcher: %w", err)
		}
		san = append(san, f)
	}
	return cert, roots, san, minVersion, nil
}

func (st *state) compileUpstreamTLS(ctx *tlsv3.UpstreamTlsContext) (*upstreamTLS, error) {
	cert, roots, san, minV, err := st.commonTLS(ctx.GetCommonTlsContext())
	if err != nil {
		return nil, err
	}
	return &upstreamTLS{certSecret: cert, rootsSecret: roots, san: san, sni: ctx.GetSni(), minVersion: minV}, nil
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
		cert, roots, san, minV, err := st.commonTLS(ctx.GetCommonTlsContext())
		if err != nil {
			return nil, fmt.Errorf("downstream TLS: %w", err)
		}
		ls.tls = &downstreamTLS{certSecret: cert, rootsSecret: roots, san: san, minVersion: minV,
			requireClientCert: ctx.GetRequireClientCertificate().GetValue()}
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
			e, err := compileRBAC(c.GetRules())
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
			if err := st.compileHCMAsL4(ls, c); err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
		default:
			return nil, fmt.Errorf("filter %q: unsupported config %s", f.GetName(), tc.GetTypeUrl())
		}
	}
	if ls.cluster == "" {
		return nil, errors.New("no terminal filter")
	}
	if _, ok := st.clusters[ls.cluster]; !ok {
		return nil, fmt.Errorf("no cluster %q", ls.cluster)
	}
	return ls, nil
}

// compileHCMAsL4 runs an HTTP listener as a TCP proxy to the one cluster
// all its routes lead to: L7 (routes, per-request RBAC) is a later
// increment. Its HTTP RBAC filter is decided at connection time,
// fail-closed (see rbac.go), so that no caller gets more than the
// intentions grant.
func (st *state) compileHCMAsL4(ls *listenerSpec, c *hcmv3.HttpConnectionManager) error {
	rc, ok := c.GetRouteSpecifier().(*hcmv3.HttpConnectionManager_RouteConfig)
	if !ok {
		return errors.New("only an inline route_config is supported")
	}
	for _, vh := range rc.RouteConfig.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			ra, ok := r.GetAction().(*routev3.Route_Route)
			if !ok {
				return fmt.Errorf("route %q: only route actions are supported", r.GetName())
			}
			cl, ok := ra.Route.GetClusterSpecifier().(*routev3.RouteAction_Cluster)
			if !ok {
				return fmt.Errorf("route %q: only a single cluster is supported", r.GetName())
			}
			if ls.cluster != "" && ls.cluster != cl.Cluster {
				return errors.New("routes to more than one cluster need L7, not supported yet")
			}
			ls.cluster = cl.Cluster
		}
	}
	if ls.cluster == "" {
		return errors.New("no route")
	}
	for _, hf := range c.GetHttpFilters() {
		tc := hf.GetTypedConfig()
		if tc == nil {
			return fmt.Errorf("http filter %q: no typed_config", hf.GetName())
		}
		msg, err := tc.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("http filter %q: unsupported config %s: %v", hf.GetName(), tc.GetTypeUrl(), err)
		}
		switch h := msg.(type) {
		case *httprbacv3.RBAC:
			if h.GetShadowRules() != nil || h.GetMatcher() != nil || h.GetShadowMatcher() != nil {
				return fmt.Errorf("http filter %q: only rules are supported", hf.GetName())
			}
			e, err := compileRBAC(h.GetRules())
			if err != nil {
				return fmt.Errorf("http filter %q: %w", hf.GetName(), err)
			}
			ls.rbac = append(ls.rbac, e)
		case *routerv3.Router:
		default:
			return fmt.Errorf("http filter %q: unsupported config %s", hf.GetName(), tc.GetTypeUrl())
		}
	}
	if d := c.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		ls.idle = d.AsDuration()
	}
	return nil
}
