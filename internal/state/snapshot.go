package state

import (
	"fmt"
	"io"
	"reflect"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// NewMsgpackHandle returns the codec settings of raft payloads and
// snapshots, the one encoding the FSM and the store share. Maps decode as
// map[string]any so opaque configuration round-trips as JSON would. A
// handle is safe for concurrent use once built; each caller gets its own
// so that none can change another's settings.
func NewMsgpackHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.RawToString = true
	h.WriteExt = true
	h.MapType = reflect.TypeOf(map[string]any{})
	return h
}

// snapshot record types; their numbers are part of the on-disk format.
const (
	recNode        byte = 1
	recService     byte = 2
	recCheck       byte = 3
	recKV          byte = 4
	recTombstone   byte = 5
	recSession     byte = 6
	recIndex       byte = 7
	recCoord       byte = 8
	recAutopilot   byte = 9
	recCARoot      byte = 10
	recCAConfig    byte = 11
	recConfigEntry byte = 12
)

// Snapshot is a point-in-time copy of the store, cheap to take.
type Snapshot struct {
	db *memdb.MemDB
}

// Snapshot captures the store as it is now.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Snapshot{db: s.db.Snapshot()}
}

// LatestIndex is the highest index of any table in the snapshot.
func (snap *Snapshot) LatestIndex() uint64 {
	tx := snap.db.Txn(false)
	defer tx.Abort()
	return maxIndex(tx, nil, latestTables...)
}

// Persist writes the snapshot to w.
func (snap *Snapshot) Persist(w io.Writer) error {
	enc := codec.NewEncoder(w, NewMsgpackHandle())
	tx := snap.db.Txn(false)
	defer tx.Abort()
	tables := []struct {
		name string
		rec  byte
	}{
		{tableNodes, recNode}, {tableServices, recService}, {tableChecks, recCheck},
		{tableKVs, recKV}, {tableTombstones, recTombstone}, {tableSessions, recSession},
		{tableCoordinates, recCoord}, {tableAutopilot, recAutopilot}, {tableConfigEntries, recConfigEntry},
		{tableCARoots, recCARoot}, {tableCAConfig, recCAConfig}, {tableIndex, recIndex},
	}
	for _, t := range tables {
		it, err := tx.Get(t.name, "id")
		if err != nil {
			return err
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if err := enc.Encode(t.rec); err != nil {
				return err
			}
			if err := enc.Encode(raw); err != nil {
				return fmt.Errorf("state: snapshot %s: %w", t.name, err)
			}
		}
	}
	return nil
}

// Restore replaces the whole store with the snapshot read from r and wakes
// every blocked reader. A snapshot that cannot be read changes nothing.
func (s *Store) Restore(r io.Reader) error {
	db := newDB()
	tx := db.Txn(true)
	err := readRecords(r, func(table string, obj any) error {
		if err := tx.Insert(table, obj); err != nil {
			return fmt.Errorf("state: restore %s: %w", table, err)
		}
		return nil
	})
	if err != nil {
		tx.Abort()
		return err
	}
	tx.Commit()
	s.mu.Lock()
	old := s.abandonCh
	s.db = db
	s.abandonCh = make(chan struct{})
	s.mu.Unlock()
	close(old)
	return nil
}

// Inspect counts the records of each table in a snapshot, without
// restoring it: `trellis snapshot inspect` prints them.
func Inspect(r io.Reader) (map[string]int, error) {
	counts := make(map[string]int)
	err := readRecords(r, func(table string, _ any) error {
		counts[table]++
		return nil
	})
	return counts, err
}

// readRecords decodes a snapshot stream, handing each record to fn with
// the table it belongs to.
func readRecords(r io.Reader, fn func(table string, obj any) error) error {
	dec := codec.NewDecoder(r, NewMsgpackHandle())
	for {
		var rec byte
		if err := dec.Decode(&rec); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("state: snapshot: %w", err)
		}
		var obj any
		var table string
		switch rec {
		case recNode:
			obj, table = &structs.Node{}, tableNodes
		case recService:
			obj, table = &serviceRow{}, tableServices
		case recCheck:
			obj, table = &structs.HealthCheck{}, tableChecks
		case recKV:
			obj, table = &structs.DirEntry{}, tableKVs
		case recTombstone:
			obj, table = &tombstone{}, tableTombstones
		case recSession:
			obj, table = &structs.Session{}, tableSessions
		case recIndex:
			obj, table = &indexEntry{}, tableIndex
		case recCoord:
			obj, table = &structs.CoordinateEntry{}, tableCoordinates
		case recAutopilot:
			obj, table = &structs.AutopilotConfig{}, tableAutopilot
		case recConfigEntry:
			obj, table = &configEntryRow{}, tableConfigEntries
		case recCARoot:
			obj, table = &structs.CARoot{}, tableCARoots
		case recCAConfig:
			obj, table = &structs.CAConfiguration{}, tableCAConfig
		default:
			return fmt.Errorf("state: snapshot: unknown record type %d", rec)
		}
		if err := dec.Decode(obj); err != nil {
			return fmt.Errorf("state: snapshot %s: %w", table, err)
		}
		if r, ok := obj.(interface{ afterRestore() error }); ok {
			if err := r.afterRestore(); err != nil {
				return fmt.Errorf("state: snapshot %s: %w", table, err)
			}
		}
		if err := fn(table, obj); err != nil {
			return err
		}
	}
}
