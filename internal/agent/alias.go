package agent

import "github.com/trellis-mesh/trellis/internal/structs"

// localView is an immutable copy of what alias checks read of the local
// state. Alias runners read it without a.mu: a runner is stopped while
// a.mu is held, so it must never wait for that lock.
type localView struct {
	services map[string]bool
	checks   map[string]map[string]string // service ID → check ID → status
	changed  chan struct{}                // closed when a newer view replaces this one
}

func newLocalView() *localView {
	return &localView{services: map[string]bool{}, checks: map[string]map[string]string{}, changed: make(chan struct{})}
}

// localChangedLocked publishes a new view of the local services and checks
// and wakes the alias checks. a.mu must be held.
func (a *Agent) localChangedLocked() {
	v := newLocalView()
	for id := range a.services {
		v.services[id] = true
	}
	for id, lc := range a.checks {
		sid := lc.check.ServiceID
		if sid == "" {
			continue
		}
		if v.checks[sid] == nil {
			v.checks[sid] = map[string]string{}
		}
		v.checks[sid][id] = lc.check.Status
	}
	if old := a.view.Swap(v); old != nil {
		close(old.changed)
	}
}

// aliasSource is the checks.AliasSource of the agent's alias checks.
type aliasSource struct{ a *Agent }

func (s aliasSource) AliasState(serviceID, self string) ([]string, bool, <-chan struct{}) {
	v := s.a.view.Load()
	var out []string
	for id, st := range v.checks[serviceID] {
		if id != self {
			out = append(out, st)
		}
	}
	return out, v.services[serviceID], v.changed
}

// validateAlias checks an alias check's target: a service, on this node.
func (a *Agent) validateAlias(id string, def *structs.CheckType) error {
	if def.AliasNode != "" && def.AliasNode != a.nodeName {
		return badRequest("Check %q: AliasNode %q: alias checks of another node are not supported", id, def.AliasNode)
	}
	if def.AliasService == "" {
		return badRequest("Check %q: AliasService must be set: alias checks of a whole node are not supported", id)
	}
	return nil
}
