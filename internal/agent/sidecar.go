package agent

import (
	"net"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// Sidecar registration: a service definition's connect.sidecar_service is
// a shorthand for a second, connect-proxy registration that fronts it.
// The agent expands it with defaults from the parent, registers both or
// neither, and removes the sidecar with its parent.

// Names of the checks a sidecar gets when its definition gives none.
const (
	sidecarListeningCheck = "Connect Sidecar Listening"
	sidecarAliasingCheck  = "Connect Sidecar Aliasing "
	sidecarCheckInterval  = 10 * time.Second
)

// prepareWithSidecar validates def and, when it has a sidecar_service,
// expands and validates the sidecar too. It returns what to install (the
// parent first) and the definition to persist: def with the sidecar's
// assigned port, so that it keeps the port across restarts. reserved
// holds ports given to sidecars not yet installed (a config reload
// installs several at once); the sidecar's port is added to it. syncMu must
// be held, so that no other registration takes the same port.
func (a *Agent) prepareWithSidecar(def *structs.ServiceDefinition, src source, reserved map[int]bool) ([]*preparedService, *structs.ServiceDefinition, error) {
	p, err := a.prepareService(def, src)
	if err != nil {
		return nil, nil, err
	}
	if c := p.svc.Connect; c != nil && c.SidecarService != nil {
		// As Consul, the parent is stored without the shorthand.
		c.SidecarService = nil
		if !c.Native {
			p.svc.Connect = nil
		}
	}
	if def.Connect == nil || def.Connect.SidecarService == nil {
		return []*preparedService{p}, def, nil
	}
	scDef, err := a.sidecarDefinition(def.Connect.SidecarService, p.svc, reserved)
	if err != nil {
		return nil, nil, err
	}
	sp, err := a.prepareService(scDef, src)
	if err != nil {
		return nil, nil, badRequest("Connect.SidecarService: %v", err)
	}
	sp.sidecarFor = p.svc.ID
	if sp.svc.Port != 0 {
		reserved[sp.svc.Port] = true
	}
	persist := def.Clone()
	persist.Connect.SidecarService.Port = sp.svc.Port
	return []*preparedService{p, sp}, persist, nil
}

// sidecarDefinition expands the sidecar_service of parent: what the user
// set is kept, the rest defaults from the parent, and a port is assigned
// from the agent's sidecar range when none is given.
func (a *Agent) sidecarDefinition(in *structs.ServiceDefinition, parent *structs.NodeService, reserved map[int]bool) (*structs.ServiceDefinition, error) {
	sc := in.Clone()
	sc.Kind = structs.ServiceKindConnectProxy
	if sc.ID == "" {
		sc.ID = parent.ID + structs.SidecarIDSuffix
	}
	if sc.Name == "" {
		sc.Name = parent.Service + structs.SidecarIDSuffix
	}
	if sc.Tags == nil && len(parent.Tags) > 0 {
		sc.Tags = append([]string{}, parent.Tags...)
	}
	if sc.Meta == nil && len(parent.Meta) > 0 {
		sc.Meta = make(map[string]string, len(parent.Meta))
		for k, v := range parent.Meta {
			sc.Meta[k] = v
		}
	}
	if sc.Port == 0 && sc.SocketPath == "" {
		port, err := a.sidecarPort(sc.ID, reserved)
		if err != nil {
			return nil, err
		}
		sc.Port = port
	}
	if sc.Proxy == nil {
		sc.Proxy = &structs.ConnectProxyConfig{}
	}
	px := sc.Proxy
	if px.DestinationServiceName == "" {
		px.DestinationServiceName = parent.Service
	}
	if px.DestinationServiceID == "" {
		px.DestinationServiceID = parent.ID
	}
	if px.LocalServiceAddress == "" && px.LocalServiceSocketPath == "" {
		if parent.SocketPath != "" && parent.Port == 0 {
			px.LocalServiceSocketPath = parent.SocketPath
		} else {
			px.LocalServiceAddress = "127.0.0.1"
		}
	}
	if px.LocalServicePort == 0 && px.LocalServiceSocketPath == "" {
		px.LocalServicePort = parent.Port
	}
	if len(sc.AllChecks()) == 0 {
		if sc.Port != 0 {
			addr := sc.Address
			if addr == "" {
				addr = "127.0.0.1"
			}
			sc.Checks = append(sc.Checks, &structs.CheckType{
				Name:     sidecarListeningCheck,
				TCP:      net.JoinHostPort(addr, strconv.Itoa(sc.Port)),
				Interval: structs.Duration(sidecarCheckInterval),
			})
		}
		sc.Checks = append(sc.Checks, &structs.CheckType{
			Name:         sidecarAliasingCheck + parent.ID,
			AliasService: parent.ID,
		})
	}
	return sc, nil
}

// sidecarPort returns the port of the sidecar with ID id: the one it has
// if already registered, else the lowest in the agent's sidecar range that
// no other local service uses and reserved does not hold.
func (a *Agent) sidecarPort(id string, reserved map[int]bool) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ls := a.services[id]; ls != nil && ls.svc.Kind == structs.ServiceKindConnectProxy && ls.svc.Port != 0 {
		return ls.svc.Port, nil
	}
	lo, hi := a.cfg.SidecarMinPort, a.cfg.SidecarMaxPort
	if lo == 0 && hi == 0 {
		return 0, badRequest("Connect.SidecarService.Port must be set: automatic sidecar port assignment is off (ports.sidecar_min_port and sidecar_max_port are 0)")
	}
	taken := make(map[int]bool, len(a.services)+len(reserved))
	// Any local service on a port of the range holds it, not only
	// proxies: a sidecar must never be given a port another service uses.
	for sid, ls := range a.services {
		if sid != id {
			taken[ls.svc.Port] = true
		}
	}
	for p := range reserved {
		taken[p] = true
	}
	for p := range a.heldSidecarPorts {
		taken[p] = true
	}
	for p := lo; p <= hi; p++ {
		if !taken[p] {
			return p, nil
		}
	}
	return 0, badRequest("Connect.SidecarService.Port must be set: no port left in the sidecar range %d-%d (ports.sidecar_min_port, ports.sidecar_max_port)", lo, hi)
}

// sidecarsOfLocked returns the IDs of the local sidecars registered for
// parent. a.mu must be held.
func (a *Agent) sidecarsOfLocked(parent string) []string {
	var out []string
	for id, ls := range a.services {
		if ls.sidecarFor == parent {
			out = append(out, id)
		}
	}
	return out
}
