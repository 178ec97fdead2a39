package configentry

import (
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// The JSON shapes here are those of Consul's api module (config_entry.go,
// config_entry_intentions.go, config_entry_mesh.go), so that its client
// decodes what Trellis answers. Fields Trellis stores without acting on
// yet (Envoy extensions, rate limits, locality) are kept opaque.

// ProxyConfigEntry is the proxy-defaults entry: settings for every proxy
// of the datacenter. Its name is always "global".
type ProxyConfigEntry struct {
	Kind                 string
	Name                 string
	Partition            string                  `json:",omitempty"`
	Namespace            string                  `json:",omitempty"`
	Mode                 string                  `json:",omitempty"` // "", "direct" or "transparent"
	TransparentProxy     *TransparentProxyConfig `json:",omitempty"`
	MutualTLSMode        string                  `json:",omitempty"` // "", "strict" or "permissive"
	Config               map[string]any          `json:",omitempty"` // opaque proxy settings; "protocol" is read
	MeshGateway          MeshGatewayConfig       `json:",omitempty"`
	Expose               ExposeConfig            `json:",omitempty"`
	AccessLogs           *AccessLogsConfig       `json:",omitempty"`
	EnvoyExtensions      []EnvoyExtension        `json:",omitempty"`
	FailoverPolicy       map[string]any          `json:",omitempty"`
	PrioritizeByLocality map[string]any          `json:",omitempty"`

	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceConfigEntry is the service-defaults entry of one service.
type ServiceConfigEntry struct {
	Kind                      string
	Name                      string
	Partition                 string                  `json:",omitempty"`
	Namespace                 string                  `json:",omitempty"`
	Protocol                  string                  `json:",omitempty"` // tcp, http, http2 or grpc; "" inherits
	Mode                      string                  `json:",omitempty"`
	TransparentProxy          *TransparentProxyConfig `json:",omitempty"`
	MutualTLSMode             string                  `json:",omitempty"`
	MeshGateway               MeshGatewayConfig       `json:",omitempty"`
	Expose                    ExposeConfig            `json:",omitempty"`
	ExternalSNI               string                  `json:",omitempty"`
	UpstreamConfig            *UpstreamConfiguration  `json:",omitempty"`
	Destination               *DestinationConfig      `json:",omitempty"`
	MaxInboundConnections     int                     `json:",omitempty"`
	LocalConnectTimeoutMs     int                     `json:",omitempty"`
	LocalRequestTimeoutMs     int                     `json:",omitempty"`
	BalanceInboundConnections string                  `json:",omitempty"`
	RateLimits                map[string]any          `json:",omitempty"`
	EnvoyExtensions           []EnvoyExtension        `json:",omitempty"`
	Meta                      map[string]string       `json:",omitempty"`
	CreateIndex               uint64
	ModifyIndex               uint64
	MaxRequestHeadersKB       *uint32 `json:",omitempty"`
}

// ServiceIntentionsConfigEntry holds every intention whose destination is
// the service Name ("*": every service).
type ServiceIntentionsConfigEntry struct {
	Kind      string
	Name      string
	Partition string `json:",omitempty"`
	Namespace string `json:",omitempty"`

	Sources []*SourceIntention
	JWT     map[string]any `json:",omitempty"`

	Meta map[string]string `json:",omitempty"`

	CreateIndex uint64
	ModifyIndex uint64
}

// Intention actions.
const (
	ActionAllow = "allow"
	ActionDeny  = "deny"
)

// SourceIntention is one intention: what Name may do to the entry's
// service. It has an Action (L4) or Permissions (L7), never both.
type SourceIntention struct {
	Name          string
	Peer          string                 `json:",omitempty"`
	Partition     string                 `json:",omitempty"`
	Namespace     string                 `json:",omitempty"`
	SamenessGroup string                 `json:",omitempty"`
	Action        string                 `json:",omitempty"`
	Permissions   []*IntentionPermission `json:",omitempty"`
	// Precedence is computed: larger is more specific and wins.
	Precedence  int
	Type        string // "consul"
	Description string `json:",omitempty"`

	LegacyID         string            `json:",omitempty"`
	LegacyMeta       map[string]string `json:",omitempty"`
	LegacyCreateTime *time.Time        `json:",omitempty"`
	LegacyUpdateTime *time.Time        `json:",omitempty"`
}

// IntentionPermission is one L7 rule: Action applies to requests that
// HTTP matches.
type IntentionPermission struct {
	Action string
	HTTP   *IntentionHTTPPermission `json:",omitempty"`
	JWT    map[string]any           `json:",omitempty"`
}

// IntentionHTTPPermission matches HTTP requests: every rule given must
// match.
type IntentionHTTPPermission struct {
	PathExact  string `json:",omitempty"`
	PathPrefix string `json:",omitempty"`
	PathRegex  string `json:",omitempty"`

	Header []IntentionHTTPHeaderPermission `json:",omitempty"`

	Methods []string `json:",omitempty"`
}

// IntentionHTTPHeaderPermission matches one request header by exactly
// one of Present, Exact, Prefix, Suffix, Contains or Regex; Invert negates
// the match.
type IntentionHTTPHeaderPermission struct {
	Name       string
	Present    bool   `json:",omitempty"`
	Exact      string `json:",omitempty"`
	Prefix     string `json:",omitempty"`
	Suffix     string `json:",omitempty"`
	Contains   string `json:",omitempty"`
	Regex      string `json:",omitempty"`
	Invert     bool   `json:",omitempty"`
	IgnoreCase bool   `json:",omitempty"`
}

// MeshConfigEntry is the mesh entry: datacenter-wide mesh settings.
type MeshConfigEntry struct {
	Kind      string
	Name      string
	Partition string `json:",omitempty"`
	Namespace string `json:",omitempty"`

	TransparentProxy                 TransparentProxyMeshConfig
	AllowEnablingPermissiveMutualTLS bool               `json:",omitempty"`
	ValidateClusters                 bool               `json:",omitempty"`
	TLS                              *MeshTLSConfig     `json:",omitempty"`
	HTTP                             *MeshHTTPConfig    `json:",omitempty"`
	Peering                          *PeeringMeshConfig `json:",omitempty"`
	// DefaultIntentionPolicy, a Trellis setting Consul does not have,
	// decides connections that no intention matches: "allow" or "deny";
	// "" leaves it to the agents' acl.default_policy (allow with ACLs
	// off). Consul's api.MeshConfigEntry does not know it: writing the
	// entry back through that client clears it.
	DefaultIntentionPolicy string `json:",omitempty"`

	Meta        map[string]string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// TransparentProxyMeshConfig is the mesh-wide transparent proxy setting.
type TransparentProxyMeshConfig struct {
	MeshDestinationsOnly bool
}

// MeshTLSConfig sets the TLS versions and ciphers of the mesh.
type MeshTLSConfig struct {
	Incoming *MeshDirectionalTLSConfig `json:",omitempty"`
	Outgoing *MeshDirectionalTLSConfig `json:",omitempty"`
}

// MeshDirectionalTLSConfig is one direction of MeshTLSConfig.
type MeshDirectionalTLSConfig struct {
	TLSMinVersion string   `json:",omitempty"`
	TLSMaxVersion string   `json:",omitempty"`
	CipherSuites  []string `json:",omitempty"`
}

// MeshHTTPConfig is the mesh-wide HTTP setting.
type MeshHTTPConfig struct {
	SanitizeXForwardedClientCert bool
	Incoming                     *MeshDirectionalHTTPConfig `json:",omitempty"`
}

// MeshDirectionalHTTPConfig is the inbound HTTP setting.
type MeshDirectionalHTTPConfig struct {
	RequestNormalization *RequestNormalizationMeshConfig `json:",omitempty"`
}

// RequestNormalizationMeshConfig says how inbound request paths and
// headers are normalised.
type RequestNormalizationMeshConfig struct {
	InsecureDisablePathNormalization bool   `json:",omitempty"`
	MergeSlashes                     bool   `json:",omitempty"`
	PathWithEscapedSlashesAction     string `json:",omitempty"`
	HeadersWithUnderscoresAction     string `json:",omitempty"`
}

// PeeringMeshConfig is the mesh-wide peering setting.
type PeeringMeshConfig struct {
	PeerThroughMeshGateways bool `json:",omitempty"`
}

// The proxy settings config entries share with service registrations
// are the same types as a registration's Proxy block.
type (
	MeshGatewayConfig      = structs.MeshGatewayConfig
	TransparentProxyConfig = structs.TransparentProxyConfig
	ExposeConfig           = structs.ExposeConfig
	ExposePath             = structs.ExposePath
	AccessLogsConfig       = structs.AccessLogsConfig
	EnvoyExtension         = structs.EnvoyExtension
)

// UpstreamConfiguration holds per-upstream settings of a service.
type UpstreamConfiguration struct {
	Overrides []*UpstreamConfig `json:",omitempty"`
	Defaults  *UpstreamConfig   `json:",omitempty"`
}

// UpstreamConfig is the settings of one upstream (Overrides) or of all
// (Defaults).
type UpstreamConfig struct {
	Name                       string              `json:",omitempty"`
	Partition                  string              `json:",omitempty"`
	Namespace                  string              `json:",omitempty"`
	Peer                       string              `json:",omitempty"`
	EnvoyListenerJSON          string              `json:",omitempty"`
	EnvoyClusterJSON           string              `json:",omitempty"`
	Protocol                   string              `json:",omitempty"`
	ConnectTimeoutMs           int                 `json:",omitempty"`
	Limits                     *UpstreamLimits     `json:",omitempty"`
	PassiveHealthCheck         *PassiveHealthCheck `json:",omitempty"`
	MeshGateway                MeshGatewayConfig   `json:",omitempty"`
	BalanceOutboundConnections string              `json:",omitempty"`
}

// UpstreamLimits bound the connections and requests to an upstream.
type UpstreamLimits struct {
	MaxConnections        *int
	MaxPendingRequests    *int
	MaxConcurrentRequests *int
	PassiveHealthCheck    *PassiveHealthCheck `json:",omitempty"`
}

// PassiveHealthCheck is outlier detection for an upstream.
type PassiveHealthCheck struct {
	Interval                           time.Duration `json:",omitempty"`
	MaxFailures                        uint32
	EnforcingConsecutive5xx            *uint32        `json:",omitempty"`
	EnforcingConsecutiveGatewayFailure *uint32        `json:",omitempty"`
	Consecutive5xx                     *uint32        `json:",omitempty"`
	ConsecutiveGatewayFailure          *uint32        `json:",omitempty"`
	MaxEjectionPercent                 *uint32        `json:",omitempty"`
	BaseEjectionTime                   *time.Duration `json:",omitempty"`
}

// DestinationConfig makes a service-defaults entry a destination outside
// the mesh (transparent proxy).
type DestinationConfig struct {
	Addresses []string `json:",omitempty"`
	Port      int      `json:",omitempty"`
}

func (e *ProxyConfigEntry) GetKind() string            { return ProxyDefaults }
func (e *ProxyConfigEntry) GetName() string            { return e.Name }
func (e *ProxyConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *ProxyConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *ProxyConfigEntry) SetRaftIndex(c, m uint64) { e.CreateIndex, e.ModifyIndex = c, m }

func (e *ServiceConfigEntry) GetKind() string            { return ServiceDefaults }
func (e *ServiceConfigEntry) GetName() string            { return e.Name }
func (e *ServiceConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *ServiceConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *ServiceConfigEntry) SetRaftIndex(c, m uint64) { e.CreateIndex, e.ModifyIndex = c, m }

func (e *ServiceIntentionsConfigEntry) GetKind() string            { return ServiceIntentions }
func (e *ServiceIntentionsConfigEntry) GetName() string            { return e.Name }
func (e *ServiceIntentionsConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *ServiceIntentionsConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *ServiceIntentionsConfigEntry) SetRaftIndex(c, m uint64) {
	e.CreateIndex, e.ModifyIndex = c, m
}

func (e *MeshConfigEntry) GetKind() string            { return MeshConfig }
func (e *MeshConfigEntry) GetName() string            { return e.Name }
func (e *MeshConfigEntry) GetMeta() map[string]string { return e.Meta }
func (e *MeshConfigEntry) GetRaftIndex() (uint64, uint64) {
	return e.CreateIndex, e.ModifyIndex
}
func (e *MeshConfigEntry) SetRaftIndex(c, m uint64) { e.CreateIndex, e.ModifyIndex = c, m }
