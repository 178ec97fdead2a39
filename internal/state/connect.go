package state

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// The services table's "connect" index maps a service name to the
// instances that accept Connect traffic for it: its proxies (by
// Proxy.DestinationServiceName) and its Connect-native instances. It is a
// memdb index, rebuilt on restore, not part of the snapshot format.

// connectIndexer indexes a serviceRow by its lowercased ConnectTarget;
// rows without one are left out of the index.
type connectIndexer struct{}

func (connectIndexer) FromObject(obj any) (bool, []byte, error) {
	row, ok := obj.(*serviceRow)
	if !ok {
		return false, nil, fmt.Errorf("state: connect index: unexpected %T", obj)
	}
	target := row.S.ConnectTarget()
	if target == "" {
		return false, nil, nil
	}
	return true, []byte(strings.ToLower(target) + "\x00"), nil
}

func (connectIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("state: connect index: want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("state: connect index: argument is %T, want a string", args[0])
	}
	return []byte(strings.ToLower(s) + "\x00"), nil
}

func connectIndexKey(name string) string { return "connect." + strings.ToLower(name) }

// connectIndexKeys returns the index keys to bump when the given instances
// are written or removed: those of the services they are connect-capable
// for. nil instances are skipped.
func connectIndexKeys(svcs ...*structs.NodeService) []string {
	var keys []string
	for _, s := range svcs {
		if s == nil {
			continue
		}
		if t := s.ConnectTarget(); t != "" {
			keys = append(keys, connectIndexKey(t))
		}
	}
	return keys
}

// ConnectServiceInstances returns the connect-capable instances for service
// name (its proxies and its native instances) with their nodes. The index
// rises whenever any of them, their checks or their nodes change, or an
// instance starts or stops fronting name; ws watches all of that.
func (r *ReadTxn) ConnectServiceInstances(ws memdb.WatchSet, name string) (uint64, []*serviceRow, map[string]*structs.Node, error) {
	idx := maxIndex(r.tx, ws, connectIndexKey(name))
	it, err := r.tx.Get(tableServices, "connect", name)
	if err != nil {
		return 0, nil, nil, err
	}
	var rows []*serviceRow
	nodes := make(map[string]*structs.Node)
	seen := make(map[string]bool)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		rows = append(rows, row)
		// A proxy's checks and node changes bump the proxy's own
		// service key, not the destination's.
		if k := serviceIndexKey(row.ServiceName); !seen[k] {
			seen[k] = true
			idx = max(idx, maxIndex(r.tx, ws, k))
		}
		if _, ok := nodes[row.Node]; !ok {
			n, err := r.tx.First(tableNodes, "id", row.Node)
			if err != nil {
				return 0, nil, nil, err
			}
			if n != nil {
				nodes[row.Node] = n.(*structs.Node)
			}
		}
	}
	if idx == 0 {
		// Never seen: fall back to the table so the index is non-zero
		// and the watch still wakes when a proxy appears.
		idx = maxIndex(r.tx, ws, tableServices)
	}
	return idx, rows, nodes, nil
}

// ConnectServiceNodes returns /v1/catalog/connect/:name rows.
func (r *ReadTxn) ConnectServiceNodes(ws memdb.WatchSet, name string) (uint64, []*structs.ServiceNode, error) {
	idx, rows, nodes, err := r.ConnectServiceInstances(ws, name)
	if err != nil {
		return 0, nil, err
	}
	return idx, toServiceNodes(rows, nodes), nil
}

// CheckConnectServiceNodes returns /v1/health/connect/:name entries: each
// connect-capable instance for name with its node and checks.
func (r *ReadTxn) CheckConnectServiceNodes(ws memdb.WatchSet, name string) (uint64, []*structs.CheckServiceNode, error) {
	idx, rows, nodes, err := r.ConnectServiceInstances(ws, name)
	if err != nil {
		return 0, nil, err
	}
	out, err := r.withChecks(rows, nodes)
	return idx, out, err
}
