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
	// ConnectTimeout bounds a connection to an upstream instance
	// (default 5 s).
	ConnectTimeout time.Duration
	// Endpoints are the healthy connect-capable instances of the
	// upstream (their sidecars' addresses and ports), sorted by
	// address and port.
	Endpoints []Endpoint
}

// Endpoint is one instance's sidecar (or Connect-native service).
type Endpoint struct {
	Address string
	Port    int
	// Weight is the instance's load-balancing weight (its
	// Weights.Passing, at least 1).
	Weight int
}
