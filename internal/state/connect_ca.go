package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// The Connect CA: its configuration (one *structs.CAConfiguration row)
// and its roots (*structs.CARoot rows by ID, exactly one Active once the
// CA is set up). Both are written together by CASet, so that a reader
// never sees a configuration without the roots it made.

const (
	tableCAConfig = "connect-ca-config"
	tableCARoots  = "connect-ca-roots"
)

func caConfigTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableCAConfig,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: singletonIndex{}},
		},
	}
}

func caRootsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableCARoots,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID", Lowercase: true}},
		},
	}
}

// CAConfig returns the CA configuration, or nil before the CA is set up,
// and the index it was last written at.
func (r *ReadTxn) CAConfig(ws memdb.WatchSet) (uint64, *structs.CAConfiguration, error) {
	idx := maxIndex(r.tx, ws, tableCAConfig)
	ch, raw, err := r.tx.FirstWatch(tableCAConfig, "id")
	if err != nil {
		return 0, nil, err
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*structs.CAConfiguration), nil
}

// CARoots returns the CA roots, in the order they were created, and the
// index of their last change. The rows are shared: callers must not
// change them.
func (r *ReadTxn) CARoots(ws memdb.WatchSet) (uint64, []*structs.CARoot, error) {
	idx := maxIndex(r.tx, ws, tableCARoots)
	it, err := r.tx.Get(tableCARoots, "id")
	if err != nil {
		return 0, nil, err
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*structs.CARoot
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.CARoot))
	}
	sortRoots(out)
	return idx, out, nil
}

// sortRoots orders roots by CreateIndex, then ID.
func sortRoots(roots []*structs.CARoot) {
	for i := 1; i < len(roots); i++ {
		for j := i; j > 0 && rootLess(roots[j], roots[j-1]); j-- {
			roots[j], roots[j-1] = roots[j-1], roots[j]
		}
	}
}

func rootLess(a, b *structs.CARoot) bool {
	if a.CreateIndex != b.CreateIndex {
		return a.CreateIndex < b.CreateIndex
	}
	return a.ID < b.ID
}

// CASet writes the CA at idx, when casIndex is the stored
// configuration's ModifyIndex (0: none stored yet); it reports whether it
// did. A non-nil cfg replaces the configuration (CreateIndex kept); a
// non-nil roots replaces every root (CreateIndex kept for the IDs that
// stay), and must hold exactly one active root. A row that does not
// change keeps its ModifyIndex, so that readers of it do not wake.
func (s *Store) CASet(idx uint64, cfg *structs.CAConfiguration, roots []*structs.CARoot, casIndex uint64) (bool, error) {
	if roots != nil {
		active := 0
		for _, r := range roots {
			if r.Active {
				active++
			}
		}
		if active != 1 {
			return false, fmt.Errorf("state: CA roots: %d active roots, want exactly 1", active)
		}
	}
	tx := s.writeTxn()
	defer tx.Abort()
	raw, err := tx.First(tableCAConfig, "id")
	if err != nil {
		return false, err
	}
	var cur *structs.CAConfiguration
	if raw != nil {
		cur = raw.(*structs.CAConfiguration)
	}
	var curIdx uint64
	if cur != nil {
		curIdx = cur.ModifyIndex
	}
	if curIdx != casIndex {
		return false, nil
	}
	if cfg != nil {
		row := *cfg
		row.CreateIndex, row.ModifyIndex = idx, idx
		if cur != nil {
			row.CreateIndex = cur.CreateIndex
		}
		if err := tx.Insert(tableCAConfig, &row); err != nil {
			return false, fmt.Errorf("state: CA config: %w", err)
		}
		if err := bumpIndex(tx, idx, tableCAConfig); err != nil {
			return false, err
		}
	}
	if roots != nil {
		if err := s.caSetRootsTxn(tx, idx, roots); err != nil {
			return false, err
		}
	}
	tx.Commit()
	return true, nil
}

func (s *Store) caSetRootsTxn(tx *memdb.Txn, idx uint64, roots []*structs.CARoot) error {
	old := map[string]*structs.CARoot{}
	it, err := tx.Get(tableCARoots, "id")
	if err != nil {
		return err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*structs.CARoot)
		old[r.ID] = r
	}
	keep := map[string]bool{}
	changed := false
	for _, r := range roots {
		row := *r
		row.CreateIndex, row.ModifyIndex = idx, idx
		if prev, ok := old[r.ID]; ok {
			row.CreateIndex, row.ModifyIndex = prev.CreateIndex, prev.ModifyIndex
			if !sameRoot(prev, &row) {
				row.ModifyIndex = idx
				changed = true
			} else {
				keep[r.ID] = true
				continue
			}
		} else {
			changed = true
		}
		keep[r.ID] = true
		if err := tx.Insert(tableCARoots, &row); err != nil {
			return fmt.Errorf("state: CA root %s: %w", r.ID, err)
		}
	}
	for id, r := range old {
		if !keep[id] {
			if err := tx.Delete(tableCARoots, r); err != nil {
				return err
			}
			changed = true
		}
	}
	if changed {
		return bumpIndex(tx, idx, tableCARoots)
	}
	return nil
}

// sameRoot reports whether two rows of one root are equal but for their
// indexes.
func sameRoot(a, b *structs.CARoot) bool {
	if len(a.IntermediateCerts) != len(b.IntermediateCerts) {
		return false
	}
	for i := range a.IntermediateCerts {
		if a.IntermediateCerts[i] != b.IntermediateCerts[i] {
			return false
		}
	}
	return a.Name == b.Name && a.SerialNumber == b.SerialNumber && a.SigningKeyID == b.SigningKeyID &&
		a.ExternalTrustDomain == b.ExternalTrustDomain && a.NotBefore.Equal(b.NotBefore) &&
		a.NotAfter.Equal(b.NotAfter) && a.RootCert == b.RootCert && a.Active == b.Active &&
		a.PrivateKeyType == b.PrivateKeyType && a.PrivateKeyBits == b.PrivateKeyBits &&
		a.RotatedOutAt.Equal(b.RotatedOutAt) && a.SigningKey == b.SigningKey && a.PruneAfter.Equal(b.PruneAfter)
}
