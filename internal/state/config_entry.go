package state

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Config entries: one row per (kind, name), with the entry both decoded
// (for readers) and as its JSON (for snapshots, so that a snapshot never
// depends on how a kind's Go type encodes in msgpack). Names are
// case-sensitive, kinds are stored lowercase.

// tableConfigEntries holds config entries of every kind.
const tableConfigEntries = "config-entries"

// configEntryRow is a config entry in the store. Rows are never changed
// in place.
type configEntryRow struct {
	Kind string
	Name string
	JSON []byte

	entry configentry.Entry // decoded JSON; set on insert and restore
}

// afterRestore decodes the entry of a row read from a snapshot.
func (r *configEntryRow) afterRestore() error {
	e, err := configentry.Unmarshal(r.Kind, r.JSON)
	if err != nil {
		return err
	}
	r.entry = e
	return nil
}

func configEntriesTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableConfigEntries,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Kind", Lowercase: true},
				&memdb.StringFieldIndex{Field: "Name"},
			}}},
			"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind", Lowercase: true}},
		},
	}
}

// Config entry operations of ConfigEntryApply.
const (
	ConfigEntryUpsert    = "upsert"
	ConfigEntryUpsertCAS = "upsert-cas"
	ConfigEntryDelete    = "delete"
	ConfigEntryDeleteCAS = "delete-cas"
)

// ConfigEntry returns the entry kind/name, or nil, and the index of the
// config entries table. The entry is shared: callers must not modify it.
func (r *ReadTxn) ConfigEntry(ws memdb.WatchSet, kind, name string) (uint64, configentry.Entry, error) {
	idx := maxIndex(r.tx, ws, tableConfigEntries)
	ch, raw, err := r.tx.FirstWatch(tableConfigEntries, "id", kind, name)
	if err != nil {
		return 0, nil, fmt.Errorf("state: config entry %s/%s: %w", kind, name, err)
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*configEntryRow).entry, nil
}

// ConfigEntries lists the entries of kind ("" for every kind), sorted by
// kind and name, and the index of the table. The entries are shared.
func (r *ReadTxn) ConfigEntries(ws memdb.WatchSet, kind string) (uint64, []configentry.Entry, error) {
	idx := maxIndex(r.tx, ws, tableConfigEntries)
	var it memdb.ResultIterator
	var err error
	if kind == "" {
		it, err = r.tx.Get(tableConfigEntries, "id")
	} else {
		it, err = r.tx.Get(tableConfigEntries, "kind", kind)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("state: config entries %s: %w", kind, err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []configentry.Entry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*configEntryRow).entry)
	}
	return idx, out, nil
}

// ServiceIntentions lists every service-intentions entry. The entries are
// shared.
func (r *ReadTxn) ServiceIntentions(ws memdb.WatchSet) (uint64, []*configentry.ServiceIntentionsConfigEntry, error) {
	idx, entries, err := r.ConfigEntries(ws, configentry.ServiceIntentions)
	if err != nil {
		return 0, nil, err
	}
	out := make([]*configentry.ServiceIntentionsConfigEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.(*configentry.ServiceIntentionsConfigEntry))
	}
	return idx, out, nil
}

// ConfigEntryApply applies one config entry write at idx and reports
// whether it happened. Upserts store e (kind and name from e), keeping
// CreateIndex of the entry replaced; deletes remove kind/name (deleting a
// missing entry succeeds). The -cas forms happen only when casIndex is the
// stored entry's ModifyIndex, 0 standing for "no entry" (so an upsert-cas
// with 0 creates only).
//
// Checks across entries run in the same transaction, so that they hold
// whatever the order of writes: an error is a structs.BadRequestError and
// nothing changed.
func (s *Store) ConfigEntryApply(idx uint64, op, kind, name string, e configentry.Entry, casIndex uint64) (bool, error) {
	tx := s.writeTxn()
	defer tx.Abort()
	if e != nil {
		kind, name = e.GetKind(), e.GetName()
	}
	raw, err := tx.First(tableConfigEntries, "id", kind, name)
	if err != nil {
		return false, fmt.Errorf("state: config entry %s/%s: %w", kind, name, err)
	}
	var cur *configEntryRow
	if raw != nil {
		cur = raw.(*configEntryRow)
	}
	if op == ConfigEntryUpsertCAS || op == ConfigEntryDeleteCAS {
		var have uint64
		if cur != nil {
			_, have = cur.entry.GetRaftIndex()
		}
		if have != casIndex || (op == ConfigEntryDeleteCAS && cur == nil) {
			// A CAS delete of a missing entry deletes nothing: false,
			// as Consul's (a 0 index never deletes).
			return false, nil
		}
	}
	switch op {
	case ConfigEntryUpsert, ConfigEntryUpsertCAS:
		if e == nil {
			return false, fmt.Errorf("state: config entry %s: no entry", op)
		}
		create := idx
		if cur != nil {
			create, _ = cur.entry.GetRaftIndex()
		}
		e.SetRaftIndex(create, idx)
		if err := checkConfigGraph(tx, e, "", ""); err != nil {
			return false, err
		}
		data, err := configentry.Marshal(e)
		if err != nil {
			return false, fmt.Errorf("state: config entry %s/%s: %w", kind, name, err)
		}
		if err := tx.Insert(tableConfigEntries, &configEntryRow{Kind: kind, Name: name, JSON: data, entry: e}); err != nil {
			return false, fmt.Errorf("state: config entry %s/%s: %w", kind, name, err)
		}
	case ConfigEntryDelete, ConfigEntryDeleteCAS:
		if cur == nil {
			// Nothing to delete: a successful write, as Consul's, that
			// changes nothing, so no index rises and no watcher wakes.
			return true, nil
		}
		if err := checkConfigGraph(tx, nil, kind, name); err != nil {
			return false, err
		}
		if err := tx.Delete(tableConfigEntries, cur); err != nil {
			return false, fmt.Errorf("state: config entry %s/%s: %w", kind, name, err)
		}
	default:
		return false, fmt.Errorf("state: unknown config entry op %q", op)
	}
	if err := bumpIndex(tx, idx, tableConfigEntries); err != nil {
		return false, err
	}
	tx.Commit()
	return true, nil
}

// checkConfigGraph checks that the write leaves every service that needs
// an L7 protocol on an HTTP-like one: e is the entry being written, or
// nil when delKind/delName is being deleted. A service needs one when it
// has L7 intentions, a service-router, or a service-resolver with hash
// policies (see l7Need). Only writes of those kinds, service-defaults
// and proxy-defaults can break the rule; deletes of the first three
// cannot.
func checkConfigGraph(tx *memdb.Txn, e configentry.Entry, delKind, delName string) error {
	kind, name := delKind, delName
	if e != nil {
		kind, name = e.GetKind(), e.GetName()
	}
	// The view after the write: pending overrides what is stored.
	lookup := func(k, n string) (configentry.Entry, error) {
		if k == kind && n == name {
			return e, nil // nil when deleting
		}
		raw, err := tx.First(tableConfigEntries, "id", k, n)
		if err != nil || raw == nil {
			return nil, err
		}
		return raw.(*configEntryRow).entry, nil
	}
	protocolOf := func(svc string) (string, error) {
		sd, err := lookup(configentry.ServiceDefaults, svc)
		if err != nil {
			return "", err
		}
		if sd != nil && sd.(*configentry.ServiceConfigEntry).Protocol != "" {
			return sd.(*configentry.ServiceConfigEntry).Protocol, nil
		}
		pd, err := lookup(configentry.ProxyDefaults, configentry.ProxyConfigGlobal)
		if err != nil {
			return "", err
		}
		if pd != nil {
			if p, ok := pd.(*configentry.ProxyConfigEntry).Config["protocol"].(string); ok && p != "" {
				return p, nil
			}
		}
		return "tcp", nil
	}
	// check fails when svc needs L7 and its protocol is not.
	check := func(svc string) error {
		need, err := l7Need(lookup, svc)
		if err != nil || need == "" {
			return err
		}
		p, err := protocolOf(svc)
		if err != nil {
			return err
		}
		if !configentry.IsHTTPLike(p) {
			return structs.BadRequestError{Reason: fmt.Sprintf(
				"service %q has protocol %q, which %s: the protocol must be http, http2 or grpc",
				svc, p, need)}
		}
		return nil
	}
	switch kind {
	case configentry.ServiceIntentions, configentry.ServiceRouter, configentry.ServiceResolver:
		if e == nil {
			return nil
		}
		return check(name)
	case configentry.ServiceDefaults:
		return check(name)
	case configentry.ProxyDefaults:
		// Every service that could need L7, in a fixed order so that the
		// error is always about the same one.
		var svcs []string
		seen := map[string]bool{}
		for _, k := range []string{configentry.ServiceIntentions, configentry.ServiceRouter, configentry.ServiceResolver} {
			it, err := tx.Get(tableConfigEntries, "kind", k)
			if err != nil {
				return err
			}
			for raw := it.Next(); raw != nil; raw = it.Next() {
				if n := raw.(*configEntryRow).Name; !seen[n] {
					seen[n] = true
					svcs = append(svcs, n)
				}
			}
		}
		sort.Strings(svcs)
		for _, svc := range svcs {
			if err := check(svc); err != nil {
				return err
			}
		}
	}
	return nil
}

// l7Need says why svc needs an HTTP-like protocol, "" when nothing
// does, looking entries up with lookup (the view after the write).
func l7Need(lookup func(kind, name string) (configentry.Entry, error), svc string) (string, error) {
	ixn, err := lookup(configentry.ServiceIntentions, svc)
	if err != nil {
		return "", err
	}
	if ixn != nil {
		for i, s := range ixn.(*configentry.ServiceIntentionsConfigEntry).Sources {
			if len(s.Permissions) > 0 {
				return fmt.Sprintf("does not match defined L7 intentions (service-intentions %q Sources[%d] has Permissions)", svc, i), nil
			}
		}
	}
	router, err := lookup(configentry.ServiceRouter, svc)
	if err != nil {
		return "", err
	}
	if router != nil {
		return fmt.Sprintf("does not permit advanced routing (service-router %q)", svc), nil
	}
	resolver, err := lookup(configentry.ServiceResolver, svc)
	if err != nil {
		return "", err
	}
	if resolver != nil {
		if field := resolver.(*configentry.ServiceResolverConfigEntry).RequiresL7(); field != "" {
			return fmt.Sprintf("does not permit hashing requests (service-resolver %q has %s)", svc, field), nil
		}
	}
	return "", nil
}
