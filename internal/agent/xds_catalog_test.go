package agent_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// adsClient is a sidecar's side of an ADS stream: it subscribes to every
// resource of the given types and ACKs what it gets.
type adsClient struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	// last is the latest response of each type: one may arrive while the
	// test waits for another type.
	last map[string]*discoverygrpc.DiscoveryResponse
}

func dialADS(t *testing.T, addr, node string, types ...string) *adsClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	c := &adsClient{t: t, stream: stream, node: &corev3.Node{Id: node}, last: map[string]*discoverygrpc.DiscoveryResponse{}}
	for _, typ := range types {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// until receives responses, ACKing each, until the latest of type typ
// makes done true (checking the one already received first); it fails
// the test after 20 s.
func (c *adsClient) until(typ string, done func(*discoverygrpc.DiscoveryResponse) bool) {
	c.t.Helper()
	if r := c.last[typ]; r != nil && done(r) {
		return
	}
	type result struct {
		resp *discoverygrpc.DiscoveryResponse
		err  error
	}
	deadline := time.After(20 * time.Second)
	for {
		ch := make(chan result, 1)
		go func() {
			r, err := c.stream.Recv()
			ch <- result{r, err}
		}()
		var r result
		select {
		case r = <-ch:
		case <-deadline:
			c.t.Fatalf("no %s response satisfied the test within 20s", typ)
		}
		if r.err != nil {
			c.t.Fatal(r.err)
		}
		if err := c.stream.Send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: r.resp.TypeUrl,
			VersionInfo: r.resp.VersionInfo, ResponseNonce: r.resp.Nonce}); err != nil {
			c.t.Fatal(err)
		}
		c.last[r.resp.TypeUrl] = r.resp
		if r.resp.TypeUrl == typ && done(r.resp) {
			return
		}
	}
}

// endpointPorts lists the ports of every endpoint in an EDS response.
func endpointPorts(t *testing.T, resp *discoverygrpc.DiscoveryResponse) []uint32 {
	var ports []uint32
	for _, any := range resp.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := any.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, loc := range cla.Endpoints {
			for _, lb := range loc.LbEndpoints {
				ports = append(ports, lb.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())
			}
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// webCallsDB starts an agent with a gRPC port and registers db-proxy-1
// (a sidecar of db) and web with a sidecar whose upstream is db. dbProxy
// makes db's n-th sidecar registration, on port base+n.
func webCallsDB(t *testing.T, base int) (*agenttest.Agent, *api.Client, func(n int) *api.AgentServiceRegistration) {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-grpc-port", "0"}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	dbProxy := func(n int) *api.AgentServiceRegistration {
		return &api.AgentServiceRegistration{Kind: api.ServiceKindConnectProxy, ID: fmt.Sprintf("db-proxy-%d", n),
			Name: "db-sidecar-proxy", Address: "127.0.0.1", Port: base + n,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db", LocalServicePort: 5432}}
	}
	if err := c.Agent().ServiceRegister(dbProxy(1)); err != nil {
		t.Fatal(err)
	}
	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return a, c, dbProxy
}

// The whole control-plane path: a sidecar registered with the agent gets
// its configuration over ADS, built from the catalog, the CA and the
// intentions, and is sent a new one when an upstream instance appears or
// an intention changes.
func TestXDSFollowsCatalog(t *testing.T) {
	a, c, dbProxy := webCallsDB(t, 22000)

	ads := dialADS(t, a.GRPCAddrs()[0], "web-sidecar-proxy", resource.EndpointType, resource.ListenerType)
	ads.until(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		return fmt.Sprint(endpointPorts(t, r)) == "[22001]"
	})

	// A second db instance reaches the sidecar.
	if err := c.Agent().ServiceRegister(dbProxy(2)); err != nil {
		t.Fatal(err)
	}
	ads.until(resource.EndpointType, func(r *discoverygrpc.DiscoveryResponse) bool {
		return fmt.Sprint(endpointPorts(t, r)) == "[22001 22002]"
	})

	// An intention denying api -> web changes web's public listener.
	var before []byte
	ads.until(resource.ListenerType, func(r *discoverygrpc.DiscoveryResponse) bool {
		before = publicListener(t, r)
		return before != nil
	})
	if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "api", DestinationName: "web", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	ads.until(resource.ListenerType, func(r *discoverygrpc.DiscoveryResponse) bool {
		after := publicListener(t, r)
		return after != nil && string(after) != string(before)
	})
}

// publicListener returns web's public listener in a LDS response,
// marshalled, or nil.
func publicListener(t *testing.T, resp *discoverygrpc.DiscoveryResponse) []byte {
	for _, any := range resp.Resources {
		var l listenerv3.Listener
		if err := any.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		if len(l.Name) > len("public_listener") && l.Name[:len("public_listener")] == "public_listener" {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&l)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	return nil
}
