package structs

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// fullProxy sets every field of the api's proxy config that Trellis
// carries, so that a field dropped or misspelt on the way fails the test.
func fullProxy() *api.AgentServiceConnectProxyConfig {
	return &api.AgentServiceConnectProxyConfig{
		EnvoyExtensions: []api.EnvoyExtension{{Name: "builtin/lua", Required: true,
			Arguments: map[string]any{"Script": "x"}, ConsulVersion: ">=1.0", EnvoyVersion: ">=1.2"}},
		DestinationServiceName: "web",
		DestinationServiceID:   "web-1",
		LocalServiceAddress:    "127.0.0.1",
		LocalServicePort:       8080,
		LocalServiceSocketPath: "/tmp/web.sock",
		Mode:                   api.ProxyModeTransparent,
		TransparentProxy:       &api.TransparentProxyConfig{OutboundListenerPort: 15001, DialedDirectly: true},
		Config:                 map[string]any{"protocol": "http", "nested": map[string]any{"Keep_Case": true}},
		Upstreams: []api.Upstream{{
			DestinationType:      api.UpstreamDestTypeService,
			DestinationPartition: "p",
			DestinationNamespace: "ns",
			DestinationPeer:      "peer",
			DestinationName:      "db",
			DestinationPort:      "sql",
			Datacenter:           "dc2",
			LocalBindAddress:     "127.0.0.2",
			LocalBindPort:        9191,
			LocalBindSocketPath:  "/tmp/db.sock",
			LocalBindSocketMode:  "0700",
			Config:               map[string]any{"connect_timeout_ms": float64(500)},
			MeshGateway:          api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal},
			CentrallyConfigured:  true,
		}},
		MeshGateway: api.MeshGatewayConfig{Mode: api.MeshGatewayModeRemote},
		Expose: api.ExposeConfig{Checks: true, Paths: []api.ExposePath{{
			ListenerPort: 21500, Path: "/metrics", LocalPathPort: 9102, Protocol: "http", ParsedFromCheck: true,
		}}},
		AccessLogs: &api.AccessLogsConfig{Enabled: true, DisableListenerLogs: true, Type: api.FileLogSinkType,
			Path: "/tmp/a.log", JSONFormat: "{}"},
	}
}

// roundTrip encodes in as JSON, decodes it into mid (a Trellis type),
// encodes mid, decodes that into a new value of in's type and returns it
// with both encodings.
func roundTrip[A any](t *testing.T, in *A, mid any) (*A, []byte, []byte) {
	t.Helper()
	b1, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := DecodeJSON(bytes.NewReader(b1), mid); err != nil {
		t.Fatal(err)
	}
	b2, err := json.Marshal(mid)
	if err != nil {
		t.Fatal(err)
	}
	out := new(A)
	if err := json.Unmarshal(b2, out); err != nil {
		t.Fatal(err)
	}
	return out, b1, b2
}

func TestConnectJSONMatchesAPI(t *testing.T) {
	t.Run("AgentService", func(t *testing.T) {
		in := &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "web-sidecar-proxy", Service: "web-sidecar-proxy",
			Tags: []string{}, Meta: map[string]string{}, Port: 21000, Address: "10.0.0.1",
			Weights: api.AgentWeights{Passing: 1, Warning: 1}, Proxy: fullProxy(),
			Connect: &api.AgentServiceConnect{Native: true}}
		var ns NodeService
		out, b1, b2 := roundTrip(t, in, &ns)
		if !reflect.DeepEqual(in, out) {
			t.Errorf("NodeService lost data:\n api: %s\nours: %s", b1, b2)
		}
		// Field for field, the encodings agree: no extra or renamed keys.
		for _, pair := range [][2]any{{in.Proxy, ns.Proxy}, {in.Connect, ns.Connect}} {
			a, _ := json.Marshal(pair[0])
			o, _ := json.Marshal(pair[1])
			if !bytes.Equal(a, o) {
				t.Errorf("JSON differs:\n api: %s\nours: %s", a, o)
			}
		}
	})
	t.Run("CatalogService", func(t *testing.T) {
		in := &api.CatalogService{Node: "n1", ServiceID: "p", ServiceName: "p", ServiceProxy: fullProxy()}
		out, b1, b2 := roundTrip(t, in, &ServiceNode{})
		if !reflect.DeepEqual(in.ServiceProxy, out.ServiceProxy) {
			t.Errorf("ServiceNode lost data:\n api: %s\nours: %s", b1, b2)
		}
	})
	t.Run("AgentServiceRegistration", func(t *testing.T) {
		in := &api.AgentServiceRegistration{Name: "web", Port: 8080, Connect: &api.AgentServiceConnect{
			SidecarService: &api.AgentServiceRegistration{Port: 21001, Tags: []string{"s"}, Meta: map[string]string{"Up_Case": "v"},
				Proxy: fullProxy()},
		}}
		out, b1, b2 := roundTrip(t, in, &ServiceDefinition{})
		if !reflect.DeepEqual(in, out) {
			t.Errorf("ServiceDefinition lost data:\n api: %s\nours: %s", b1, b2)
		}
	})
}

// Config files and hand-written requests use snake_case; the opaque
// Config maps keep their keys as written.
func TestConnectSnakeCaseDecode(t *testing.T) {
	body := `{"name": "web", "port": 8080, "connect": {"sidecar_service": {"port": 21001,
		"meta": {"Keep_Me": "x"},
		"proxy": {"local_service_port": 8081, "config": {"envoy_stats_bind_addr": "0.0.0.0:9102", "deep": {"a_b": 1}},
			"upstreams": [{"destination_name": "db", "local_bind_port": 9191, "destination_type": "service",
				"config": {"connect_timeout_ms": 5}, "mesh_gateway": {"mode": "local"}}],
			"expose": {"checks": true, "paths": [{"listener_port": 21500, "path": "/m", "local_path_port": 9102}]},
			"transparent_proxy": {"outbound_listener_port": 15001}}}}}`
	var d ServiceDefinition
	if err := DecodeJSON(strings.NewReader(body), &d); err != nil {
		t.Fatal(err)
	}
	if d.Connect == nil || d.Connect.SidecarService == nil || d.Connect.SidecarService.Proxy == nil {
		t.Fatalf("sidecar not decoded: %+v", d.Connect)
	}
	sc := d.Connect.SidecarService
	p := sc.Proxy
	if sc.Port != 21001 || sc.Meta["Keep_Me"] != "x" || p.LocalServicePort != 8081 {
		t.Errorf("sidecar = %+v, proxy = %+v", sc, p)
	}
	if len(p.Upstreams) != 1 || p.Upstreams[0].DestinationName != "db" || p.Upstreams[0].LocalBindPort != 9191 ||
		p.Upstreams[0].MeshGateway.Mode != "local" || p.Upstreams[0].Config["connect_timeout_ms"] == nil {
		t.Errorf("upstreams = %+v", p.Upstreams)
	}
	if p.Config["envoy_stats_bind_addr"] != "0.0.0.0:9102" {
		t.Errorf("config keys must be kept as written: %v", p.Config)
	}
	if deep, _ := p.Config["deep"].(map[string]any); deep["a_b"] == nil {
		t.Errorf("nested config keys must be kept as written: %v", p.Config)
	}
	if !p.Expose.Checks || len(p.Expose.Paths) != 1 || p.Expose.Paths[0].LocalPathPort != 9102 {
		t.Errorf("expose = %+v", p.Expose)
	}
	if p.TransparentProxy == nil || p.TransparentProxy.OutboundListenerPort != 15001 {
		t.Errorf("transparent proxy = %+v", p.TransparentProxy)
	}
}

func TestNodeServiceCloneIsDeep(t *testing.T) {
	s := &NodeService{ID: "p", Kind: ServiceKindConnectProxy, Proxy: &ConnectProxyConfig{
		Config:    map[string]any{"a": map[string]any{"b": 1}},
		Upstreams: []Upstream{{DestinationName: "db", Config: map[string]any{"x": 1}}},
		Expose:    ExposeConfig{Paths: []ExposePath{{Path: "/a"}}},
	}, Connect: &ServiceConnect{SidecarService: &ServiceDefinition{Name: "x", Tags: []string{"t"}}}}
	c := s.Clone()
	c.Proxy.Config["a"].(map[string]any)["b"] = 2
	c.Proxy.Upstreams[0].DestinationName = "other"
	c.Proxy.Upstreams[0].Config["x"] = 2
	c.Proxy.Expose.Paths[0].Path = "/b"
	c.Connect.SidecarService.Tags[0] = "u"
	if s.Proxy.Config["a"].(map[string]any)["b"] != 1 || s.Proxy.Upstreams[0].DestinationName != "db" ||
		s.Proxy.Upstreams[0].Config["x"] != 1 || s.Proxy.Expose.Paths[0].Path != "/a" ||
		s.Connect.SidecarService.Tags[0] != "t" {
		t.Errorf("changing the clone changed the original: %+v", s.Proxy)
	}
}
