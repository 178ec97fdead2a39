package xdsclient

import (
	"fmt"
	"slices"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

// The types the client subscribes to, in the order of their first
// requests: the wildcard types first, as their content names the others.
var types = []string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.EndpointType, resource.SecretType}

// decode unpacks the resources of a response of type typ, by name. A
// resource of another type, without a name, or named twice is an error:
// the response is NACKed whole.
func decode(typ string, in []*anypb.Any) (map[string]proto.Message, error) {
	out := make(map[string]proto.Message, len(in))
	for i, a := range in {
		if a.GetTypeUrl() != typ {
			return nil, fmt.Errorf("resource %d: type %q in a %s response", i, a.GetTypeUrl(), typ)
		}
		var m interface {
			proto.Message
			Validate() error
		}
		var name func() string
		switch typ {
		case resource.ClusterType:
			c := &clusterv3.Cluster{}
			m, name = c, c.GetName
		case resource.ListenerType:
			l := &listenerv3.Listener{}
			m, name = l, l.GetName
		case resource.EndpointType:
			e := &endpointv3.ClusterLoadAssignment{}
			m, name = e, e.GetClusterName
		case resource.SecretType:
			s := &tlsv3.Secret{}
			m, name = s, s.GetName
		case resource.RouteType:
			r := &routev3.RouteConfiguration{}
			m, name = r, r.GetName
		default:
			return nil, fmt.Errorf("unexpected type %q", typ)
		}
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		n := name()
		if n == "" {
			return nil, fmt.Errorf("resource %d: no name", i)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("%s %q: %w", typ, n, err)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("%s %q: sent twice", typ, n)
		}
		out[n] = m
	}
	return out, nil
}

// edsNames returns, sorted, the names of the load assignments the EDS
// clusters among clusters need.
func edsNames(clusters map[string]proto.Message) []string {
	var out []string
	for _, m := range clusters {
		c := m.(*clusterv3.Cluster)
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		out = append(out, name)
	}
	return sortedUnique(out)
}

// secretNames returns, sorted, the SDS secrets the TLS transport sockets
// of listeners and clusters refer to.
func secretNames(listeners, clusters map[string]proto.Message) []string {
	var out []string
	add := func(ts *corev3.TransportSocket) {
		a := ts.GetTypedConfig()
		if a == nil {
			return
		}
		var common *tlsv3.CommonTlsContext
		if d := (&tlsv3.DownstreamTlsContext{}); a.MessageIs(d) && a.UnmarshalTo(d) == nil {
			common = d.GetCommonTlsContext()
		} else if u := (&tlsv3.UpstreamTlsContext{}); a.MessageIs(u) && a.UnmarshalTo(u) == nil {
			common = u.GetCommonTlsContext()
		}
		for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
			out = append(out, s.GetName())
		}
		if s := common.GetValidationContextSdsSecretConfig(); s != nil {
			out = append(out, s.GetName())
		}
		if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
			out = append(out, s.GetName())
		}
	}
	for _, m := range listeners {
		l := m.(*listenerv3.Listener)
		for _, fc := range l.GetFilterChains() {
			add(fc.GetTransportSocket())
		}
		add(l.GetDefaultFilterChain().GetTransportSocket())
	}
	for _, m := range clusters {
		c := m.(*clusterv3.Cluster)
		add(c.GetTransportSocket())
		for _, tm := range c.GetTransportSocketMatches() {
			add(tm.GetTransportSocket())
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	return sortedUnique(out)
}

func sortedUnique(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// rdsNames returns, sorted, the route configurations the HTTP connection
// managers of listeners name through RDS.
func rdsNames(listeners map[string]proto.Message) []string {
	var out []string
	forEachFilter(listeners, func(m proto.Message) {
		if h, ok := m.(*hcmv3.HttpConnectionManager); ok && h.GetRds() != nil {
			out = append(out, h.GetRds().GetRouteConfigName())
		}
	})
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	return sortedUnique(out)
}

// forEachFilter calls f with the decoded config of each network filter of
// listeners that is a tcp_proxy or an HTTP connection manager.
func forEachFilter(listeners map[string]proto.Message, f func(proto.Message)) {
	for _, m := range listeners {
		l := m.(*listenerv3.Listener)
		chains := l.GetFilterChains()
		if d := l.GetDefaultFilterChain(); d != nil {
			chains = append(chains[:len(chains):len(chains)], d)
		}
		for _, fc := range chains {
			for _, fl := range fc.GetFilters() {
				a := fl.GetTypedConfig()
				switch {
				case a == nil:
				case a.MessageIs(&hcmv3.HttpConnectionManager{}):
					h := &hcmv3.HttpConnectionManager{}
					if a.UnmarshalTo(h) == nil {
						f(h)
					}
				case a.MessageIs(&tcpproxyv3.TcpProxy{}):
					t := &tcpproxyv3.TcpProxy{}
					if a.UnmarshalTo(t) == nil {
						f(t)
					}
				}
			}
		}
	}
}

// clusterRefs returns the clusters that listeners (tcp_proxy, inline
// route configurations) and route configurations send traffic to.
func clusterRefs(listeners, routes map[string]proto.Message) []string {
	var out []string
	addRoutes := func(rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				ra := r.GetRoute()
				if c := ra.GetCluster(); c != "" {
					out = append(out, c)
				}
				for _, wc := range ra.GetWeightedClusters().GetClusters() {
					out = append(out, wc.GetName())
				}
			}
		}
	}
	forEachFilter(listeners, func(m proto.Message) {
		switch c := m.(type) {
		case *tcpproxyv3.TcpProxy:
			if n := c.GetCluster(); n != "" {
				out = append(out, n)
			}
		case *hcmv3.HttpConnectionManager:
			addRoutes(c.GetRouteConfig())
		}
	})
	for _, m := range routes {
		addRoutes(m.(*routev3.RouteConfiguration))
	}
	return sortedUnique(out)
}

// assemble returns the configuration made of listeners, clusters and the
// route configurations, endpoints and secrets they need, each sorted by
// name, and whether it is consistent: every route configuration, load
// assignment and secret needed is among those given, and every cluster
// that listeners and routes send traffic to is among the clusters.
func assemble(listeners, clusters, routes, endpoints, secrets map[string]proto.Message) (proxy.Config, bool) {
	var cfg proxy.Config
	for _, n := range sortedKeys(listeners) {
		cfg.Listeners = append(cfg.Listeners, listeners[n].(*listenerv3.Listener))
	}
	for _, n := range sortedKeys(clusters) {
		cfg.Clusters = append(cfg.Clusters, clusters[n].(*clusterv3.Cluster))
	}
	needed := map[string]proto.Message{}
	for _, n := range rdsNames(listeners) {
		r, ok := routes[n]
		if !ok {
			return proxy.Config{}, false
		}
		needed[n] = r
		cfg.Routes = append(cfg.Routes, r.(*routev3.RouteConfiguration))
	}
	for _, n := range clusterRefs(listeners, needed) {
		if _, ok := clusters[n]; !ok {
			return proxy.Config{}, false
		}
	}
	for _, n := range edsNames(clusters) {
		e, ok := endpoints[n]
		if !ok {
			return proxy.Config{}, false
		}
		cfg.Endpoints = append(cfg.Endpoints, e.(*endpointv3.ClusterLoadAssignment))
	}
	for _, n := range secretNames(listeners, clusters) {
		s, ok := secrets[n]
		if !ok {
			return proxy.Config{}, false
		}
		cfg.Secrets = append(cfg.Secrets, s.(*tlsv3.Secret))
	}
	return cfg, true
}

func sortedKeys(m map[string]proto.Message) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// equal reports whether a and b hold the same resources, in order.
func equal(a, b proxy.Config) bool {
	return equalSlices(a.Listeners, b.Listeners) && equalSlices(a.Clusters, b.Clusters) &&
		equalSlices(a.Routes, b.Routes) && equalSlices(a.Endpoints, b.Endpoints) && equalSlices(a.Secrets, b.Secrets)
}

func equalSlices[M proto.Message](a, b []M) bool {
	return slices.EqualFunc(a, b, func(x, y M) bool { return proto.Equal(x, y) })
}
