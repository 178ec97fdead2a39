package xds

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

func TestNodeKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		node *corev3.Node
		want string
	}{
		{"trellis proxy", &corev3.Node{Id: "web-sidecar-proxy"}, "sidecar/web-sidecar-proxy"},
		{"envoy", &corev3.Node{Id: "web-sidecar-proxy", UserAgentName: "envoy"}, "sidecar/web-sidecar-proxy"},
		{"grpc-go", &corev3.Node{Id: "web-sidecar-proxy", UserAgentName: "gRPC Go"}, "grpc/web-sidecar-proxy"},
		{"grpc-java", &corev3.Node{Id: "web-sidecar-proxy", UserAgentName: "gRPC Java"}, "grpc/web-sidecar-proxy"},
		// A sidecar whose ID looks like a key still gets its own.
		{"sidecar named like a key", &corev3.Node{Id: "grpc/web-sidecar-proxy"}, "sidecar/grpc/web-sidecar-proxy"},
		{"no node", nil, "sidecar/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (nodeKey{}).ID(tc.node); got != tc.want {
				t.Errorf("key %q, want %q", got, tc.want)
			}
		})
	}
}

// A gRPC client identifying as the proxy gets the proxyless rendering
// (API listener "db" and what it leads to), on the same port and node ID
// as the sidecar, which keeps its own.
func TestProxylessClientGetsItsRendering(t *testing.T) {
	s := New(nil)
	snap := snapshot(4, proxycfg.Endpoint{Address: "10.0.0.2", Port: 21000, Weight: 1})
	if err := s.Update(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateProxyless(snap); err != nil {
		t.Fatal(err)
	}
	cc := serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), recvWithin)
	defer cancel()

	// fetch asks one stream of node for the named resources of typ (all
	// with none named) and returns the names received.
	fetch := func(node *corev3.Node, typ string, names ...string) []string {
		t.Helper()
		stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.CloseSend()
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.VersionInfo != "4" {
			t.Errorf("%s: version %q, want 4", typ, resp.VersionInfo)
		}
		var got []string
		for _, r := range resp.Resources {
			if typ != resource.ListenerType {
				got = append(got, r.TypeUrl)
				continue
			}
			var l listenerv3.Listener
			if err := r.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			if l.ApiListener != nil {
				got = append(got, "api:"+l.Name)
			} else {
				got = append(got, l.Name)
			}
		}
		return got
	}

	grpcNode := &corev3.Node{Id: proxyID, UserAgentName: "gRPC Go"}
	if got := fetch(grpcNode, resource.ListenerType, "db"); strings.Join(got, ",") != "api:db" {
		t.Errorf("gRPC client's listeners %v, want [api:db]", got)
	}
	if got := fetch(grpcNode, resource.RouteType, "db"); len(got) != 1 {
		t.Errorf("gRPC client's routes: %v, want route db", got)
	}
	if got := fetch(grpcNode, resource.ClusterType, dbCluster); len(got) != 1 {
		t.Errorf("gRPC client's clusters: %v, want %s", got, dbCluster)
	}
	if got := fetch(grpcNode, resource.EndpointType, dbCluster); len(got) != 1 {
		t.Errorf("gRPC client's endpoints: %v, want %s", got, dbCluster)
	}
	got := fetch(&corev3.Node{Id: proxyID, UserAgentName: "envoy"}, resource.ListenerType)
	if len(got) != 2 || strings.Contains(strings.Join(got, ","), "api:") {
		t.Errorf("sidecar's listeners %v, want its public and upstream listeners", got)
	}

	s.Remove(proxyID)
	for _, key := range []string{sidecarKey(proxyID), proxylessKey(proxyID)} {
		if _, err := s.cache.GetSnapshot(key); err == nil {
			t.Errorf("%s still has a snapshot after Remove", key)
		}
	}
}

func TestUpdateProxylessErrors(t *testing.T) {
	s := New(nil)
	defer s.Close()
	if err := s.UpdateProxyless(&proxycfg.Snapshot{}); err == nil {
		t.Error("UpdateProxyless with no proxy ID succeeded")
	}
	good := snapshot(1)
	if err := s.UpdateProxyless(good); err != nil {
		t.Fatal(err)
	}
	bad := snapshot(2)
	bad.Upstreams = append(bad.Upstreams, proxycfg.Upstream{Name: "db", Datacenter: "dc2", LocalBindPort: 9292})
	if err := s.UpdateProxyless(bad); err == nil || !strings.Contains(err.Error(), `upstream "db" is in datacenters`) {
		t.Errorf("ambiguous upstream: err = %v", err)
	}
	cs, err := s.cache.GetSnapshot(proxylessKey(proxyID))
	if err != nil {
		t.Fatal(err)
	}
	if v := cs.GetVersion(resource.ListenerType); v != "1" {
		t.Errorf("after a refused update: version %q, want the previous 1", v)
	}
}
