// Package proxycfg builds, from the state store, everything one sidecar
// proxy's configuration is generated from: a Snapshot per proxy, rebuilt
// when anything it was built from changes. xds/generate turns a Snapshot
// into xDS resources by pure functions; the xDS server sends them.
package proxycfg

import (
	"time"

	"github.com/trellis-mesh/trellis/internal/configentry"
)

// Snapshot is one sidecar proxy's view of the mesh at one moment. It is
// immutable once published: a change makes a new one.
type Snapshot struct {
	// ProxyID is the proxy's service ID on its agent; it is also the
	// xDS node ID the proxy connects with.
	ProxyID string
	// Service is the name of the service the proxy fronts (its
	// Proxy.DestinationServiceName), and Datacenter and TrustDomain
	// complete its SPIFFE ID.
	Service     string
	Datacenter  string
	TrustDomain string

	// The public listener: where other sidecars reach this one (the
	// proxy service's address and port) ...
	Address string
	Port    int
	// ... and the local application it forwards to.
	LocalAddress string
	LocalPort    int
	// Protocol is the service's: tcp, http, http2 or grpc
	// (service-defaults, else proxy-defaults' config "protocol", else tcp).
	Protocol string
	// LocalConnectTimeout bounds a connection to the local application;
	// 0 leaves the default (5 s). LocalRequestTimeout bounds an HTTP
	// request to it; 0 leaves Envoy's default (15 s). Each is the
	// proxy registration's Config "local_connect_timeout_ms" /
	// "local_request_timeout_ms", else the service's service-defaults
	// LocalConnectTimeoutMs / LocalRequestTimeoutMs, else proxy-defaults'
	// Config keys.
	LocalConnectTimeout time.Duration
	LocalRequestTimeout time.Duration

	// Leaf is this service's certificate chain and key, PEM; Roots are
	// the trusted CA roots, PEM, active first.
	Leaf  *Leaf
	Roots []string

	// Intentions are the service-intentions entries that can apply to
	// connections to Service (its own and the wildcard's), and
	// DefaultAllow the decision when none matches.
	Intentions   []*configentry.ServiceIntentionsConfigEntry
	DefaultAllow bool

	// Upstreams are the services the application reaches through this
	// proxy, in the order of the proxy's registration.
	Upstreams []Upstream

	// Version rises with every new snapshot of this proxy.
	Version uint64
}

// Leaf is a certificate chain and its private key, PEM.
type Leaf struct {
	CertPEM       string
	PrivateKeyPEM string
	// ValidBefore is the leaf's expiry.
	ValidBefore time.Time
}

// Upstream is one upstream of the proxy.
type Upstream struct {
	// Name is the destination service; Datacenter is its datacenter
	// (the proxy's own when the registration names none).
	Name       string
	Datacenter string
	// LocalBindAddress and LocalBindPort are where the application
	// connects (default address 127.0.0.1).
	LocalBindAddress string
	LocalBindPort    int
	// Protocol is the upstream service's protocol, as for Snapshot.
	Protocol string
	// ConnectTimeout bounds a connection to an upstream instance: the
	// registration's Config "connect_timeout_ms", else the upstream's
	// service-resolver ConnectTimeout, else the downstream service's
	// service-defaults UpstreamConfig (the override for the upstream,
	// else the defaults), else 5 s. The resolver comes before
	// service-defaults because service-defaults always carries one (5 s
	// when not given), which would otherwise hide the resolver's.
	ConnectTimeout time.Duration
	// Endpoints are the healthy connect-capable instances of the
	// upstream (their sidecars' addresses and ports), sorted by
	// address and port.
	Endpoints []Endpoint

	// Limits bound the connections and requests to the upstream, and
	// PassiveHealthCheck is its outlier detection; nil: unset, Envoy's
	// defaults. Each is the registration's Config "limits" /
	// "passive_health_check" when given (as a whole), else the
	// downstream service's service-defaults UpstreamConfig: the
	// override named after the upstream, else the defaults.
	Limits             *Limits
	PassiveHealthCheck *configentry.PassiveHealthCheck
	// LoadBalancer is the upstream's service-resolver LoadBalancer, nil
	// for round robin. Its HashPolicies apply to HTTP-like upstreams
	// only (the config entries allow no others).
	LoadBalancer *configentry.LoadBalancer
	// RequestTimeout is the upstream's service-resolver RequestTimeout:
	// the timeout of HTTP requests no route sets one for; 0 leaves
	// Envoy's default (15 s).
	RequestTimeout time.Duration
	// Routes are the upstream's service-router routes, in order, for an
	// HTTP-like upstream (nil otherwise); requests none matches go to
	// the upstream unchanged. Every route's destination is the upstream
	// itself (the config entries allow no other yet).
	Routes []configentry.ServiceRoute
}

// Limits bound an upstream's connections and requests from this proxy;
// a nil field is unset (Envoy's default, 1024).
type Limits struct {
	MaxConnections        *int
	MaxPendingRequests    *int
	MaxConcurrentRequests *int
}

// Endpoint is one instance's sidecar (or Connect-native service).
type Endpoint struct {
	Address string
	Port    int
	// Weight is the instance's load-balancing weight (its
	// Weights.Passing, at least 1).
	Weight int
}
