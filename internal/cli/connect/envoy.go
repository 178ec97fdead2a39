package connect

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const envoyHelp = `
Usage: trellis connect envoy -bootstrap [options] (-sidecar-for SERVICE-ID | -proxy-id ID)

  Prints the bootstrap configuration (JSON, Envoy API v3) for an Envoy
  sidecar of a connect-proxy service registered with the local agent:
  Envoy's node ID is the proxy's service ID, its cluster the proxy's
  service name, and it takes its listeners and clusters over ADS from
  the agent's gRPC (xDS) port, -grpc-addr.

  Unlike 'consul connect envoy', this command does not run Envoy: it only
  prints the bootstrap, and -bootstrap is required. Run Envoy with it:

      $ trellis connect envoy -sidecar-for web-1 -bootstrap > web-1-envoy.json
      $ envoy -c web-1-envoy.json

  -sidecar-for names the service the proxy fronts; the agent must hold
  exactly one connect-proxy for it. -proxy-id names the proxy service
  itself.
`

// agentCluster is the bootstrap's static cluster for the agent's xDS
// server.
const agentCluster = "local_agent"

// envoyNoRun is the error without -bootstrap.
const envoyNoRun = "Running Envoy is not supported: trellis connect envoy only prints Envoy's bootstrap configuration.\n" +
	"Add -bootstrap and start Envoy with its output: envoy -c FILE"

func envoyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("connect envoy")
	h.Flags(fs)
	grpcAddr := grpcAddrFlag(fs)
	sidecarFor := fs.String("sidecar-for", "", "The `ID` of the service whose sidecar proxy Envoy runs.")
	proxyID := fs.String("proxy-id", "", "The `ID` of the connect-proxy service Envoy runs.")
	adminBind := fs.String("admin-bind", "127.0.0.1:19000", "The loopback `address` of Envoy's admin listener.")
	bootstrap := fs.Bool("bootstrap", false, "Print the bootstrap configuration (required: Envoy is not run).")
	if code, ok := cliflags.Parse(fs, args, envoyHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	if !*bootstrap {
		fmt.Fprintln(stderr, envoyNoRun)
		return 1
	}
	if err := checkProxyNamed(*sidecarFor, *proxyID); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	admin, err := adminAddress(*adminBind)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	agent, err := agentAddress(grpcAddrOf(*grpcAddr))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	var svc *api.AgentService
	if *sidecarFor != "" {
		svc, err = lookupSidecar(client, *sidecarFor)
	} else {
		svc, err = lookupProxy(client, *proxyID)
	}
	done()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	b, err := envoyBootstrap(svc.ID, svc.Service, agent, admin)
	if err != nil {
		fmt.Fprintf(stderr, "Error building the bootstrap configuration: %v\n", err)
		return 1
	}
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
	if err != nil {
		fmt.Fprintf(stderr, "Error encoding the bootstrap configuration: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

// lookupProxy returns the local agent's connect-proxy service with ID id.
func lookupProxy(client *api.Client, id string) (*api.AgentService, error) {
	svc, _, err := client.Agent().Service(id, nil)
	if err != nil {
		return nil, fmt.Errorf("Failed looking up proxy service %s: %s", id, err)
	}
	if svc.Kind != api.ServiceKindConnectProxy {
		return nil, fmt.Errorf("Service %s is not a connect-proxy", id)
	}
	return svc, nil
}

// adminAddress parses -admin-bind: a loopback IP, or localhost (taken as
// 127.0.0.1, since Envoy binds only IPs), and a port.
func adminAddress(addr string) (*corev3.Address, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("Invalid -admin-bind %q: %v", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return socketAddress(host, port), nil
}

// agentAddress parses the agent's gRPC address. It must be plaintext:
// TLS to the agent is not configured by this bootstrap.
func agentAddress(addr string) (*corev3.Address, error) {
	if strings.Contains(addr, "://") {
		return nil, fmt.Errorf("Invalid -grpc-addr %q: only a plaintext host:port (or http://host:port) is supported", addr)
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("Invalid -grpc-addr %q: %v", addr, err)
	}
	return socketAddress(host, port), nil
}

func splitHostPort(addr string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %q: want 1 to 65535", p)
	}
	if host == "" {
		return "", 0, fmt.Errorf("missing host")
	}
	return host, uint32(port), nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// envoyBootstrap returns the bootstrap of the Envoy for the proxy service
// with ID id and name service: ADS from the agent at agent, the admin
// listener at admin.
func envoyBootstrap(id, service string, agent, admin *corev3.Address) (*bootstrapv3.Bootstrap, error) {
	fileLog, err := anypb.New(&filev3.FileAccessLog{Path: "/dev/null"})
	if err != nil {
		return nil, err
	}
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	// A hostname (say localhost) needs resolving; Envoy's STATIC
	// clusters take only IPs.
	discovery := clusterv3.Cluster_STATIC
	if net.ParseIP(agent.GetSocketAddress().GetAddress()) == nil {
		discovery = clusterv3.Cluster_STRICT_DNS
	}
	fromADS := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}
	}
	return &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: id, Cluster: service},
		Admin: &bootstrapv3.Admin{
			Address: admin,
			AccessLog: []*accesslogv3.AccessLog{{
				Name:       "envoy.access_loggers.file",
				ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog},
			}},
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{{
				Name:                 agentCluster,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
				ConnectTimeout:       durationpb.New(time.Second),
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2,
				},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{
					ClusterName: agentCluster,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{
						LbEndpoints: []*endpointv3.LbEndpoint{{
							HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
								Address: proto.Clone(agent).(*corev3.Address),
							}},
						}},
					}},
				},
			}},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
						EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: agentCluster},
					},
				}},
			},
			CdsConfig: fromADS(),
			LdsConfig: fromADS(),
		},
	}, nil
}
