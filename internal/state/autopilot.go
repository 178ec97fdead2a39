package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// The autopilot configuration: at most one *structs.AutopilotConfig row,
// under the index row "autopilot-config". There is no row until an
// operator sets the configuration; until then the leader applies its agent
// config's autopilot block, which never enters the store.

// tableAutopilot holds the autopilot configuration.
const tableAutopilot = "autopilot-config"

func autopilotTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableAutopilot,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: singletonIndex{}},
		},
	}
}

// singletonIndex gives every object the same key, so that a table holds
// one row at most.
type singletonIndex struct{}

var singletonKey = []byte("singleton\x00")

func (singletonIndex) FromObject(any) (bool, []byte, error) { return true, singletonKey, nil }

func (singletonIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("state: singleton index takes no arguments, got %d", len(args))
	}
	return singletonKey, nil
}

// AutopilotConfig returns the stored autopilot configuration, or nil when
// none was set, and the index it was last written at.
func (r *ReadTxn) AutopilotConfig(ws memdb.WatchSet) (uint64, *structs.AutopilotConfig, error) {
	idx := maxIndex(r.tx, ws, tableAutopilot)
	ch, raw, err := r.tx.FirstWatch(tableAutopilot, "id")
	if err != nil {
		return 0, nil, err
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return idx, nil, nil
	}
	c := *raw.(*structs.AutopilotConfig) // rows are never changed in place
	return idx, &c, nil
}

// AutopilotSetConfig stores cfg at idx. With cas, the write happens only
// when casIndex is the stored configuration's ModifyIndex, 0 standing for
// "none stored yet"; the result says whether it happened. CreateIndex is
// kept from the row it replaces.
func (s *Store) AutopilotSetConfig(idx uint64, cfg *structs.AutopilotConfig, cas bool, casIndex uint64) (bool, error) {
	tx := s.writeTxn()
	defer tx.Abort()
	raw, err := tx.First(tableAutopilot, "id")
	if err != nil {
		return false, err
	}
	row := *cfg
	row.CreateIndex, row.ModifyIndex = idx, idx
	var cur uint64
	if raw != nil {
		old := raw.(*structs.AutopilotConfig)
		cur, row.CreateIndex = old.ModifyIndex, old.CreateIndex
	}
	if cas && cur != casIndex {
		return false, nil
	}
	if err := tx.Insert(tableAutopilot, &row); err != nil {
		return false, fmt.Errorf("state: autopilot config: %w", err)
	}
	if err := bumpIndex(tx, idx, tableAutopilot); err != nil {
		return false, err
	}
	tx.Commit()
	return true, nil
}
