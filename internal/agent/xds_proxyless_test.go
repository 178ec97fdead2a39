package agent_test

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// A gRPC client identifying as web's proxy gets, from the agent, the
// proxyless rendering of web's snapshot (an API listener per upstream)
// and follows the upstream's instances as they come.
func TestXDSProxylessFollowsCatalog(t *testing.T) {
	a, c, dbProxy := webCallsDB(t, 23000)

	cc, err := grpc.NewClient(a.GRPCAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ads := &adsClient{t: t, stream: stream, node: &corev3.Node{Id: "web-sidecar-proxy", UserAgentName: "gRPC Go"},
		last: map[string]*discoverygrpc.DiscoveryResponse{}}
	for _, typ := range []string{resource.ListenerType, resource.EndpointType} {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: ads.node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}

	ads.until(resource.ListenerType, func(r *discoverygrpc.DiscoveryResponse) bool {
		if len(r.Resources) != 1 {
			return false
		}
		var l listenerv3.Listener
		if err := r.Resources[0].UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if l.Name != "db" || l.ApiListener == nil {
			t.Fatalf("listener %q (api listener %v), want the API listener db", l.Name, l.ApiListener != nil)
		}
		return true
	})
	ads.until(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		return fmt.Sprint(endpointPorts(t, r)) == "[23001]"
	})
	if err := c.Agent().ServiceRegister(dbProxy(2)); err != nil {
		t.Fatal(err)
	}
	ads.until(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		return fmt.Sprint(endpointPorts(t, r)) == "[23001 23002]"
	})
}
