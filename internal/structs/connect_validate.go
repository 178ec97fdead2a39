package structs

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ValidateConnect checks the Connect parts of a service instance: a
// connect-proxy must name its destination, have a port or socket path and
// well-formed upstreams and expose paths, and cannot be Connect native.
// Other kinds are not checked here. The error text names the field; the
// first problem found is reported.
func (s *NodeService) ValidateConnect() error {
	if s.Kind != ServiceKindConnectProxy {
		return nil
	}
	p := s.Proxy
	if p == nil || strings.TrimSpace(p.DestinationServiceName) == "" {
		return fmt.Errorf("Proxy.DestinationServiceName must be non-empty for Connect proxy services")
	}
	if p.DestinationServiceName == "*" {
		return fmt.Errorf("Proxy.DestinationServiceName must not be a wildcard for Connect proxy services")
	}
	if s.Port == 0 && s.SocketPath == "" {
		return fmt.Errorf("Port or SocketPath must be set for a Connect proxy")
	}
	if s.Connect != nil && s.Connect.Native {
		return fmt.Errorf("A Proxy cannot also be Connect Native, only typical services")
	}
	if p.LocalServicePort < 0 || p.LocalServicePort > 65535 {
		return fmt.Errorf("Proxy.LocalServicePort %d out of range: must be between 0 and 65535", p.LocalServicePort)
	}
	switch p.Mode {
	case "", "direct", "transparent":
	default:
		return fmt.Errorf("Proxy.Mode %q is invalid: want \"\", \"direct\" or \"transparent\"", p.Mode)
	}
	binds := make(map[string]int)
	for i, u := range p.Upstreams {
		field := fmt.Sprintf("Proxy.Upstreams[%d]", i)
		switch u.DestinationType {
		case "", UpstreamDestTypeService, UpstreamDestTypePreparedQuery:
		default:
			return fmt.Errorf("%s.DestinationType %q is invalid: want %q or %q", field, u.DestinationType,
				UpstreamDestTypeService, UpstreamDestTypePreparedQuery)
		}
		if strings.TrimSpace(u.DestinationName) == "" {
			return fmt.Errorf("%s.DestinationName must be set: upstream destination name cannot be empty", field)
		}
		if u.LocalBindPort < 0 || u.LocalBindPort > 65535 {
			return fmt.Errorf("%s.LocalBindPort %d out of range: must be between 0 and 65535", field, u.LocalBindPort)
		}
		// In transparent mode, and for upstreams from central config,
		// the proxy intercepts traffic: no local listener is needed.
		if u.CentrallyConfigured || p.Mode == "transparent" {
			continue
		}
		if u.LocalBindPort == 0 && u.LocalBindSocketPath == "" {
			return fmt.Errorf("%s.LocalBindPort must be set: upstream %q needs a local bind port or socket path", field, u.DestinationName)
		}
		if u.LocalBindSocketPath != "" && u.LocalBindPort != 0 {
			return fmt.Errorf("%s: LocalBindPort and LocalBindSocketPath cannot both be set", field)
		}
		addr := u.LocalBindSocketPath
		if addr == "" {
			host := u.LocalBindAddress
			if host == "" {
				host = "127.0.0.1"
			}
			addr = net.JoinHostPort(host, strconv.Itoa(u.LocalBindPort))
		}
		if j, dup := binds[addr]; dup {
			return fmt.Errorf("%s: upstreams cannot contain duplicates of %s (also bound by Proxy.Upstreams[%d])", field, addr, j)
		}
		binds[addr] = i
	}
	for i, e := range p.Expose.Paths {
		field := fmt.Sprintf("Proxy.Expose.Paths[%d]", i)
		if !strings.HasPrefix(e.Path, "/") {
			return fmt.Errorf("%s.Path %q must begin with a '/'", field, e.Path)
		}
		if e.LocalPathPort <= 0 || e.LocalPathPort > 65535 {
			return fmt.Errorf("%s.LocalPathPort must be set to a port between 1 and 65535", field)
		}
		if e.ListenerPort <= 0 || e.ListenerPort > 65535 {
			return fmt.Errorf("%s.ListenerPort must be set to a port between 1 and 65535", field)
		}
		switch strings.ToLower(e.Protocol) {
		case "", "http", "http2":
		default:
			return fmt.Errorf("%s.Protocol %q is invalid: want http or http2", field, e.Protocol)
		}
	}
	return nil
}

// ValidateConnect checks the Connect parts of a service definition: those
// of the instance it registers, and the rules of the sidecar_service
// shorthand. It does not check the sidecar as expanded (that needs the
// agent's defaults): the agent does, after expanding it.
func (d *ServiceDefinition) ValidateConnect() error {
	if err := d.NodeService().ValidateConnect(); err != nil {
		return err
	}
	if d.Connect == nil || d.Connect.SidecarService == nil {
		return nil
	}
	if d.Kind != ServiceKindTypical {
		return fmt.Errorf("Connect.SidecarService cannot be set on a %s service", d.Kind)
	}
	sc := d.Connect.SidecarService
	if sc.Kind != ServiceKindTypical && sc.Kind != ServiceKindConnectProxy {
		return fmt.Errorf("Connect.SidecarService.Kind %q is invalid: a sidecar is a %s", sc.Kind, ServiceKindConnectProxy)
	}
	if sc.Connect != nil && sc.Connect.SidecarService != nil {
		return fmt.Errorf("Connect.SidecarService cannot have a nested SidecarService")
	}
	if sc.Connect != nil && sc.Connect.Native {
		return fmt.Errorf("Connect.SidecarService: A Proxy cannot also be Connect Native, only typical services")
	}
	if sc.Port < 0 || sc.Port > 65535 {
		return fmt.Errorf("Connect.SidecarService.Port %d out of range: must be between 0 and 65535", sc.Port)
	}
	// Check the proxy block now, with what the agent will default
	// (destination, port) stood in, so that a config file fails to load
	// rather than the agent failing to start.
	probe := sc.NodeService()
	probe.Kind = ServiceKindConnectProxy
	if probe.Proxy == nil {
		probe.Proxy = &ConnectProxyConfig{}
	}
	if probe.Proxy.DestinationServiceName == "" {
		probe.Proxy.DestinationServiceName = d.Name
	}
	if probe.Port == 0 && probe.SocketPath == "" {
		probe.Port = 1
	}
	if err := probe.ValidateConnect(); err != nil {
		return fmt.Errorf("Connect.SidecarService: %w", err)
	}
	return nil
}
