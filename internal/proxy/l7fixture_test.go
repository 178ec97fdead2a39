package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// Fixtures of the L7 tests: Envoy resources of the shapes the data plane
// contract (the generator's output) describes, built directly.

const (
	leafSecret  = "default"
	rootsSecret = "ROOT_CA"
	pubListener = "public_listener"
	localApp    = "local_app"
)

func anyOf(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func sockAddr(a net.Addr) *corev3.Address {
	ta := a.(*net.TCPAddr)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ta.IP.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ta.Port)}}}}
}

var anyPort = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}

func spiffeID(service string) string {
	return connect.ServiceID{TrustDomain: td, Datacenter: "dc1", Service: service}.String()
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func regexM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func secretsOf(leaf *proxycfg.Leaf, roots ...string) []*tlsv3.Secret {
	var pem string
	for _, r := range roots {
		pem += r + "\n"
	}
	return []*tlsv3.Secret{
		{Name: leafSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: leaf.CertPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: leaf.PrivateKeyPEM}},
		}}},
		{Name: rootsSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: pem}},
		}}},
	}
}

func commonTLSContext(san *matcherv3.StringMatcher, alpn ...string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: leafSecret, SdsConfig: adsSource()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: san,
			}}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: rootsSecret, SdsConfig: adsSource()},
		}},
		AlpnProtocols: alpn,
	}
}

func tlsSocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(m)}}
}

// httpRBACAllowAll is the HTTP RBAC of default allow with no intention.
func httpRBACAllowAll() *rbacv3.RBAC { return &rbacv3.RBAC{Action: rbacv3.RBAC_DENY} }

// denyBody is the contract's local reply body for RBAC denials.
func denyBody(service string) string {
	return "RBAC: access denied: the intentions of " + service + " do not allow this request\n"
}

func hcm(stat string, route any, filters ...proto.Message) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{StatPrefix: stat, CodecType: hcmv3.HttpConnectionManager_AUTO}
	switch r := route.(type) {
	case *routev3.RouteConfiguration:
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: r}
	case string:
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: r}}
	}
	for _, f := range filters {
		name := "envoy.filters.http.rbac"
		if _, ok := f.(*routerv3.Router); ok {
			name = "envoy.filters.http.router"
		}
		h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(f)}})
	}
	return h
}

func filterOf(name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(m)}}
}

// publicListenerL7 is the contract's public listener of an http service:
// mTLS with ALPN h2/http1.1, network RBAC, then an HCM with per-request
// RBAC and an inline route to local_app.
func publicListenerL7(service string, rules *rbacv3.RBAC, route *routev3.Route) *listenerv3.Listener {
	if route == nil {
		route = routeTo(localApp, prefixMatch("/"))
	}
	h := hcm(pubListener, &routev3.RouteConfiguration{Name: pubListener, VirtualHosts: []*routev3.VirtualHost{{
		Name: pubListener, Domains: []string{"*"}, Routes: []*routev3.Route{route},
	}}}, &httprbacv3.RBAC{Rules: rules}, &routerv3.Router{})
	h.LocalReplyConfig = &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
			Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_EQ, Value: &corev3.RuntimeUInt32{DefaultValue: 403, RuntimeKey: "unused"}},
		}}},
		Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: denyBody(service)}},
	}}}
	netRBAC := &netrbacv3.RBAC{StatPrefix: "connect_authz", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}}
	return &listenerv3.Listener{
		Name:    pubListener,
		Address: sockAddr(anyPort),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{filterOf("envoy.filters.network.rbac", netRBAC), filterOf("envoy.filters.network.http_connection_manager", h)},
			TransportSocket: tlsSocket(&tlsv3.DownstreamTlsContext{
				CommonTlsContext:         commonTLSContext(regexM("^spiffe://"+regexp.QuoteMeta(td)+"/ns/[^/]+/dc/[^/]+/svc/[^/]+$"), "h2", "http/1.1"),
				RequireClientCertificate: wrapperspb.Bool(true),
			}),
		}},
	}
}

// upstreamListenerL7 is the contract's upstream listener of an http
// upstream: plaintext, HCM with RDS route configuration name.
func upstreamListenerL7(name string) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:    name,
		Address: sockAddr(anyPort),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{
			filterOf("envoy.filters.network.http_connection_manager", hcm("upstream."+name, name, &routerv3.Router{})),
		}}},
	}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func routeTo(cluster string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
	}}}
}

// routeConfig is an RDS route configuration: routes, then the catch-all
// to cluster.
func routeConfig(name, cluster string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: name, Domains: []string{"*"}, Routes: append(routes, routeTo(cluster, prefixMatch("/"))),
	}}}
}

func http2Explicit() map[string]*anypb.Any {
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})}
}

func autoConfig() map[string]*anypb.Any {
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}},
	})}
}

func loadAssignment(name string, eps ...net.Addr) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range eps {
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(a)}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// localAppCluster is the static local_app cluster, HTTP/2 prior
// knowledge if h2.
func localAppCluster(app net.Addr, h2 bool) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 localApp,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       loadAssignment(localApp, app),
	}
	if h2 {
		c.TypedExtensionProtocolOptions = http2Explicit()
	}
	return c
}

func clusterName(service string) string { return service + ".default.dc1.internal." + td }

// meshCluster is an upstream's EDS cluster: mTLS to its sidecars, ALPN
// by auto_config.
func meshCluster(service string) *clusterv3.Cluster {
	name := clusterName(service)
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:              &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		ConnectTimeout:                durationpb.New(5 * time.Second),
		TypedExtensionProtocolOptions: autoConfig(),
		OutlierDetection:              &clusterv3.OutlierDetection{},
		TransportSocket: tlsSocket(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: commonTLSContext(exact(spiffeID(service)), "h2", "http/1.1"),
			Sni:              name,
		}),
	}
}

// plainCluster is an EDS cluster without TLS, HTTP/1.1 unless h2.
func plainCluster(name string, h2 bool) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(5 * time.Second),
	}
	if h2 {
		c.TypedExtensionProtocolOptions = http2Explicit()
	}
	return c
}

// inboundConfig is the inbound half of a sidecar of an http service.
func inboundConfig(service string, leaf *proxycfg.Leaf, roots []string, app net.Addr, h2 bool, rules *rbacv3.RBAC) Config {
	return Config{
		Listeners: []*listenerv3.Listener{publicListenerL7(service, rules, nil)},
		Clusters:  []*clusterv3.Cluster{localAppCluster(app, h2)},
		Secrets:   secretsOf(leaf, roots...),
	}
}

// outboundTo adds to cfg an upstream listener "<service>" with its route
// configuration and mesh cluster to the given sidecars.
func outboundTo(cfg Config, service string, sidecars ...net.Addr) Config {
	name := clusterName(service)
	cfg.Listeners = append(cfg.Listeners, upstreamListenerL7(service))
	cfg.Routes = append(cfg.Routes, routeConfig(service, name))
	cfg.Clusters = append(cfg.Clusters, meshCluster(service))
	cfg.Endpoints = append(cfg.Endpoints, loadAssignment(name, sidecars...))
	return cfg
}

// app is a local application: an HTTP/1.1 and h2c server that counts the
// connections it accepted.
type app struct {
	addr     net.Addr
	accepted atomic.Int64
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newApp(t *testing.T, h http.Handler) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{addr: ln.Addr()}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(countingListener{ln, &a.accepted}) })
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return a
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr()
	ln.Close()
	return a
}

// clients: HTTP/1.1 and h2c prior knowledge, closed at cleanup.
func h1Client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func h2cClient(t *testing.T) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// tlsClient presents leaf to a public listener, offering alpn.
func tlsClient(t *testing.T, leaf *proxycfg.Leaf, alpn ...string) *http.Client {
	t.Helper()
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: alpn}
	tr := &http.Transport{Protocols: &protos, DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func urlOf(a net.Addr, path string) string { return "http://" + a.String() + path }

func itoa(n int) string { return strconv.Itoa(n) }

// retryPolicy is a route retry policy with previous_hosts.
func retryPolicyOf(on string, n uint32) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:    on,
		NumRetries: wrapperspb.UInt32(n),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: anyOf(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 5,
		RetryBackOff:                  &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)},
	}
}
