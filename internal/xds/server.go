// Package xds serves sidecar proxies their configuration over Envoy's
// aggregated discovery service (ADS), state of the world and delta, on
// the agent's gRPC port. It holds, per proxy, the resources that package
// generate made from the proxy's latest snapshot; go-control-plane's
// snapshot cache keeps the stream protocol (versions, nonces, ACK/NACK)
// and pushes a new set to the proxies connected as its node ID.
//
// A proxy is served two renderings of its snapshot: the sidecar's (Envoy
// or Trellis's proxy) and the proxyless one, for a gRPC library's xDS
// client that identifies as the proxy (its bootstrap's node ID is the
// proxy's service ID) and dials the proxy's upstreams itself. The node's
// user_agent_name tells them apart: gRPC libraries send "gRPC Go",
// "gRPC Java", ... (see nodeKey).
package xds

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

// Server is the xDS server of one agent. Its methods are safe for
// concurrent use.
type Server struct {
	logger *slog.Logger
	cache  cache.SnapshotCache
	srv    server.Server
	// stop ends every open stream: go-control-plane's streams run until
	// their client leaves or this context ends.
	stop context.CancelFunc
}

// New returns a server with no proxies. Close ends its streams.
func New(logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "xds")
	ctx, stop := context.WithCancel(context.Background())
	c := cache.NewSnapshotCache(true, nodeKey{}, slogAdapter(logger))
	return &Server{
		logger: logger,
		cache:  c,
		srv:    server.NewServer(ctx, c, server.CallbackFuncs{}),
		stop:   stop,
	}
}

// Register adds the ADS service, and the per-type discovery services, to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.srv)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.srv)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.srv)
}

// Update replaces the resources of the proxy snap.ProxyID (its xDS node
// ID) with those generated from snap, and pushes them to its open
// streams. The version sent is snap.Version: a snapshot with the version
// the proxy already has is not sent again. On error the proxy keeps its
// previous resources.
func (s *Server) Update(snap *proxycfg.Snapshot) error {
	if snap == nil || snap.ProxyID == "" {
		return fmt.Errorf("xds: update: snapshot without a proxy ID")
	}
	res, err := generate.Resources(snap)
	if err != nil {
		return err
	}
	return s.set(sidecarKey(snap.ProxyID), snap, res, true)
}

// UpdateProxyless does for the gRPC clients that identify as the proxy
// snap.ProxyID what Update does for its sidecar, with the proxyless
// rendering (generate.ProxylessResources). The two are independent: an
// error in one leaves the other as it is.
func (s *Server) UpdateProxyless(snap *proxycfg.Snapshot) error {
	if snap == nil || snap.ProxyID == "" {
		return fmt.Errorf("xds: update: snapshot without a proxy ID")
	}
	res, err := generate.ProxylessResources(snap)
	if err != nil {
		return err
	}
	// go-control-plane's consistency check cannot follow an API
	// listener to its route (it reads filter chains only) and would
	// call every route unreferenced; the generator guarantees the
	// references instead.
	return s.set(proxylessKey(snap.ProxyID), snap, res, false)
}

func (s *Server) set(key string, snap *proxycfg.Snapshot, res map[resource.Type][]types.Resource, checkConsistent bool) error {
	cs, err := cache.NewSnapshot(strconv.FormatUint(snap.Version, 10), res)
	if err != nil {
		return fmt.Errorf("xds: proxy %q: %w", snap.ProxyID, err)
	}
	if checkConsistent {
		if err := cs.Consistent(); err != nil {
			return fmt.Errorf("xds: proxy %q: inconsistent resources: %w", snap.ProxyID, err)
		}
	}
	if err := s.cache.SetSnapshot(context.Background(), key, cs); err != nil {
		return fmt.Errorf("xds: proxy %q: %w", snap.ProxyID, err)
	}
	return nil
}

// Remove forgets a proxy's resources, both renderings, when its service
// is deregistered. A stream still open for it receives nothing more.
func (s *Server) Remove(proxyID string) {
	s.cache.ClearSnapshot(sidecarKey(proxyID))
	s.cache.ClearSnapshot(proxylessKey(proxyID))
}

// nodeKey is the snapshot cache's key of a node: its kind and its ID.
// Both kinds are prefixed, so that no proxy ID (service IDs may hold any
// character) can name the other kind's resources.
type nodeKey struct{}

func (nodeKey) ID(node *corev3.Node) string {
	if isProxyless(node) {
		return proxylessKey(node.GetId())
	}
	return sidecarKey(node.GetId())
}

func sidecarKey(proxyID string) string   { return "sidecar/" + proxyID }
func proxylessKey(proxyID string) string { return "grpc/" + proxyID }

// isProxyless reports whether node is a gRPC library's xDS client rather
// than a sidecar: gRPC sets user_agent_name to "gRPC " and its language
// ("gRPC Go" in grpc-go, "gRPC Java" in grpc-java); Envoy sends "envoy",
// Trellis's proxy nothing.
func isProxyless(node *corev3.Node) bool {
	return strings.HasPrefix(node.GetUserAgentName(), "gRPC ")
}

// Close ends the open streams. Stop the grpc.Server after it: its
// GracefulStop waits for the streams that Close ends.
func (s *Server) Close() {
	s.stop()
}

func slogAdapter(l *slog.Logger) gcplog.Logger {
	return gcplog.LoggerFuncs{
		DebugFunc: func(f string, args ...any) { l.Debug(fmt.Sprintf(f, args...)) },
		InfoFunc:  func(f string, args ...any) { l.Debug(fmt.Sprintf(f, args...)) },
		WarnFunc:  func(f string, args ...any) { l.Warn(fmt.Sprintf(f, args...)) },
		ErrorFunc: func(f string, args ...any) { l.Error(fmt.Sprintf(f, args...)) },
	}
}
