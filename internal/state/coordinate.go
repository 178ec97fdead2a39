package state

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Network coordinates: one *structs.CoordinateEntry per node and segment,
// under the index row "coordinates". A coordinate lives only as long as its
// node: updates for nodes not in the catalog are skipped and deleting a node
// deletes its coordinates.

func coordinatesTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableCoordinates,
		Indexes: map[string]*memdb.IndexSchema{
			"id":   {Name: "id", Unique: true, Indexer: nodeSegmentIndex{}},
			"node": {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
		},
	}
}

// nodeSegmentIndex indexes coordinates by (node, segment), both lowercased.
// memdb's CompoundIndex of StringFieldIndexes cannot serve here: it treats
// the empty default segment as a missing value and the stored key would
// then differ from the looked-up one.
type nodeSegmentIndex struct{}

func nodeSegmentKey(node, segment string) []byte {
	return []byte(strings.ToLower(node) + "\x00" + strings.ToLower(segment) + "\x00")
}

func (nodeSegmentIndex) FromObject(raw any) (bool, []byte, error) {
	e, ok := raw.(*structs.CoordinateEntry)
	if !ok {
		return false, nil, fmt.Errorf("state: coordinate index: unexpected %T", raw)
	}
	if e.Node == "" {
		return false, nil, nil
	}
	return true, nodeSegmentKey(e.Node, e.Segment), nil
}

func (nodeSegmentIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("state: coordinate index: want node and segment, got %d args", len(args))
	}
	node, ok1 := args[0].(string)
	segment, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("state: coordinate index: arguments must be strings: %#v", args)
	}
	return nodeSegmentKey(node, segment), nil
}

// CoordinateBatchUpdate stores the coordinates of a batch. An update for a
// node the catalog does not hold, or without a coordinate, is skipped, not
// an error: a node may leave between sending its coordinate and the batch
// being applied. The "coordinates" index moves only when a stored
// coordinate changed.
func (s *Store) CoordinateBatchUpdate(idx uint64, updates []*structs.CoordinateEntry) error {
	tx := s.writeTxn()
	defer tx.Abort()
	changed := false
	for _, u := range updates {
		if u == nil || u.Coord == nil {
			continue
		}
		nraw, err := tx.First(tableNodes, "id", u.Node)
		if err != nil {
			return err
		}
		if nraw == nil {
			continue
		}
		row := &structs.CoordinateEntry{
			Node:    nraw.(*structs.Node).Node, // the catalog's spelling
			Segment: u.Segment,
			Coord:   u.Coord.Clone(),
		}
		old, err := tx.First(tableCoordinates, "id", row.Node, row.Segment)
		if err != nil {
			return err
		}
		if old != nil && reflect.DeepEqual(old, row) {
			continue
		}
		if err := tx.Insert(tableCoordinates, row); err != nil {
			return fmt.Errorf("state: coordinate of %q: %w", row.Node, err)
		}
		changed = true
	}
	if changed {
		if err := bumpIndex(tx, idx, tableCoordinates); err != nil {
			return err
		}
	}
	tx.Commit()
	return nil
}

// deleteNodeCoordinatesTxn removes every coordinate of node.
func deleteNodeCoordinatesTxn(tx *memdb.Txn, idx uint64, node string) error {
	n, err := tx.DeleteAll(tableCoordinates, "node", node)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return bumpIndex(tx, idx, tableCoordinates)
}

// Coordinates returns every coordinate, ordered by node then segment.
func (r *ReadTxn) Coordinates(ws memdb.WatchSet) (uint64, []*structs.CoordinateEntry, error) {
	idx := maxIndex(r.tx, ws, tableCoordinates)
	it, err := r.tx.Get(tableCoordinates, "id")
	if err != nil {
		return 0, nil, err
	}
	out := []*structs.CoordinateEntry{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.CoordinateEntry))
	}
	return idx, out, nil
}

// NodeCoordinates returns the coordinates of one node, one per segment,
// ordered by segment (memdb orders equal keys of the "node" index by their
// "id"); none for an unknown node.
func (r *ReadTxn) NodeCoordinates(ws memdb.WatchSet, node string) (uint64, []*structs.CoordinateEntry, error) {
	idx := maxIndex(r.tx, ws, tableCoordinates)
	it, err := r.tx.Get(tableCoordinates, "node", node)
	if err != nil {
		return 0, nil, err
	}
	out := []*structs.CoordinateEntry{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.CoordinateEntry))
	}
	return idx, out, nil
}

// Coordinate returns node's coordinate in segment, or nil. It watches
// nothing: sorting by distance (?near) orders a result but does not make
// it change.
func (r *ReadTxn) Coordinate(node, segment string) (*coordinate.Coordinate, error) {
	raw, err := r.tx.First(tableCoordinates, "id", node, segment)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.CoordinateEntry).Coord, nil
}
