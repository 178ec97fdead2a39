package agent_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// The agent's gRPC port serves ADS from the snapshots fed to its xDS
// server, and Close ends a proxy's open stream.
func TestAgentServesXDS(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-grpc-port", "0"}})
	addrs := a.GRPCAddrs()
	if len(addrs) != 1 || a.XDS() == nil {
		t.Fatalf("gRPC addrs %v, xDS server %v: want one address and a server", addrs, a.XDS())
	}
	snap := &proxycfg.Snapshot{
		ProxyID: "web-sidecar-proxy", Service: "web", Datacenter: "dc1", TrustDomain: "td.consul",
		Address: "127.0.0.1", Port: 21000, LocalPort: 8080, Protocol: "tcp",
		Leaf: &proxycfg.Leaf{CertPEM: "CERT", PrivateKeyPEM: "KEY"}, Roots: []string{"ROOT"}, Version: 1,
	}
	if err := a.XDS().Update(snap); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: snap.ProxyID}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.TypeUrl != resource.ListenerType || len(resp.Resources) != 1 || resp.VersionInfo != "1" {
		t.Fatalf("response %s version %q with %d resources, want the public listener at version 1", resp.TypeUrl, resp.VersionInfo, len(resp.Resources))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream still open after the agent closed")
	}
}
