// Package xds serves sidecar proxies their configuration over Envoy's
// aggregated discovery service (ADS), state of the world and delta, on
// the agent's gRPC port. It holds, per proxy, the resources that package
// generate made from the proxy's latest snapshot; go-control-plane's
// snapshot cache keeps the stream protocol (versions, nonces, ACK/NACK)
// and pushes a new set to the proxies connected as its node ID.
package xds

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
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
	c := cache.NewSnapshotCache(true, cache.IDHash{}, slogAdapter(logger))
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
	cs, err := cache.NewSnapshot(strconv.FormatUint(snap.Version, 10), res)
	if err != nil {
		return fmt.Errorf("xds: proxy %q: %w", snap.ProxyID, err)
	}
	if err := cs.Consistent(); err != nil {
		return fmt.Errorf("xds: proxy %q: inconsistent resources: %w", snap.ProxyID, err)
	}
	if err := s.cache.SetSnapshot(context.Background(), snap.ProxyID, cs); err != nil {
		return fmt.Errorf("xds: proxy %q: %w", snap.ProxyID, err)
	}
	return nil
}

// Remove forgets a proxy's resources, when its service is deregistered.
// A stream still open for it receives nothing more.
func (s *Server) Remove(proxyID string) {
	s.cache.ClearSnapshot(proxyID)
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
