package state

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Table names.
const (
	tableIndex      = "index"
	tableNodes      = "nodes"
	tableServices   = "services"
	tableChecks     = "checks"
	tableKVs        = "kvs"
	tableTombstones = "tombstones"
	tableSessions   = "sessions"
	// tableCoordinates holds network coordinates; see coordinate.go.
	tableCoordinates = "coordinates"
)

// indexEntry records the raft index at which a table, or a finer-grained
// key such as "service.web", last changed.
type indexEntry struct {
	Key   string
	Value uint64
}

// serviceRow is a service instance in the services table.
type serviceRow struct {
	Node        string
	ServiceID   string
	ServiceName string
	S           *structs.NodeService
}

// tombstone remembers a deleted key so that a prefix read keeps a rising
// index after deletes, as Consul's graveyard does.
type tombstone struct {
	Key   string
	Index uint64
}

func serviceIndexKey(name string) string { return "service." + strings.ToLower(name) }

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableIndex: {
			Name: tableIndex,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key", Lowercase: true}},
			},
		},
		tableNodes: {
			Name: tableNodes,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
			},
		},
		tableServices: {
			Name: tableServices,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "ServiceID", Lowercase: false},
				}}},
				"node":    {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
				"service": {Name: "service", Indexer: &memdb.StringFieldIndex{Field: "ServiceName", Lowercase: true}},
				// connect.go: proxies and native instances by the service they serve.
				"connect": {Name: "connect", AllowMissing: true, Indexer: connectIndexer{}},
			},
		},
		tableChecks: {
			Name: tableChecks,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "CheckID", Lowercase: false},
				}}},
				"node":   {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
				"status": {Name: "status", Indexer: &memdb.StringFieldIndex{Field: "Status", Lowercase: true}},
				"service": {Name: "service", AllowMissing: true,
					Indexer: &memdb.StringFieldIndex{Field: "ServiceName", Lowercase: true}},
				"node_service": {Name: "node_service", AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Node", Lowercase: true},
					&memdb.StringFieldIndex{Field: "ServiceID", Lowercase: false},
				}}},
			},
		},
		tableKVs: {
			Name: tableKVs,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
				// Lowercase, as the sessions table's "id": a session finds
				// the locks it holds whatever case they were taken in.
				"session": {Name: "session", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Session", Lowercase: true}},
			},
		},
		tableTombstones: {
			Name: tableTombstones,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			},
		},
		tableSessions: {
			Name: tableSessions,
			Indexes: map[string]*memdb.IndexSchema{
				"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID", Lowercase: true}},
				"node": {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "Node", Lowercase: true}},
			},
		},
		tableCoordinates:   coordinatesTable(),
		tableAutopilot:     autopilotTable(),
		tableConfigEntries: configEntriesTable(),
		tableCAConfig:      caConfigTable(), // connect_ca.go
		tableCARoots:       caRootsTable(),
	}}
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant of this package: an error is a bug.
		panic(fmt.Sprintf("state: invalid schema: %v", err))
	}
	return db
}
