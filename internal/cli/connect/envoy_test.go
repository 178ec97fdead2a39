package connect

import (
	"net"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// parseBootstrap checks that out is a valid Envoy v3 bootstrap and
// returns it.
func parseBootstrap(t *testing.T, out string) *bootstrapv3.Bootstrap {
	t.Helper()
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("output is not a v3 bootstrap: %v\n%s", err, out)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap does not validate: %v\n%s", err, out)
	}
	return &b
}

// checkBootstrap checks b's node, its ADS source and its agent cluster
// (at host:port, of discovery type typ), and its admin listener.
func checkBootstrap(t *testing.T, b *bootstrapv3.Bootstrap, id, cluster, agent, admin string, typ clusterv3.Cluster_DiscoveryType) {
	t.Helper()
	if b.GetNode().GetId() != id || b.GetNode().GetCluster() != cluster {
		t.Errorf("node %q cluster %q, want %q and %q", b.GetNode().GetId(), b.GetNode().GetCluster(), id, cluster)
	}

	dr := b.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 ||
		len(ads.GetGrpcServices()) != 1 || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "local_agent" {
		t.Errorf("ads_config: %v", ads)
	}
	for name, src := range map[string]*corev3.ConfigSource{"cds": dr.GetCdsConfig(), "lds": dr.GetLdsConfig()} {
		if src.GetAds() == nil || src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			t.Errorf("%s_config: %v, want ADS, resource API V3", name, src)
		}
	}

	clusters := b.GetStaticResources().GetClusters()
	if len(clusters) != 1 || clusters[0].GetName() != "local_agent" {
		t.Fatalf("static clusters: %v, want local_agent alone", clusters)
	}
	c := clusters[0]
	if c.GetType() != typ || c.GetConnectTimeout().AsDuration().Seconds() != 1 {
		t.Errorf("local_agent: type %v, connect timeout %v; want %v, 1s", c.GetType(), c.GetConnectTimeout().AsDuration(), typ)
	}
	var h2 httpv3.HttpProtocolOptions
	opts, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatalf("local_agent has no HttpProtocolOptions: %v", c.GetTypedExtensionProtocolOptions())
	}
	if err := opts.UnmarshalTo(&h2); err != nil || h2.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("local_agent protocol options %v (%v), want explicit HTTP/2", &h2, err)
	}
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("local_agent endpoints: %v", eps)
	}
	if got := addrString(eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()); got != agent {
		t.Errorf("local_agent endpoint %s, want %s", got, agent)
	}

	if got := addrString(b.GetAdmin().GetAddress()); got != admin {
		t.Errorf("admin address %s, want %s", got, admin)
	}
	logs := b.GetAdmin().GetAccessLog()
	var fl filev3.FileAccessLog
	if len(logs) != 1 || logs[0].GetTypedConfig().UnmarshalTo(&fl) != nil || fl.GetPath() != "/dev/null" {
		t.Errorf("admin access log: %v, want a file log to /dev/null", logs)
	}
}

func addrString(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

// The bootstrap names the sidecar the agent holds for the service, and
// points Envoy at the agent's xDS port.
func TestEnvoyBootstrapSidecarFor(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-grpc-port", "0"}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	registerWeb(t, c)
	grpcAddr := a.GRPCAddrs()[0]
	r := run(t, "", "envoy", "-bootstrap", "-sidecar-for", "web-1", "-http-addr", a.HTTPAddr, "-grpc-addr", grpcAddr)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("got %+v, want exit 0", r)
	}
	b := parseBootstrap(t, r.Stdout)
	checkBootstrap(t, b, "web-1-sidecar-proxy", "web-sidecar-proxy", grpcAddr, "127.0.0.1:19000", clusterv3.Cluster_STATIC)
}

// -proxy-id names the proxy itself; the gRPC address comes from the
// flag, then the environment, then the default, and a hostname is
// resolved by Envoy.
func TestEnvoyBootstrapProxyID(t *testing.T) {
	a, c := clitest.Agent(t)
	registerWeb(t, c)
	for _, tc := range []struct {
		name                  string
		trellisEnv, consulEnv string
		args                  []string
		agent, admin          string
		typ                   clusterv3.Cluster_DiscoveryType
	}{
		{"default", "", "", nil, "127.0.0.1:8502", "127.0.0.1:19000", clusterv3.Cluster_STATIC},
		{"consul env", "", "http://127.0.0.2:9502", nil, "127.0.0.2:9502", "127.0.0.1:19000", clusterv3.Cluster_STATIC},
		{"trellis env first", "127.0.0.3:9503", "127.0.0.2:9502", nil, "127.0.0.3:9503", "127.0.0.1:19000", clusterv3.Cluster_STATIC},
		{"flag first", "127.0.0.3:9503", "", []string{"-grpc-addr", "[::1]:8502"}, "[::1]:8502", "127.0.0.1:19000", clusterv3.Cluster_STATIC},
		{"hostnames", "", "", []string{"-grpc-addr", "localhost:8502", "-admin-bind", "localhost:19001"}, "localhost:8502", "127.0.0.1:19001", clusterv3.Cluster_STRICT_DNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TRELLIS_GRPC_ADDR", tc.trellisEnv)
			t.Setenv("CONSUL_GRPC_ADDR", tc.consulEnv)
			args := append([]string{"envoy", "-bootstrap", "-proxy-id", "web-1-sidecar-proxy", "-http-addr", a.HTTPAddr}, tc.args...)
			r := run(t, "", args...)
			if r.Code != 0 || r.Stderr != "" {
				t.Fatalf("got %+v, want exit 0", r)
			}
			checkBootstrap(t, parseBootstrap(t, r.Stdout), "web-1-sidecar-proxy", "web-sidecar-proxy", tc.agent, tc.admin, tc.typ)
		})
	}
}

func TestEnvoyErrors(t *testing.T) {
	a, c := clitest.Agent(t)
	registerWeb(t, c)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown service", []string{"-bootstrap", "-sidecar-for", "nope"}, "No sidecar proxy registered for nope\n"},
		{"unknown proxy", []string{"-bootstrap", "-proxy-id", "nope"}, "Failed looking up proxy service nope: "},
		{"proxy-id not a proxy", []string{"-bootstrap", "-proxy-id", "web-1"}, "Service web-1 is not a connect-proxy\n"},
		{"agent down", []string{"-bootstrap", "-sidecar-for", "web-1", "-http-addr", clitest.DeadAddr(t)}, "Failed looking up sidecar proxy info for web-1: "},
		{"no proxy named", []string{"-bootstrap"}, "One of -sidecar-for or -proxy-id must be set\n"},
		{"both named", []string{"-bootstrap", "-sidecar-for", "web-1", "-proxy-id", "x"}, "Only one of -sidecar-for and -proxy-id may be set\n"},
		{"admin off loopback", []string{"-bootstrap", "-proxy-id", "x", "-admin-bind", "0.0.0.0:19000"}, `Invalid -admin-bind "0.0.0.0:19000": must be a loopback address`},
		{"admin port", []string{"-bootstrap", "-proxy-id", "x", "-admin-bind", "127.0.0.1:0"}, `Invalid -admin-bind "127.0.0.1:0": port "0": want 1 to 65535`},
		{"grpc TLS", []string{"-bootstrap", "-proxy-id", "x", "-grpc-addr", "https://127.0.0.1:8503"}, `Invalid -grpc-addr "https://127.0.0.1:8503": only a plaintext`},
		{"grpc no port", []string{"-bootstrap", "-proxy-id", "x", "-grpc-addr", "127.0.0.1"}, `Invalid -grpc-addr "127.0.0.1": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"envoy", "-http-addr", a.HTTPAddr}, tc.args...)
			r := run(t, "", args...)
			if r.Code != 1 || !strings.HasPrefix(r.Stderr, tc.want) || r.Stdout != "" {
				t.Errorf("got %+v, want exit 1 and stderr starting with %q", r, tc.want)
			}
		})
	}
}

// Without -bootstrap the command would have to run Envoy: it says it
// does not, and nothing else.
func TestEnvoyWithoutBootstrap(t *testing.T) {
	a, c := clitest.Agent(t)
	registerWeb(t, c)
	r := run(t, "", "envoy", "-sidecar-for", "web-1", "-http-addr", a.HTTPAddr)
	if r.Code != 1 || r.Stdout != "" || r.Stderr != envoyNoRun+"\n" ||
		!strings.HasPrefix(r.Stderr, "Running Envoy is not supported") {
		t.Errorf("got %+v, want exit 1 and only %q", r, envoyNoRun)
	}
}

// The help says Envoy is not run.
func TestEnvoyHelp(t *testing.T) {
	r := run(t, "", "envoy", "-h")
	if r.Code != 0 || !strings.Contains(r.Stdout, "does not run Envoy") || !strings.Contains(r.Stdout, "-bootstrap") {
		t.Errorf("got %+v, want exit 0 and help saying Envoy is not run", r)
	}
}
