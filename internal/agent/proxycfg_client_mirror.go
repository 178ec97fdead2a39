package agent

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// mirror is a client agent's stand-in for the servers' state store, for
// the proxy snapshot manager (internal/proxycfg): a state.Store of its
// own that holds only what the local sidecars' snapshots are built from,
// copied from the servers (proxycfg_client.go reads them). That is the
// config entries of the kinds proxycfg reads, all of them, and the
// connect-capable instances of each upstream of a local sidecar, with
// their nodes and checks.
//
// Every write goes through the store's own write APIs, so the memdb
// watches the manager builds on fire as they do on a server. The writes
// are numbered by a local counter, not by the servers' raft indexes: the
// mirror's entries and instances are read for their content only, and a
// counter of its own keeps the mirror's indexes rising whatever server
// (and restore) its copies come from. Unchanged copies are not written,
// so that they wake no one.
type mirror struct {
	store *state.Store

	mu      sync.Mutex // held across each change, so that changes apply whole and in order
	index   uint64     // guarded by mu: the index of the last write
	applied map[entryKey][]byte
	// applied is guarded by mu: each entry in the store, by kind and
	// name, as the servers had it (encoded, raft indexes zeroed).
}

// entryKey names a config entry.
type entryKey struct{ kind, name string }

func newMirror() *mirror {
	return &mirror{store: state.New(), applied: make(map[entryKey][]byte)}
}

func (m *mirror) nextIndexLocked() uint64 {
	m.index++
	return m.index
}

// mirroredKinds are the config entry kinds proxycfg reads (build.go).
var mirroredKinds = []string{
	configentry.ProxyDefaults, configentry.ServiceDefaults, configentry.ServiceResolver,
	configentry.ServiceRouter, configentry.ServiceIntentions, configentry.MeshConfig,
}

// entryOp is one config entry write of the mirror: an upsert of e, or
// with e nil the delete of key.
type entryOp struct {
	key  entryKey
	e    configentry.Entry
	data []byte // e encoded, raft indexes zeroed
}

// rank orders a pass of writes (see setEntries): the deletes of entries
// that make a service need an L7 protocol, then the protocols
// (proxy-defaults, service-defaults), then the entries that need one.
func (o entryOp) rank() int {
	switch o.key.kind {
	case configentry.ServiceIntentions, configentry.ServiceRouter, configentry.ServiceResolver:
		if o.e == nil {
			return 0
		}
		return 2
	}
	return 1
}

// setEntries makes the mirror's config entries those of want: the
// servers' entries of mirroredKinds, all read at one index.
//
// The store checks each write against the others (a service with a
// router, L7 intentions or hash policies must have an HTTP-like
// protocol), so the writes from one set to the next are applied in
// passes, in the order of rank, each pass trying again what the last
// refused, until all are applied or a pass applies none. Between two
// sets the servers held (each valid) a write is refused only for want
// of another one, never of itself, so the passes apply them all. A set
// the servers could not hold leaves the writes the store refuses
// unapplied, named in the error; the others are applied.
func (m *mirror) setEntries(want []configentry.Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ops []entryOp
	seen := make(map[entryKey]bool, len(want))
	for _, e := range want {
		e.SetRaftIndex(0, 0)
		data, err := configentry.Marshal(e)
		if err != nil {
			return fmt.Errorf("agent: mirror: config entry %s/%s: %w", e.GetKind(), e.GetName(), err)
		}
		k := entryKey{e.GetKind(), e.GetName()}
		seen[k] = true
		if !bytes.Equal(m.applied[k], data) {
			ops = append(ops, entryOp{key: k, e: e, data: data})
		}
	}
	for k := range m.applied {
		if !seen[k] {
			ops = append(ops, entryOp{key: k})
		}
	}
	slices.SortFunc(ops, func(a, b entryOp) int {
		return cmp.Or(cmp.Compare(a.rank(), b.rank()), cmp.Compare(a.key.kind, b.key.kind), cmp.Compare(a.key.name, b.key.name))
	})
	for len(ops) > 0 {
		var failed []entryOp
		var errs error
		for _, o := range ops {
			if err := m.applyLocked(o); err != nil {
				failed = append(failed, o)
				errs = errors.Join(errs, err)
			}
		}
		if len(failed) == len(ops) {
			return errs
		}
		ops = failed
	}
	return nil
}

func (m *mirror) applyLocked(o entryOp) error {
	op := state.ConfigEntryUpsert
	if o.e == nil {
		op = state.ConfigEntryDelete
	}
	if _, err := m.store.ConfigEntryApply(m.nextIndexLocked(), op, o.key.kind, o.key.name, o.e, 0); err != nil {
		return fmt.Errorf("agent: mirror: config entry %s/%s: %w", o.key.kind, o.key.name, err)
	}
	if o.e == nil {
		delete(m.applied, o.key)
	} else {
		m.applied[o.key] = o.data
	}
	return nil
}

// instanceKey names a service instance in the catalog.
type instanceKey struct{ node, id string }

func keyOf(csn *structs.CheckServiceNode) instanceKey {
	return instanceKey{strings.ToLower(csn.Node.Node), csn.Service.ID}
}

// setInstances makes the mirror's connect-capable instances of service
// name those of csns (the servers' /v1/health/connect/<name>): it
// registers those that are new or changed, with their nodes and checks,
// removes checks the servers no longer report, and deregisters the
// instances that are gone, and their nodes once they hold no instance.
// With csns nil it forgets name's instances.
//
// Only instances the mirror holds for name are removed: an instance
// re-registered for another service meanwhile (a proxy whose destination
// changed) belongs to that service's copy.
func (m *mirror) setInstances(name string, csns []*structs.CheckServiceNode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rt := m.store.Read()
	_, have, err := rt.CheckConnectServiceNodes(nil, name)
	rt.Abort()
	if err != nil {
		return fmt.Errorf("agent: mirror: instances of %q: %w", name, err)
	}
	var errs error
	wanted := make(map[instanceKey]bool, len(csns))
	for _, csn := range csns {
		if csn == nil || csn.Node == nil || csn.Service == nil {
			continue
		}
		wanted[keyOf(csn)] = true
		if err := m.registerLocked(csn); err != nil {
			errs = errors.Join(errs, fmt.Errorf("agent: mirror: instance %q of %q on %q: %w", csn.Service.ID, name, csn.Node.Node, err))
		}
	}
	for _, csn := range have {
		if wanted[keyOf(csn)] {
			continue
		}
		if err := m.deregisterLocked(csn.Node.Node, csn.Service.ID); err != nil {
			errs = errors.Join(errs, fmt.Errorf("agent: mirror: instance %q of %q on %q: %w", csn.Service.ID, name, csn.Node.Node, err))
		}
	}
	return errs
}

// registerLocked writes one instance with its node and checks, and
// removes the checks of the node and of the instance the servers no
// longer report. The store leaves what is unchanged as it is.
func (m *mirror) registerLocked(csn *structs.CheckServiceNode) error {
	n := csn.Node
	err := m.store.EnsureRegistration(m.nextIndexLocked(), &structs.RegisterRequest{
		ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter,
		TaggedAddresses: n.TaggedAddresses, NodeMeta: n.Meta,
		Service: csn.Service, Checks: csn.Checks,
	})
	if err != nil {
		return err
	}
	keep := make(map[string]bool, len(csn.Checks))
	for _, c := range csn.Checks {
		keep[c.CheckID] = true
	}
	rt := m.store.Read()
	_, checks, err := rt.NodeChecks(nil, n.Node)
	rt.Abort()
	if err != nil {
		return err
	}
	for _, c := range checks {
		if (c.ServiceID == "" || c.ServiceID == csn.Service.ID) && !keep[c.CheckID] {
			if err := m.store.DeleteCheck(m.nextIndexLocked(), c.Node, c.CheckID); err != nil {
				return err
			}
		}
	}
	return nil
}

// deregisterLocked removes an instance, and its node when no other
// instance is left on it.
func (m *mirror) deregisterLocked(node, id string) error {
	if err := m.store.DeleteService(m.nextIndexLocked(), node, id); err != nil {
		return err
	}
	rt := m.store.Read()
	_, _, svcs, err := rt.NodeServices(nil, node)
	rt.Abort()
	if err != nil || len(svcs) > 0 {
		return err
	}
	return m.store.DeleteNode(m.nextIndexLocked(), node)
}
