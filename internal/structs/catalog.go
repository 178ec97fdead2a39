package structs

// Health statuses of a check.
const (
	HealthAny      = "any"
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthMaint    = "maintenance"
)

// SerfCheckID is the node-level check every agent keeps for itself.
const (
	SerfCheckID           = "serfHealth"
	SerfCheckName         = "Serf Health Status"
	SerfCheckAliveOutput  = "Agent alive and reachable"
	NodeMaintCheckID      = "_node_maintenance"
	ServiceMaintPrefix    = "_service_maintenance:"
	DefaultMaintReason    = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
	DefaultSvcMaintReason = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)

// ValidStatus reports whether s is a status a check may have.
func ValidStatus(s string) bool {
	switch s {
	case HealthPassing, HealthWarning, HealthCritical:
		return true
	}
	return false
}

// Node is a catalog node.
type Node struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
}

// ServiceAddress is an address and port in a service's TaggedAddresses.
type ServiceAddress struct {
	Address string
	Port    int
}

// Weights are the DNS SRV weights of a service instance by health.
type Weights struct {
	Passing int
	Warning int
}

// NodeService is a service instance as registered on one node. It is the
// shape of /v1/agent/service/:id, of the Service in health entries and of
// the values in /v1/catalog/node/:node.
type NodeService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Address           string
	TaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	Meta              map[string]string
	Port              int
	SocketPath        string `json:",omitempty"`
	Weights           Weights
	EnableTagOverride bool
	Proxy             *ConnectProxyConfig `json:",omitempty"`
	Connect           *ServiceConnect     `json:",omitempty"`
	Datacenter        string              `json:",omitempty"`
	// ContentHash is set only on /v1/agent/service/:id answers: a hash
	// of the rest, for hash-based blocking.
	ContentHash string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// Clone returns a deep copy of s for callers that mutate it.
func (s *NodeService) Clone() *NodeService {
	c := *s
	if s.Tags != nil {
		c.Tags = append(make([]string, 0, len(s.Tags)), s.Tags...)
	}
	c.Meta = cloneMap(s.Meta)
	if s.TaggedAddresses != nil {
		c.TaggedAddresses = make(map[string]ServiceAddress, len(s.TaggedAddresses))
		for k, v := range s.TaggedAddresses {
			c.TaggedAddresses[k] = v
		}
	}
	c.Proxy = s.Proxy.Clone()
	c.Connect = s.Connect.Clone()
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// ServiceNode is one row of /v1/catalog/service/:name: a service instance
// joined with its node.
type ServiceNode struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceKind              string
	ServiceID                string
	ServiceName              string
	ServiceTags              []string
	ServiceAddress           string
	ServiceTaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	ServiceWeights           Weights
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceSocketPath        string `json:",omitempty"`
	ServiceEnableTagOverride bool
	ServiceProxy             *ConnectProxyConfig `json:",omitempty"`
	ServiceConnect           *ServiceConnect     `json:",omitempty"`
	CreateIndex              uint64
	ModifyIndex              uint64
}

// HealthCheckDefinition is the runnable part of a check as reported back in
// HealthCheck.Definition.
type HealthCheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	TLSServerName                  string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	GRPCUseTLS                     bool                `json:",omitempty"`
	Interval                       Duration
	Timeout                        Duration
	DeregisterCriticalServiceAfter Duration
	ScriptArgs                     []string `json:",omitempty"`
}

// HealthCheck is a check as stored in the catalog.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	Interval    string `json:",omitempty"`
	Timeout     string `json:",omitempty"`
	Definition  HealthCheckDefinition
	CreateIndex uint64
	ModifyIndex uint64
}

// Clone returns a copy of c.
func (c *HealthCheck) Clone() *HealthCheck {
	n := *c
	return &n
}

// CheckServiceNode is one entry of /v1/health/service/:name.
type CheckServiceNode struct {
	Node    *Node
	Service *NodeService
	Checks  []*HealthCheck
}

// NodeServices is the body of /v1/catalog/node/:node.
type NodeServices struct {
	Node     *Node
	Services map[string]*NodeService
}

// NodeServiceList is the body of /v1/catalog/node-services/:node.
type NodeServiceList struct {
	Node     *Node
	Services []*NodeService
}

// RegisterRequest is the body of PUT /v1/catalog/register.
type RegisterRequest struct {
	Datacenter      string
	ID              string
	Node            string
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Service         *NodeService
	Check           *HealthCheck
	Checks          []*HealthCheck
	SkipNodeUpdate  bool
}

// DeregisterRequest is the body of PUT /v1/catalog/deregister.
type DeregisterRequest struct {
	Datacenter string
	Node       string
	ServiceID  string
	CheckID    string
}
