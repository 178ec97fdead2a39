package agent

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/internal/xds"
)

// xdsServing is the agent's gRPC port: the xDS server sidecars connect to.
// Set in start, read-only after; zero when the gRPC port is disabled.
type xdsServing struct {
	server *xds.Server
	grpc   *grpc.Server
	addrs  []string
	wg     sync.WaitGroup // the Serve goroutines
}

// startXDS serves xDS on every gRPC address (ports.grpc, 8502 in dev
// mode; -1 disables it).
func (a *Agent) startXDS() error {
	if len(a.cfg.GRPCAddrs) == 0 {
		return nil
	}
	x := &a.xds
	x.server = xds.New(a.logger)
	x.grpc = grpc.NewServer()
	x.server.Register(x.grpc)
	for _, addr := range a.cfg.GRPCAddrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("agent: gRPC listener on %s: %w", addr, err)
		}
		x.addrs = append(x.addrs, ln.Addr().String())
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			if err := x.grpc.Serve(ln); err != nil {
				a.logger.Error("gRPC server stopped", "addr", ln.Addr().String(), "error", err)
			}
		}()
		a.logger.Info("gRPC (xDS) listening", "addr", ln.Addr().String())
	}
	return nil
}

// stopXDS ends the proxies' streams and the gRPC server, waiting for them
// until ctx ends, then closing what is left.
func (a *Agent) stopXDS(ctx context.Context) {
	x := &a.xds
	if x.server == nil {
		return
	}
	x.server.Close() // ends the streams, which GracefulStop waits for
	stopped := make(chan struct{})
	go func() {
		x.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		x.grpc.Stop()
		<-stopped
	}
	x.wg.Wait()
}

// XDS returns the xDS server, for the proxy configuration manager to feed
// with each sidecar's snapshots (Update, Remove); nil when the gRPC port
// is disabled, and then no proxy can connect to be configured.
func (a *Agent) XDS() *xds.Server { return a.xds.server }

// GRPCAddrs returns the addresses the gRPC (xDS) port listens on.
func (a *Agent) GRPCAddrs() []string { return a.xds.addrs }
