package state

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// EnsureRegistration applies a catalog registration: the node, then the
// service, then the checks. It is all-or-nothing.
func (s *Store) EnsureRegistration(idx uint64, req *structs.RegisterRequest) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := s.ensureRegistrationTxn(tx, idx, req); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func (s *Store) ensureRegistrationTxn(tx *memdb.Txn, idx uint64, req *structs.RegisterRequest) error {
	existing, err := tx.First(tableNodes, "id", req.Node)
	if err != nil {
		return err
	}
	if !req.SkipNodeUpdate || existing == nil {
		node := &structs.Node{
			ID:              req.ID,
			Node:            req.Node,
			Address:         req.Address,
			Datacenter:      req.Datacenter,
			TaggedAddresses: req.TaggedAddresses,
			Meta:            req.NodeMeta,
		}
		if err := ensureNodeTxn(tx, idx, node); err != nil {
			return err
		}
	}
	if req.Service != nil {
		if err := ensureServiceTxn(tx, idx, req.Node, req.Service); err != nil {
			return err
		}
	}
	if req.Check != nil {
		if err := s.ensureCheckTxn(tx, idx, req.Node, req.Check); err != nil {
			return err
		}
	}
	for _, c := range req.Checks {
		if err := s.ensureCheckTxn(tx, idx, req.Node, c); err != nil {
			return err
		}
	}
	return nil
}

func ensureNodeTxn(tx *memdb.Txn, idx uint64, n *structs.Node) error {
	raw, err := tx.First(tableNodes, "id", n.Node)
	if err != nil {
		return err
	}
	node := *n
	node.CreateIndex, node.ModifyIndex = idx, idx
	if raw != nil {
		old := raw.(*structs.Node)
		node.CreateIndex = old.CreateIndex
		node.ModifyIndex = old.ModifyIndex
		if node.ID == "" {
			node.ID = old.ID
		}
		if reflect.DeepEqual(old, &node) {
			return nil
		}
		node.ModifyIndex = idx
		node.Node = old.Node // keep the first spelling of the name
	}
	if err := tx.Insert(tableNodes, &node); err != nil {
		return err
	}
	return bumpNodeIndexes(tx, idx, node.Node, tableNodes)
}

// bumpNodeIndexes bumps the given tables and the index of every service
// that has an instance on node: a change to a node changes what those
// services' health queries return.
func bumpNodeIndexes(tx *memdb.Txn, idx uint64, node string, tables ...string) error {
	keys := append([]string(nil), tables...)
	it, err := tx.Get(tableServices, "node", node)
	if err != nil {
		return err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		keys = append(keys, serviceIndexKey(raw.(*serviceRow).ServiceName))
	}
	return bumpIndex(tx, idx, keys...)
}

func ensureServiceTxn(tx *memdb.Txn, idx uint64, node string, svc *structs.NodeService) error {
	if svc.ID == "" {
		svc.ID = svc.Service
	}
	nraw, err := tx.First(tableNodes, "id", node)
	if err != nil {
		return err
	}
	if nraw == nil {
		return fmt.Errorf("Missing node registration")
	}
	node = nraw.(*structs.Node).Node
	ns := svc.Clone()
	ns.Datacenter = ""
	ns.CreateIndex, ns.ModifyIndex = idx, idx
	raw, err := tx.First(tableServices, "id", node, svc.ID)
	if err != nil {
		return err
	}
	keys := []string{tableServices, serviceIndexKey(ns.Service)}
	keys = append(keys, connectIndexKeys(ns)...)
	if raw != nil {
		old := raw.(*serviceRow)
		keys = append(keys, connectIndexKeys(old.S)...)
		ns.CreateIndex = old.S.CreateIndex
		ns.ModifyIndex = old.S.ModifyIndex
		if reflect.DeepEqual(old.S, ns) {
			return nil
		}
		ns.ModifyIndex = idx
		if !strings.EqualFold(old.ServiceName, ns.Service) {
			keys = append(keys, serviceIndexKey(old.ServiceName))
		}
	}
	row := &serviceRow{Node: node, ServiceID: ns.ID, ServiceName: ns.Service, S: ns}
	if err := tx.Insert(tableServices, row); err != nil {
		return err
	}
	// The service's checks carry its name and tags: keep them current.
	if raw != nil {
		if err := refreshServiceChecksTxn(tx, idx, node, ns); err != nil {
			return err
		}
	}
	return bumpIndex(tx, idx, keys...)
}

func refreshServiceChecksTxn(tx *memdb.Txn, idx uint64, node string, ns *structs.NodeService) error {
	it, err := tx.Get(tableChecks, "node_service", node, ns.ID)
	if err != nil {
		return err
	}
	var update []*structs.HealthCheck
	for raw := it.Next(); raw != nil; raw = it.Next() {
		c := raw.(*structs.HealthCheck)
		if c.ServiceName != ns.Service || !reflect.DeepEqual(c.ServiceTags, ns.Tags) {
			n := c.Clone()
			n.ServiceName = ns.Service
			n.ServiceTags = ns.Tags
			n.ModifyIndex = idx
			update = append(update, n)
		}
	}
	for _, c := range update {
		if err := tx.Insert(tableChecks, c); err != nil {
			return err
		}
	}
	if len(update) > 0 {
		return bumpIndex(tx, idx, tableChecks)
	}
	return nil
}

func (s *Store) ensureCheckTxn(tx *memdb.Txn, idx uint64, node string, in *structs.HealthCheck) error {
	nraw, err := tx.First(tableNodes, "id", node)
	if err != nil {
		return err
	}
	if nraw == nil {
		return fmt.Errorf("Missing node registration")
	}
	c := in.Clone()
	c.Node = nraw.(*structs.Node).Node
	if c.Status == "" {
		c.Status = structs.HealthCritical
	}
	if !structs.ValidStatus(c.Status) {
		return fmt.Errorf("check %q: invalid status %q", c.CheckID, c.Status)
	}
	keys := []string{tableChecks}
	if c.ServiceID != "" {
		sraw, err := tx.First(tableServices, "id", c.Node, c.ServiceID)
		if err != nil {
			return err
		}
		if sraw == nil {
			return fmt.Errorf("Missing service registration")
		}
		svc := sraw.(*serviceRow).S
		c.ServiceName = svc.Service
		c.ServiceTags = svc.Tags
		keys = append(keys, serviceIndexKey(svc.Service))
	} else {
		c.ServiceName, c.ServiceTags = "", nil
	}
	c.CreateIndex, c.ModifyIndex = idx, idx
	raw, err := tx.First(tableChecks, "id", c.Node, c.CheckID)
	if err != nil {
		return err
	}
	if raw != nil {
		old := raw.(*structs.HealthCheck)
		c.CreateIndex, c.ModifyIndex = old.CreateIndex, old.ModifyIndex
		if reflect.DeepEqual(old, c) {
			return nil
		}
		c.ModifyIndex = idx
		if old.ServiceName != "" && !strings.EqualFold(old.ServiceName, c.ServiceName) {
			keys = append(keys, serviceIndexKey(old.ServiceName))
		}
	}
	if err := tx.Insert(tableChecks, c); err != nil {
		return err
	}
	if c.ServiceID == "" {
		if err := bumpNodeIndexes(tx, idx, c.Node, keys...); err != nil {
			return err
		}
	} else if err := bumpIndex(tx, idx, keys...); err != nil {
		return err
	}
	if c.Status == structs.HealthCritical {
		return s.invalidateSessionsForCheckTxn(tx, idx, c.Node, c.CheckID)
	}
	return nil
}

// DeleteNode removes a node with its services, checks, sessions and
// coordinates.
func (s *Store) DeleteNode(idx uint64, node string) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := s.deleteNodeTxn(tx, idx, node); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func (s *Store) deleteNodeTxn(tx *memdb.Txn, idx uint64, node string) error {
	raw, err := tx.First(tableNodes, "id", node)
	if err != nil || raw == nil {
		return err
	}
	if err := bumpNodeIndexes(tx, idx, node, tableNodes); err != nil {
		return err
	}
	var svcs []*serviceRow
	it, err := tx.Get(tableServices, "node", node)
	if err != nil {
		return err
	}
	for r := it.Next(); r != nil; r = it.Next() {
		svcs = append(svcs, r.(*serviceRow))
	}
	for _, r := range svcs {
		if err := s.deleteServiceTxn(tx, idx, node, r.ServiceID); err != nil {
			return err
		}
	}
	var checks []*structs.HealthCheck
	cit, err := tx.Get(tableChecks, "node", node)
	if err != nil {
		return err
	}
	for r := cit.Next(); r != nil; r = cit.Next() {
		checks = append(checks, r.(*structs.HealthCheck))
	}
	for _, c := range checks {
		if err := s.deleteCheckTxn(tx, idx, node, c.CheckID); err != nil {
			return err
		}
	}
	var sessions []string
	sit, err := tx.Get(tableSessions, "node", node)
	if err != nil {
		return err
	}
	for r := sit.Next(); r != nil; r = sit.Next() {
		sessions = append(sessions, r.(*structs.Session).ID)
	}
	for _, id := range sessions {
		if err := s.deleteSessionTxn(tx, idx, id); err != nil {
			return err
		}
	}
	if err := deleteNodeCoordinatesTxn(tx, idx, node); err != nil {
		return err
	}
	return tx.Delete(tableNodes, raw)
}

// DeleteService removes a service instance and its checks.
func (s *Store) DeleteService(idx uint64, node, serviceID string) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := s.deleteServiceTxn(tx, idx, node, serviceID); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func (s *Store) deleteServiceTxn(tx *memdb.Txn, idx uint64, node, serviceID string) error {
	raw, err := tx.First(tableServices, "id", node, serviceID)
	if err != nil || raw == nil {
		return err
	}
	row := raw.(*serviceRow)
	var checks []string
	it, err := tx.Get(tableChecks, "node_service", node, serviceID)
	if err != nil {
		return err
	}
	for r := it.Next(); r != nil; r = it.Next() {
		checks = append(checks, r.(*structs.HealthCheck).CheckID)
	}
	for _, id := range checks {
		if err := s.deleteCheckTxn(tx, idx, node, id); err != nil {
			return err
		}
	}
	if err := tx.Delete(tableServices, row); err != nil {
		return err
	}
	keys := append([]string{tableServices, serviceIndexKey(row.ServiceName)}, connectIndexKeys(row.S)...)
	return bumpIndex(tx, idx, keys...)
}

// DeleteCheck removes a check; sessions that depend on it are invalidated.
func (s *Store) DeleteCheck(idx uint64, node, checkID string) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := s.deleteCheckTxn(tx, idx, node, checkID); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func (s *Store) deleteCheckTxn(tx *memdb.Txn, idx uint64, node, checkID string) error {
	raw, err := tx.First(tableChecks, "id", node, checkID)
	if err != nil || raw == nil {
		return err
	}
	c := raw.(*structs.HealthCheck)
	if err := tx.Delete(tableChecks, c); err != nil {
		return err
	}
	if c.ServiceID != "" {
		err = bumpIndex(tx, idx, tableChecks, serviceIndexKey(c.ServiceName))
	} else {
		err = bumpNodeIndexes(tx, idx, c.Node, tableChecks)
	}
	if err != nil {
		return err
	}
	return s.invalidateSessionsForCheckTxn(tx, idx, c.Node, c.CheckID)
}

// --- reads ---

// Nodes returns every node, sorted by name.
func (r *ReadTxn) Nodes(ws memdb.WatchSet) (uint64, []*structs.Node, error) {
	idx := maxIndex(r.tx, ws, tableNodes)
	it, err := r.tx.Get(tableNodes, "id")
	if err != nil {
		return 0, nil, err
	}
	var out []*structs.Node
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Node))
	}
	return idx, out, nil
}

// Node returns one node, or nil.
func (r *ReadTxn) Node(ws memdb.WatchSet, name string) (uint64, *structs.Node, error) {
	idx := maxIndex(r.tx, ws, tableNodes)
	raw, err := r.tx.First(tableNodes, "id", name)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*structs.Node), nil
}

// Services returns every service name with the union of its instances' tags.
func (r *ReadTxn) Services(ws memdb.WatchSet) (uint64, map[string][]string, error) {
	idx := maxIndex(r.tx, ws, tableServices)
	it, err := r.tx.Get(tableServices, "id")
	if err != nil {
		return 0, nil, err
	}
	tags := make(map[string]map[string]struct{})
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		set := tags[row.ServiceName]
		if set == nil {
			set = make(map[string]struct{})
			tags[row.ServiceName] = set
		}
		for _, t := range row.S.Tags {
			set[t] = struct{}{}
		}
	}
	out := make(map[string][]string, len(tags))
	for name, set := range tags {
		list := make([]string, 0, len(set))
		for t := range set {
			list = append(list, t)
		}
		sort.Strings(list)
		out[name] = list
	}
	return idx, out, nil
}

// ServiceInstances returns the instances of a service with their nodes.
func (r *ReadTxn) ServiceInstances(ws memdb.WatchSet, name string) (uint64, []*serviceRow, map[string]*structs.Node, error) {
	idx := maxIndex(r.tx, ws, serviceIndexKey(name))
	if idx == 0 {
		// Never seen: fall back to the table so the index is non-zero
		// and the watch still wakes when the service appears.
		idx = maxIndex(r.tx, ws, tableServices)
	}
	it, err := r.tx.Get(tableServices, "service", name)
	if err != nil {
		return 0, nil, nil, err
	}
	var rows []*serviceRow
	nodes := make(map[string]*structs.Node)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		rows = append(rows, row)
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
	return idx, rows, nodes, nil
}

// ServiceNodes returns /v1/catalog/service/:name rows.
func (r *ReadTxn) ServiceNodes(ws memdb.WatchSet, name string) (uint64, []*structs.ServiceNode, error) {
	idx, rows, nodes, err := r.ServiceInstances(ws, name)
	if err != nil {
		return 0, nil, err
	}
	return idx, toServiceNodes(rows, nodes), nil
}

// toServiceNodes joins instances with their nodes, skipping instances
// whose node is gone.
func toServiceNodes(rows []*serviceRow, nodes map[string]*structs.Node) []*structs.ServiceNode {
	out := make([]*structs.ServiceNode, 0, len(rows))
	for _, row := range rows {
		if n := nodes[row.Node]; n != nil {
			out = append(out, ToServiceNode(n, row.S))
		}
	}
	return out
}

// ToServiceNode joins a node and one of its service instances.
func ToServiceNode(n *structs.Node, s *structs.NodeService) *structs.ServiceNode {
	return &structs.ServiceNode{
		ID:                       n.ID,
		Node:                     n.Node,
		Address:                  n.Address,
		Datacenter:               n.Datacenter,
		TaggedAddresses:          n.TaggedAddresses,
		NodeMeta:                 n.Meta,
		ServiceKind:              s.Kind,
		ServiceID:                s.ID,
		ServiceName:              s.Service,
		ServiceTags:              s.Tags,
		ServiceAddress:           s.Address,
		ServiceTaggedAddresses:   s.TaggedAddresses,
		ServiceWeights:           s.Weights,
		ServiceMeta:              s.Meta,
		ServicePort:              s.Port,
		ServiceSocketPath:        s.SocketPath,
		ServiceEnableTagOverride: s.EnableTagOverride,
		ServiceProxy:             s.Proxy,
		ServiceConnect:           s.Connect,
		CreateIndex:              s.CreateIndex,
		ModifyIndex:              s.ModifyIndex,
	}
}

// NodeServices returns a node and its service instances; the node is nil if
// it is unknown.
func (r *ReadTxn) NodeServices(ws memdb.WatchSet, node string) (uint64, *structs.Node, []*structs.NodeService, error) {
	idx := maxIndex(r.tx, ws, tableNodes, tableServices)
	raw, err := r.tx.First(tableNodes, "id", node)
	if err != nil || raw == nil {
		return idx, nil, nil, err
	}
	n := raw.(*structs.Node)
	it, err := r.tx.Get(tableServices, "node", node)
	if err != nil {
		return 0, nil, nil, err
	}
	var out []*structs.NodeService
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*serviceRow).S)
	}
	return idx, n, out, nil
}

// NodeService returns one service instance, or nil.
func (r *ReadTxn) NodeService(node, serviceID string) (*structs.NodeService, error) {
	raw, err := r.tx.First(tableServices, "id", node, serviceID)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*serviceRow).S, nil
}

// NodeChecks returns the checks of a node.
func (r *ReadTxn) NodeChecks(ws memdb.WatchSet, node string) (uint64, []*structs.HealthCheck, error) {
	idx := maxIndex(r.tx, ws, tableChecks)
	return idx, r.collectChecks(tableChecks, "node", node), nil
}

// ServiceChecks returns the checks of every instance of a service.
func (r *ReadTxn) ServiceChecks(ws memdb.WatchSet, name string) (uint64, []*structs.HealthCheck, error) {
	idx := maxIndex(r.tx, ws, serviceIndexKey(name))
	if idx == 0 {
		idx = maxIndex(r.tx, ws, tableChecks)
	}
	return idx, r.collectChecks(tableChecks, "service", name), nil
}

// ChecksInState returns the checks in a state, or all with "any".
func (r *ReadTxn) ChecksInState(ws memdb.WatchSet, state string) (uint64, []*structs.HealthCheck, error) {
	idx := maxIndex(r.tx, ws, tableChecks)
	if state == structs.HealthAny {
		return idx, r.collectChecks(tableChecks, "id"), nil
	}
	return idx, r.collectChecks(tableChecks, "status", state), nil
}

func (r *ReadTxn) collectChecks(table, index string, args ...any) []*structs.HealthCheck {
	it, err := r.tx.Get(table, index, args...)
	if err != nil {
		return nil
	}
	out := []*structs.HealthCheck{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.HealthCheck))
	}
	return out
}

// Check returns one check, or nil.
func (r *ReadTxn) Check(node, checkID string) (*structs.HealthCheck, error) {
	raw, err := r.tx.First(tableChecks, "id", node, checkID)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*structs.HealthCheck), nil
}

// CheckServiceNodes returns /v1/health/service/:name entries: each instance
// with its node and the node's and the instance's checks.
func (r *ReadTxn) CheckServiceNodes(ws memdb.WatchSet, name string) (uint64, []*structs.CheckServiceNode, error) {
	idx, rows, nodes, err := r.ServiceInstances(ws, name)
	if err != nil {
		return 0, nil, err
	}
	out, err := r.withChecks(rows, nodes)
	return idx, out, err
}

// withChecks joins instances with their nodes and with the node's and
// the instance's checks, skipping instances whose node is gone.
func (r *ReadTxn) withChecks(rows []*serviceRow, nodes map[string]*structs.Node) ([]*structs.CheckServiceNode, error) {
	out := make([]*structs.CheckServiceNode, 0, len(rows))
	nodeChecks := make(map[string][]*structs.HealthCheck)
	for _, row := range rows {
		n := nodes[row.Node]
		if n == nil {
			continue
		}
		nc, ok := nodeChecks[row.Node]
		if !ok {
			var err error
			if nc, err = r.checksOf(row.Node, ""); err != nil {
				return nil, err
			}
			nodeChecks[row.Node] = nc
		}
		sc, err := r.checksOf(row.Node, row.ServiceID)
		if err != nil {
			return nil, err
		}
		checks := make([]*structs.HealthCheck, 0, len(nc)+len(sc))
		checks = append(append(checks, nc...), sc...)
		out = append(out, &structs.CheckServiceNode{Node: n, Service: row.S, Checks: checks})
	}
	return out, nil
}

// checksOf returns the checks of node bound to serviceID ("" for the
// node-level checks).
func (r *ReadTxn) checksOf(node, serviceID string) ([]*structs.HealthCheck, error) {
	if serviceID != "" {
		return r.collectChecks(tableChecks, "node_service", node, serviceID), nil
	}
	it, err := r.tx.Get(tableChecks, "node", node)
	if err != nil {
		return nil, err
	}
	var out []*structs.HealthCheck
	for raw := it.Next(); raw != nil; raw = it.Next() {
		c := raw.(*structs.HealthCheck)
		if c.ServiceID == "" {
			out = append(out, c)
		}
	}
	return out, nil
}
