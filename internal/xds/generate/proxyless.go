package generate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// ProxylessCertProvider is the certificate provider instance a proxyless
// gRPC client's bootstrap must define ("certificate_providers"), for
// instance a file_watcher of the proxy's leaf, key and roots: the
// clusters sent to such clients name it for both the identity and the
// roots, since gRPC takes certificates from its bootstrap, never over SDS.
const ProxylessCertProvider = "trellis"

// ProxylessResources renders snap for a proxyless gRPC client (grpc-go,
// grpc-java, ... with an xDS bootstrap) that identifies as the proxy
// snap.ProxyID: the application dials "xds:///<upstream>" itself, so
// there is no public listener, no local_app and no secrets, and for each
// upstream:
//
//   - the API listener "<upstream>": an HTTP connection manager taking its
//     route over RDS, with the router filter alone;
//   - the RouteConfiguration "<upstream>": one virtual host, domains "*",
//     one route, prefix "/", to the upstream's cluster;
//   - the EDS cluster (same name as the sidecar's), round robin, TLS to
//     the upstream's sidecars presenting the proxy's leaf and accepting
//     only the upstream's SPIFFE ID, both through ProxylessCertProvider;
//   - its ClusterLoadAssignment, the healthy instances in one locality of
//     weight 1 (gRPC ignores a locality without one).
//
// Connect timeouts and the listeners' bind addresses mean nothing to a
// client library and are left out. Every resource passes ValidateAll; an
// error names the proxy and no resources are returned with it.
func ProxylessResources(snap *proxycfg.Snapshot) (map[resource.Type][]types.Resource, error) {
	if snap == nil {
		return nil, fmt.Errorf("xds: no snapshot")
	}
	out, err := proxyless(snap)
	if err != nil {
		return nil, fmt.Errorf("xds: proxy %q: proxyless: %w", snap.ProxyID, err)
	}
	for typ, rs := range out {
		for _, r := range rs {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				return nil, fmt.Errorf("xds: proxy %q: proxyless: invalid %s %q: %w", snap.ProxyID, typ, cache.GetResourceName(r), err)
			}
		}
	}
	return out, nil
}

func proxyless(s *proxycfg.Snapshot) (map[resource.Type][]types.Resource, error) {
	switch {
	case s.Service == "":
		return nil, fmt.Errorf("no service name")
	case s.TrustDomain == "" || s.Datacenter == "":
		return nil, fmt.Errorf("no trust domain or datacenter")
	}
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: {},
		resource.RouteType:    {},
		resource.ClusterType:  {},
		resource.EndpointType: {},
	}
	// A client names an upstream by service alone (xds:///db), so one
	// name must mean one cluster: the sidecar's two listeners for one
	// upstream are one here, and the same name in two datacenters is
	// ambiguous.
	dcOf := map[string]string{}
	for _, u := range s.Upstreams {
		if u.Name == "" {
			return nil, fmt.Errorf("upstream with no name")
		}
		dc := u.Datacenter
		if dc == "" {
			dc = s.Datacenter
		}
		if prev, ok := dcOf[u.Name]; ok {
			if prev != dc {
				return nil, fmt.Errorf("upstream %q is in datacenters %q and %q: a gRPC client dials xds:///%s and could not tell them apart", u.Name, prev, dc, u.Name)
			}
			continue
		}
		dcOf[u.Name] = dc
		cluster := ClusterName(u.Name, dc, s.TrustDomain)
		peer := connect.ServiceID{TrustDomain: s.TrustDomain, Datacenter: dc, Service: u.Name}
		out[resource.ListenerType] = append(out[resource.ListenerType], apiListener(u.Name))
		out[resource.RouteType] = append(out[resource.RouteType], proxylessRoute(u.Name, cluster))
		out[resource.ClusterType] = append(out[resource.ClusterType], proxylessCluster(cluster, peer.String()))
		out[resource.EndpointType] = append(out[resource.EndpointType], proxylessLoadAssignment(cluster, u.Endpoints))
	}
	return out, nil
}

// apiListener is what a gRPC client resolving xds:///<name> asks for: a
// listener named name whose api_listener is an HTTP connection manager.
func apiListener(name string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "upstream." + name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: name,
		}},
		// gRPC requires the terminal router filter last.
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// proxylessRoute sends every call to cluster.
func proxylessRoute(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	}
}

func proxylessCluster(name, spiffeID string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		TransportSocket:      proxylessTLS(name, spiffeID),
	}
}

// proxylessTLS is mTLS to the upstream's sidecars as gRPC's xDS
// credentials read it (gRFC A29): certificates only from certificate
// provider instances, no tls_params (gRPC refuses the cluster when it is
// set), and the peer checked against match_subject_alt_names, the one
// SAN matcher field gRPC reads. match_typed_subject_alt_names says the
// same for Envoy, which would otherwise check any SAN type. gRPC sends
// the SNI only when GRPC_EXPERIMENTAL_XDS_SNI is on; sidecars do not
// need it.
func proxylessTLS(sni, spiffeID string) *corev3.TransportSocket {
	exact := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: spiffeID}}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
				InstanceName: ProxylessCertProvider, CertificateName: LeafSecret,
			},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
					InstanceName: ProxylessCertProvider, CertificateName: RootsSecret,
				},
				MatchSubjectAltNames: []*matcherv3.StringMatcher{exact},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: exact,
				}},
			}},
		},
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// proxylessLoadAssignment is the sidecar's load assignment with every
// locality named (gRPC refuses a locality without one) and weighted at
// least 1 (gRPC drops a locality of weight 0, the default).
func proxylessLoadAssignment(cluster string, eps []proxycfg.Endpoint) *endpointv3.ClusterLoadAssignment {
	la := loadAssignment(cluster, eps)
	for _, l := range la.Endpoints {
		if l.Locality == nil {
			l.Locality = &corev3.Locality{}
		}
		if l.LoadBalancingWeight.GetValue() == 0 {
			l.LoadBalancingWeight = wrapperspb.UInt32(1)
		}
	}
	return la
}
