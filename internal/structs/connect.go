package structs

import "maps"

// Service kinds.
const (
	// ServiceKindTypical is an ordinary service.
	ServiceKindTypical = ""
	// ServiceKindConnectProxy is a Connect sidecar (or standalone) proxy
	// that fronts the service named by Proxy.DestinationServiceName.
	ServiceKindConnectProxy = "connect-proxy"
)

// SidecarIDSuffix ends the ID and name of a sidecar registered through
// connect.sidecar_service: web's sidecar is "web-sidecar-proxy".
const SidecarIDSuffix = "-sidecar-proxy"

// Upstream destination types.
const (
	UpstreamDestTypeService       = "service"
	UpstreamDestTypePreparedQuery = "prepared_query"
)

// ConnectProxyConfig is the Proxy block of a connect-proxy service: what
// the proxy fronts and the upstreams it serves to its local application.
// JSON is that of the api module's AgentServiceConnectProxyConfig.
type ConnectProxyConfig struct {
	EnvoyExtensions        []EnvoyExtension        `json:",omitempty" bexpr:"-"`
	DestinationServiceName string                  `json:",omitempty"`
	DestinationServiceID   string                  `json:",omitempty"`
	LocalServiceAddress    string                  `json:",omitempty"`
	LocalServicePort       int                     `json:",omitempty"`
	LocalServiceSocketPath string                  `json:",omitempty"`
	Mode                   string                  `json:",omitempty"`
	TransparentProxy       *TransparentProxyConfig `json:",omitempty"`
	Config                 map[string]any          `json:",omitempty" bexpr:"-"`
	Upstreams              []Upstream              `json:",omitempty"`
	MeshGateway            MeshGatewayConfig       `json:",omitempty"`
	Expose                 ExposeConfig            `json:",omitempty"`
	AccessLogs             *AccessLogsConfig       `json:",omitempty"`
}

// EnvoyExtension patches the Envoy resources generated for a proxy.
type EnvoyExtension struct {
	Name          string
	Required      bool
	Arguments     map[string]any `bexpr:"-"`
	ConsulVersion string
	EnvoyVersion  string
}

// TransparentProxyConfig configures a proxy in transparent mode.
type TransparentProxyConfig struct {
	OutboundListenerPort int  `json:",omitempty"`
	DialedDirectly       bool `json:",omitempty"`
}

// MeshGatewayConfig says how traffic to an upstream uses mesh gateways.
type MeshGatewayConfig struct {
	Mode string `json:",omitempty"`
}

// AccessLogsConfig configures a proxy's access logs.
type AccessLogsConfig struct {
	Enabled             bool   `json:",omitempty"`
	DisableListenerLogs bool   `json:",omitempty"`
	Type                string `json:",omitempty"`
	Path                string `json:",omitempty"`
	JSONFormat          string `json:",omitempty"`
	TextFormat          string `json:",omitempty"`
}

// Upstream is a service (or prepared query) a proxy makes reachable to its
// application on a local address.
type Upstream struct {
	DestinationType      string `json:",omitempty"`
	DestinationPartition string `json:",omitempty"`
	DestinationNamespace string `json:",omitempty"`
	DestinationPeer      string `json:",omitempty"`
	DestinationName      string
	DestinationPort      string            `json:",omitempty"`
	Datacenter           string            `json:",omitempty"`
	LocalBindAddress     string            `json:",omitempty"`
	LocalBindPort        int               `json:",omitempty"`
	LocalBindSocketPath  string            `json:",omitempty"`
	LocalBindSocketMode  string            `json:",omitempty"`
	Config               map[string]any    `json:",omitempty" bexpr:"-"`
	MeshGateway          MeshGatewayConfig `json:",omitempty"`
	CentrallyConfigured  bool              `json:",omitempty" bexpr:"-"`
}

// ExposeConfig lists the HTTP paths a proxy exposes without mTLS, such as
// health and metrics endpoints.
type ExposeConfig struct {
	// Checks exposes the paths of the service's HTTP and gRPC checks.
	Checks bool         `json:",omitempty"`
	Paths  []ExposePath `json:",omitempty"`
}

// ExposePath is one exposed path.
type ExposePath struct {
	ListenerPort    int    `json:",omitempty"`
	Path            string `json:",omitempty"`
	LocalPathPort   int    `json:",omitempty"`
	Protocol        string `json:",omitempty"`
	ParsedFromCheck bool
}

// ServiceConnect is the Connect block of a service: whether it speaks
// Connect natively, or the sidecar to register for it.
type ServiceConnect struct {
	Native bool `json:",omitempty"`
	// SidecarService is a shorthand, expanded by the agent into a second
	// registration; it is never stored in the catalog.
	SidecarService *ServiceDefinition `json:",omitempty" bexpr:"-"`
}

// Clone returns a deep copy of p; nil stays nil.
func (p *ConnectProxyConfig) Clone() *ConnectProxyConfig {
	if p == nil {
		return nil
	}
	c := *p
	c.Config = cloneAnyMap(p.Config)
	if p.EnvoyExtensions != nil {
		c.EnvoyExtensions = make([]EnvoyExtension, len(p.EnvoyExtensions))
		for i, e := range p.EnvoyExtensions {
			e.Arguments = cloneAnyMap(e.Arguments)
			c.EnvoyExtensions[i] = e
		}
	}
	if p.TransparentProxy != nil {
		t := *p.TransparentProxy
		c.TransparentProxy = &t
	}
	if p.AccessLogs != nil {
		a := *p.AccessLogs
		c.AccessLogs = &a
	}
	if p.Upstreams != nil {
		c.Upstreams = make([]Upstream, len(p.Upstreams))
		for i, u := range p.Upstreams {
			u.Config = cloneAnyMap(u.Config)
			c.Upstreams[i] = u
		}
	}
	if p.Expose.Paths != nil {
		c.Expose.Paths = append([]ExposePath(nil), p.Expose.Paths...)
	}
	return &c
}

// Clone returns a deep copy of c; nil stays nil.
func (c *ServiceConnect) Clone() *ServiceConnect {
	if c == nil {
		return nil
	}
	n := *c
	n.SidecarService = c.SidecarService.Clone()
	return &n
}

// Clone returns a deep copy of d; nil stays nil.
func (d *ServiceDefinition) Clone() *ServiceDefinition {
	if d == nil {
		return nil
	}
	c := *d
	if d.Tags != nil {
		c.Tags = append([]string{}, d.Tags...)
	}
	c.Meta = cloneMap(d.Meta)
	if d.TaggedAddresses != nil {
		c.TaggedAddresses = maps.Clone(d.TaggedAddresses)
	}
	if d.Weights != nil {
		w := *d.Weights
		c.Weights = &w
	}
	if d.Check != nil {
		ck := *d.Check
		c.Check = &ck
	}
	if d.Checks != nil {
		c.Checks = make([]*CheckType, len(d.Checks))
		for i, ck := range d.Checks {
			if ck != nil {
				n := *ck
				c.Checks[i] = &n
			}
		}
	}
	c.Proxy = d.Proxy.Clone()
	c.Connect = d.Connect.Clone()
	return &c
}

// cloneAnyMap deep-copies opaque configuration: nested maps and lists are
// copied, scalars shared.
func cloneAnyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneAny(v)
	}
	return out
}

func cloneAny(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneAnyMap(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = cloneAny(e)
		}
		return out
	}
	return v
}

// ConnectTarget is the service a connect-capable instance serves traffic
// for: a proxy's destination, a native service's own name; "" for any
// other instance. /v1/catalog/connect/:service lists the instances whose
// target is :service.
func (s *NodeService) ConnectTarget() string {
	if s.Kind == ServiceKindConnectProxy && s.Proxy != nil {
		return s.Proxy.DestinationServiceName
	}
	if s.Kind == ServiceKindTypical && s.Connect != nil && s.Connect.Native {
		return s.Service
	}
	return ""
}
