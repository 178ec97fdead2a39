// Package proxy is Trellis's sidecar data plane: it runs the listeners and
// clusters an xDS configuration describes (the subset xds/generate emits)
// and carries the traffic.
package proxy

import (
	"errors"
	"log/slog"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Config is one complete, consistent xDS configuration of the proxy, as
// its xDS client last received and ACKed it.
type Config struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
}

// Proxy runs a Config.
type Proxy struct {
	opts Options
}

// New returns a proxy running no configuration yet.
func New(opts Options) *Proxy { return &Proxy{opts: opts} }

// Apply replaces the running configuration with cfg: listeners are
// opened, changed or closed, and new connections use the new clusters,
// endpoints and certificates, while established ones carry on. A cfg that
// cannot be applied is an error and changes nothing (the xDS client NACKs
// it).
func (p *Proxy) Apply(cfg Config) error { return errors.New("proxy: not implemented") }

// Ready reports whether a configuration has been applied.
func (p *Proxy) Ready() bool { return false }

// Close closes every listener and connection.
func (p *Proxy) Close() error { return nil }
