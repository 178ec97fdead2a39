package structs

// CheckType is a check definition as given to the agent: in a service
// registration, in PUT /v1/agent/check/register, or in a config file.
type CheckType struct {
	CheckID                        string
	Name                           string
	Notes                          string
	Status                         string
	ServiceID                      string
	Args                           []string
	ScriptArgs                     []string
	HTTP                           string
	Header                         map[string][]string
	Method                         string
	Body                           string
	TLSServerName                  string
	TLSSkipVerify                  bool
	TCP                            string
	GRPC                           string
	GRPCUseTLS                     bool
	TTL                            Duration
	Interval                       Duration
	Timeout                        Duration
	SuccessBeforePassing           int
	FailuresBeforeWarning          int
	FailuresBeforeCritical         int
	DeregisterCriticalServiceAfter Duration
	AliasNode                      string
	AliasService                   string
}

// ScriptArgsOrArgs returns the script arguments under either name.
func (c *CheckType) ScriptArgsOrArgs() []string {
	if len(c.Args) > 0 {
		return c.Args
	}
	return c.ScriptArgs
}

// Type names the kind of check: "http", "tcp", "grpc", "ttl", "script",
// "alias", or "" when the definition names none.
func (c *CheckType) Type() string {
	switch {
	case c.HTTP != "":
		return "http"
	case c.TCP != "":
		return "tcp"
	case c.GRPC != "":
		return "grpc"
	case c.TTL > 0:
		return "ttl"
	case len(c.ScriptArgsOrArgs()) > 0:
		return "script"
	case c.AliasService != "" || c.AliasNode != "":
		return "alias"
	}
	return ""
}

// ServiceDefinition is a service as given to the agent: the body of
// PUT /v1/agent/service/register or an entry of "services" in a config file.
type ServiceDefinition struct {
	Kind              string
	ID                string
	Name              string
	Tags              []string
	Address           string
	TaggedAddresses   map[string]ServiceAddress
	Meta              map[string]string
	Port              int
	SocketPath        string
	Weights           *Weights
	EnableTagOverride bool
	Check             *CheckType
	Checks            []*CheckType
	Proxy             *ConnectProxyConfig `json:",omitempty"`
	Connect           *ServiceConnect     `json:",omitempty"`
	Token             string
}

// NodeService turns d into the service instance it registers.
func (d *ServiceDefinition) NodeService() *NodeService {
	id := d.ID
	if id == "" {
		id = d.Name
	}
	w := Weights{Passing: 1, Warning: 1}
	if d.Weights != nil {
		w = *d.Weights
	}
	return &NodeService{
		Kind:              d.Kind,
		ID:                id,
		Service:           d.Name,
		Tags:              d.Tags,
		Address:           d.Address,
		TaggedAddresses:   d.TaggedAddresses,
		Meta:              d.Meta,
		Port:              d.Port,
		SocketPath:        d.SocketPath,
		Weights:           w,
		EnableTagOverride: d.EnableTagOverride,
		Proxy:             d.Proxy.Clone(),
		Connect:           d.Connect.Clone(),
	}
}

// AllChecks returns Check and Checks together.
func (d *ServiceDefinition) AllChecks() []*CheckType {
	var out []*CheckType
	if d.Check != nil {
		out = append(out, d.Check)
	}
	for _, c := range d.Checks {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// AgentMember is one entry of /v1/agent/members.
type AgentMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// UserEvent is a fired event as listed by /v1/event/list.
type UserEvent struct {
	ID            string
	Name          string
	Payload       []byte
	NodeFilter    string
	ServiceFilter string
	TagFilter     string
	Version       int
	LTime         uint64
}
