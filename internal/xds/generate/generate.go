// Package generate turns a proxycfg.Snapshot into the Envoy v3 xDS
// resources of one sidecar proxy: pure functions, snapshot in, resources
// out, with no knowledge of streams, nonces or versions.
//
// Resources of a proxy:
//
//   - secrets (SDS): "default", the leaf chain and key, and "ROOT_CA", the
//     trusted roots;
//   - the public listener "public_listener:<addr>:<port>": mTLS with the
//     leaf, client certificate required and checked against the roots and
//     the trust domain, intentions enforced (see rbac.go), then to the
//     "local_app" cluster;
//   - "local_app": a static cluster of the local application;
//   - per upstream, the listener "<name>:<bind addr>:<bind port>" and the
//     EDS cluster "<name>.default.<dc>.internal.<trust domain>" (Consul's
//     SNI naming) with its ClusterLoadAssignment, TLS origination
//     presenting the leaf and verifying the upstream's SPIFFE ID, its
//     load-balancing policy, circuit breakers and outlier detection
//     (cluster.go); for an HTTP-like upstream, the RouteConfiguration
//     "<name>" its listener fetches by RDS (route.go).
//
// Sidecars speak TLS 1.3 to each other; for HTTP-like services they
// negotiate HTTP/2 or HTTP/1.1 by ALPN, whatever the application speaks.
package generate

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// Names of resources that other resources refer to.
const (
	LocalAppCluster = "local_app"
	LeafSecret      = "default"
	RootsSecret     = "ROOT_CA"
)

const defaultConnectTimeout = 5 * time.Second

// Resources returns the proxy's resources by type. Every resource passes
// its Validate(); an error names the proxy and what of its snapshot is
// unusable, and no resources are returned with it.
func Resources(snap *proxycfg.Snapshot) (map[resource.Type][]types.Resource, error) {
	if snap == nil {
		return nil, fmt.Errorf("xds: no snapshot")
	}
	g := &gen{snap: snap}
	out, err := g.all()
	if err != nil {
		return nil, fmt.Errorf("xds: proxy %q: %w", snap.ProxyID, err)
	}
	for typ, rs := range out {
		for _, r := range rs {
			v, ok := r.(interface{ ValidateAll() error })
			if !ok {
				continue
			}
			if err := v.ValidateAll(); err != nil {
				return nil, fmt.Errorf("xds: proxy %q: invalid %s %q: %w", snap.ProxyID, typ, cache.GetResourceName(r), err)
			}
		}
	}
	return out, nil
}

// ClusterName is Consul's SNI-style name of a service's cluster in a
// datacenter: <service>.default.<dc>.internal.<trust domain>.
func ClusterName(service, datacenter, trustDomain string) string {
	return fmt.Sprintf("%s.%s.%s.internal.%s", service, connect.DefaultNamespace, datacenter, trustDomain)
}

// PublicListenerName is the name of the inbound listener on addr:port.
func PublicListenerName(addr string, port int) string {
	return "public_listener:" + net.JoinHostPort(addr, strconv.Itoa(port))
}

// UpstreamListenerName is the name of an upstream's outbound listener.
func UpstreamListenerName(u proxycfg.Upstream) string {
	return u.Name + ":" + net.JoinHostPort(bindAddress(u), strconv.Itoa(u.LocalBindPort))
}

func bindAddress(u proxycfg.Upstream) string {
	if u.LocalBindAddress == "" {
		return "127.0.0.1"
	}
	return u.LocalBindAddress
}

type gen struct {
	snap *proxycfg.Snapshot
}

func (g *gen) all() (map[resource.Type][]types.Resource, error) {
	s := g.snap
	switch {
	case s.Service == "":
		return nil, fmt.Errorf("no service name")
	case s.TrustDomain == "" || s.Datacenter == "":
		return nil, fmt.Errorf("no trust domain or datacenter")
	case s.Leaf == nil || s.Leaf.CertPEM == "" || s.Leaf.PrivateKeyPEM == "":
		return nil, fmt.Errorf("no leaf certificate")
	case len(s.Roots) == 0:
		return nil, fmt.Errorf("no CA roots")
	case s.Port <= 0 || s.Port > 65535:
		return nil, fmt.Errorf("public listener port %d out of range", s.Port)
	case s.LocalPort <= 0 || s.LocalPort > 65535:
		return nil, fmt.Errorf("local application port %d out of range", s.LocalPort)
	}
	out := map[resource.Type][]types.Resource{
		resource.SecretType:   g.secrets(),
		resource.ClusterType:  {g.localAppCluster()},
		resource.EndpointType: {},
		resource.ListenerType: {},
		resource.RouteType:    {},
	}
	pub, err := g.publicListener()
	if err != nil {
		return nil, err
	}
	out[resource.ListenerType] = append(out[resource.ListenerType], pub)
	seen := map[string]bool{}
	for _, u := range s.Upstreams {
		if u.Name == "" {
			return nil, fmt.Errorf("upstream with no name")
		}
		if u.LocalBindPort <= 0 || u.LocalBindPort > 65535 {
			return nil, fmt.Errorf("upstream %q: local bind port %d out of range", u.Name, u.LocalBindPort)
		}
		if ln := UpstreamListenerName(u); seen[ln] {
			return nil, fmt.Errorf("upstream %q: listener %q defined twice", u.Name, ln)
		} else {
			seen[ln] = true
		}
		dc := u.Datacenter
		if dc == "" {
			dc = s.Datacenter
		}
		name := ClusterName(u.Name, dc, s.TrustDomain)
		route := UpstreamRouteName(u, s.Datacenter)
		out[resource.ListenerType] = append(out[resource.ListenerType], g.upstreamListener(u, name, route))
		if seen["cluster:"+name] {
			continue // two listeners for one upstream share its cluster and routes
		}
		seen["cluster:"+name] = true
		out[resource.ClusterType] = append(out[resource.ClusterType], g.upstreamCluster(u, dc, name))
		out[resource.EndpointType] = append(out[resource.EndpointType], loadAssignment(name, u.Endpoints))
		if isHTTP(u.Protocol) {
			rc, err := upstreamRoutes(route, name, u)
			if err != nil {
				return nil, err
			}
			out[resource.RouteType] = append(out[resource.RouteType], rc)
		}
	}
	return out, nil
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("xds: marshal %T: %v", m, err)) // only for unregistered types: a bug
	}
	return a
}

func socketAddress(addr string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func isHTTP(protocol string) bool {
	switch protocol {
	case "http", "http2", "grpc":
		return true
	}
	return false
}

func (g *gen) localAppCluster() *clusterv3.Cluster {
	s := g.snap
	addr := s.LocalAddress
	if addr == "" {
		addr = "127.0.0.1"
	}
	timeout := s.LocalConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	return &clusterv3.Cluster{
		Name:                          LocalAppCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(timeout),
		TypedExtensionProtocolOptions: localAppProtocolOptions(s.Protocol),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: LocalAppCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(addr, s.LocalPort)}},
			}}}},
		},
	}
}

func (g *gen) upstreamCluster(u proxycfg.Upstream, dc, name string) *clusterv3.Cluster {
	timeout := u.ConnectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	peer := connect.ServiceID{TrustDomain: g.snap.TrustDomain, Datacenter: dc, Service: u.Name}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		ConnectTimeout:       durationpb.New(timeout),
		CircuitBreakers:      circuitBreakers(u.Limits),
		// Unhealthy instances are never sent: the snapshot holds only
		// passing ones, so there is nothing for active health checks to
		// add. Outlier detection catches the failures checks miss.
		OutlierDetection:              outlierDetection(u.PassiveHealthCheck),
		TypedExtensionProtocolOptions: upstreamProtocolOptions(u.Protocol),
		TransportSocket:               upstreamTLSWithALPN(name, peer.String(), upstreamALPN(u.Protocol)),
	}
	lbPolicy(c, u.LoadBalancer)
	return c
}

// loadAssignment puts the endpoints, healthy ones only, in one locality.
func loadAssignment(cluster string, eps []proxycfg.Endpoint) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(eps) == 0 {
		return la
	}
	lbs := make([]*endpointv3.LbEndpoint, 0, len(eps))
	for _, e := range eps {
		w := e.Weight
		if w < 1 {
			w = 1
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.Address, e.Port)}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(w)),
		})
	}
	la.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return la
}

func (g *gen) publicListener() (*listenerv3.Listener, error) {
	s := g.snap
	rules := g.rules()
	netRBAC := networkRBAC(s.TrustDomain, rules, s.DefaultAllow, isHTTP(s.Protocol))
	filters := []*listenerv3.Filter{{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(netRBAC)}}}
	var alpn []string
	if isHTTP(s.Protocol) {
		httpRBAC, err := httpRBAC(s.TrustDomain, rules, s.DefaultAllow)
		if err != nil {
			return nil, err
		}
		filters = append(filters, g.publicHCM(mustAny(httpRBAC)))
		alpn = httpALPN
	} else {
		filters = append(filters, tcpProxyFilter("public_listener", LocalAppCluster))
	}
	addr := s.Address
	if addr == "" {
		addr = "0.0.0.0"
	}
	return &listenerv3.Listener{
		Name:             PublicListenerName(addr, s.Port),
		Address:          socketAddress(addr, s.Port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Filters:         filters,
			TransportSocket: downstreamTLS(s.TrustDomain, alpn),
		}},
	}, nil
}

func (g *gen) upstreamListener(u proxycfg.Upstream, cluster, route string) *listenerv3.Listener {
	stat := "upstream." + u.Name
	var f *listenerv3.Filter
	if isHTTP(u.Protocol) {
		f = upstreamHCM(stat, route)
	} else {
		f = tcpProxyFilter(stat, cluster)
	}
	return &listenerv3.Listener{
		Name:             UpstreamListenerName(u),
		Address:          socketAddress(bindAddress(u), u.LocalBindPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}
}

func tcpProxyFilter(stat, cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: "envoy.filters.network.tcp_proxy",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       stat,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		})},
	}
}

func hcm(c *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(c)},
	}
}

// websocketUpgrade lets WebSocket upgrades through an HTTP connection
// manager, as Consul's Envoy configuration does: Envoy refuses them
// (403) otherwise.
func websocketUpgrade() []*hcmv3.HttpConnectionManager_UpgradeConfig {
	return []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
}

// publicHCM serves an HTTP-like service's inbound requests: each is
// decided by rbac (an HTTP RBAC filter config), then sent to the local
// application by the one inline route (one route needs no RDS), bounded
// by LocalRequestTimeout. A request the intentions deny is answered 403
// with a body that says so (Envoy's own is a bare "RBAC: access
// denied"); gRPC callers get it as grpc-status and grpc-message, which
// Envoy derives from a local reply by itself.
func (g *gen) publicHCM(rbac *anypb.Any) *listenerv3.Filter {
	const stat = "public_listener"
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: LocalAppCluster}}
	if t := g.snap.LocalRequestTimeout; t > 0 {
		action.Timeout = durationpb.New(t)
	}
	return hcm(&hcmv3.HttpConnectionManager{
		StatPrefix:     stat,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		UpgradeConfigs: websocketUpgrade(),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: stat,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    stat,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: action},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rbac}},
			routerFilter(),
		},
		LocalReplyConfig: &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
			Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
				StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
					Op:    accesslogv3.ComparisonFilter_EQ,
					Value: &corev3.RuntimeUInt32{DefaultValue: http.StatusForbidden},
				}},
			}},
			Body: inline(DeniedBody(g.snap.Service)),
		}}},
	})
}

// DeniedBody is the body of the 403 a public listener answers a request
// the intentions of service deny.
func DeniedBody(service string) string {
	return "RBAC: access denied: the intentions of " + service + " do not allow this request\n"
}

// upstreamHCM takes the application's requests to an HTTP-like upstream
// (HTTP/1.1, or HTTP/2 with prior knowledge) and routes them by the
// upstream's RouteConfiguration, fetched by RDS.
func upstreamHCM(stat, route string) *listenerv3.Filter {
	return hcm(&hcmv3.HttpConnectionManager{
		StatPrefix:     stat,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		UpgradeConfigs: websocketUpgrade(),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: route,
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	})
}
