package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// checkDatacenter rejects a request for a datacenter other than this one
// that reached a handler: one that could be forwarded was (forward.go).
func (a *API) checkDatacenter(dc string) error {
	if dc == "" || strings.EqualFold(dc, a.deps.Datacenter) {
		return nil
	}
	return errNoPath
}

func (a *API) dcParam(r *http.Request) error {
	return a.checkDatacenter(r.URL.Query().Get("dc"))
}

func (a *API) catalogRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.RegisterRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if err := a.checkDatacenter(req.Datacenter); err != nil {
		return nil, err
	}
	if err := ValidateRegister(&req); err != nil {
		return nil, err
	}
	req.Datacenter = a.deps.Datacenter
	if _, err := a.deps.Server.Apply(fsm.RegisterRequestType, &req); err != nil {
		if strings.HasPrefix(err.Error(), "Missing ") {
			return nil, badRequest("%v", err)
		}
		return nil, err
	}
	return true, nil
}

// ValidateRegister checks a catalog registration and fills in defaults, so
// that a bad one is refused before anything is written.
func ValidateRegister(req *structs.RegisterRequest) error {
	if req.Node == "" {
		return badRequest("Must provide node")
	}
	if req.Address == "" && !req.SkipNodeUpdate {
		return badRequest("Must provide address")
	}
	if req.ID != "" && !isUUID(req.ID) {
		return badRequest("Invalid node ID: %q is not a UUID", req.ID)
	}
	if s := req.Service; s != nil {
		if s.Service == "" {
			return badRequest("Must provide service name")
		}
		if s.ID == "" {
			s.ID = s.Service
		}
		if s.Port < 0 || s.Port > 65535 {
			return badRequest("Invalid service port %d for %q", s.Port, s.ID)
		}
		if s.Weights == (structs.Weights{}) {
			s.Weights = structs.Weights{Passing: 1, Warning: 1}
		}
		if err := validateCatalogConnect(s); err != nil {
			return err
		}
	}
	checks := req.Checks
	if req.Check != nil {
		checks = append([]*structs.HealthCheck{req.Check}, checks...)
	}
	for _, c := range checks {
		if c.CheckID == "" {
			c.CheckID = c.Name
		}
		if c.CheckID == "" {
			return badRequest("Must provide a CheckID or Name for the check")
		}
		if c.Node != "" && !strings.EqualFold(c.Node, req.Node) {
			return badRequest("Check node %q must match the registered node %q", c.Node, req.Node)
		}
		if c.Status == "" {
			c.Status = structs.HealthCritical
		}
		if !structs.ValidStatus(c.Status) {
			return badRequest("Invalid check status %q for check %q", c.Status, c.CheckID)
		}
		if c.ServiceID == "" && req.Service != nil && c.ServiceName == req.Service.Service {
			c.ServiceID = req.Service.ID
		}
	}
	return nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

func (a *API) catalogDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	var req structs.DeregisterRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if err := a.checkDatacenter(req.Datacenter); err != nil {
		return nil, err
	}
	if req.Node == "" {
		return nil, badRequest("Must provide node")
	}
	if _, err := a.deps.Server.Apply(fsm.DeregisterRequestType, &req); err != nil {
		return nil, err
	}
	return true, nil
}

func (a *API) catalogDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.deps.Agent.Datacenters(), nil
}

func (a *API) catalogNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	meta := nodeMetaFilter(r)
	near := a.nearNode(r)
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, nodes, err := rt.Nodes(ws)
		if err != nil {
			return 0, nil, err
		}
		out := make([]*structs.Node, 0, len(nodes))
		for _, n := range nodes {
			if metaMatches(n.Meta, meta) {
				out = append(out, n)
			}
		}
		err = sortByDistance(rt, near, out, func(n *structs.Node) string { return n.Node })
		return idx, out, err
	})
}

func (a *API) catalogServices(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	// The filter applies to instances (ServiceNode fields), not to the
	// name → tags map this endpoint returns, so it is applied here.
	filter := o.filter
	o.filter = nil
	meta := nodeMetaFilter(r)
	return a.blocking(w, r, o, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		if meta == nil && filter == nil {
			return rt.Services(ws)
		}
		idx, nodes, err := rt.Nodes(ws)
		if err != nil {
			return 0, nil, err
		}
		tagSets := map[string]map[string]struct{}{}
		for _, n := range nodes {
			if !metaMatches(n.Meta, meta) {
				continue
			}
			i, _, svcs, err := rt.NodeServices(ws, n.Node)
			if err != nil {
				return 0, nil, err
			}
			idx = max(idx, i)
			for _, s := range svcs {
				if filter != nil {
					ok, err := filter.Evaluate(state.ToServiceNode(n, s))
					if err != nil {
						return 0, nil, badRequest("filter: %v", err)
					}
					if !ok {
						continue
					}
				}
				set := tagSets[s.Service]
				if set == nil {
					set = map[string]struct{}{}
					tagSets[s.Service] = set
				}
				for _, t := range s.Tags {
					set[t] = struct{}{}
				}
			}
		}
		out := make(map[string][]string, len(tagSets))
		for name, set := range tagSets {
			out[name] = slices.Sorted(maps.Keys(set))
		}
		return idx, out, nil
	})
}

func (a *API) catalogService(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.serviceNodesQuery(w, r, (*state.ReadTxn).ServiceNodes)
}

// serviceNodesQuery answers /v1/catalog/service/:name and its connect
// twin from read, with their ?tag, ?node-meta, ?near and ?filter.
func (a *API) serviceNodesQuery(w http.ResponseWriter, r *http.Request,
	read func(*state.ReadTxn, memdb.WatchSet, string) (uint64, []*structs.ServiceNode, error)) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	tags := r.URL.Query()["tag"]
	meta := nodeMetaFilter(r)
	near := a.nearNode(r)
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, nodes, err := read(rt, ws, name)
		if err != nil {
			return 0, nil, err
		}
		out := make([]*structs.ServiceNode, 0, len(nodes))
		for _, sn := range nodes {
			if hasTags(sn.ServiceTags, tags) && metaMatches(sn.NodeMeta, meta) {
				out = append(out, sn)
			}
		}
		err = sortByDistance(rt, near, out, func(sn *structs.ServiceNode) string { return sn.Node })
		return idx, out, err
	})
}

func (a *API) catalogNode(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	name := r.PathValue("node")
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, n, svcs, err := rt.NodeServices(ws, name)
		if err != nil || n == nil {
			// An unknown node is a 200 with a null body, as in Consul;
			// the client decodes it to nil.
			return idx, (*structs.NodeServices)(nil), err
		}
		m := make(map[string]*structs.NodeService, len(svcs))
		for _, s := range svcs {
			m[s.ID] = s
		}
		return idx, &structs.NodeServices{Node: n, Services: m}, nil
	})
}

func (a *API) catalogNodeServices(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	name := r.PathValue("node")
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, n, svcs, err := rt.NodeServices(ws, name)
		if err != nil || n == nil {
			return idx, (*structs.NodeServiceList)(nil), err
		}
		if svcs == nil {
			svcs = []*structs.NodeService{}
		}
		return idx, &structs.NodeServiceList{Node: n, Services: svcs}, nil
	})
}

// --- health ---

func (a *API) healthNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := r.PathValue("node")
	return a.checksQuery(w, r, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, []*structs.HealthCheck, error) {
		return rt.NodeChecks(ws, node)
	})
}

func (a *API) healthChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	return a.checksQuery(w, r, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, []*structs.HealthCheck, error) {
		return rt.ServiceChecks(ws, name)
	})
}

func (a *API) healthState(w http.ResponseWriter, r *http.Request) (any, error) {
	st := r.PathValue("state")
	if st != structs.HealthAny && !structs.ValidStatus(st) {
		return nil, badRequest("Invalid check state: %q", st)
	}
	return a.checksQuery(w, r, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, []*structs.HealthCheck, error) {
		return rt.ChecksInState(ws, st)
	})
}

// checksQuery answers a blocking query whose result is a list of checks,
// sorted by distance from ?near= when given.
func (a *API) checksQuery(w http.ResponseWriter, r *http.Request,
	read func(memdb.WatchSet, *state.ReadTxn) (uint64, []*structs.HealthCheck, error)) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	near := a.nearNode(r)
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, checks, err := read(ws, rt)
		if err != nil {
			return 0, nil, err
		}
		// The store's slice is this query's own: sorting it is safe.
		err = sortByDistance(rt, near, checks, func(c *structs.HealthCheck) string { return c.Node })
		return idx, checks, err
	})
}

func (a *API) healthService(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.checkServiceNodesQuery(w, r, (*state.ReadTxn).CheckServiceNodes)
}

// checkServiceNodesQuery answers /v1/health/service/:name and its connect
// twin from read, with their ?passing, ?tag, ?node-meta, ?near and ?filter.
func (a *API) checkServiceNodesQuery(w http.ResponseWriter, r *http.Request,
	read func(*state.ReadTxn, memdb.WatchSet, string) (uint64, []*structs.CheckServiceNode, error)) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	q := r.URL.Query()
	tags := q["tag"]
	meta := nodeMetaFilter(r)
	_, passing := q["passing"]
	if v := q.Get("passing"); v != "" && v != "true" && v != "1" {
		passing = v != "false" && v != "0"
	}
	near := a.nearNode(r)
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, entries, err := read(rt, ws, name)
		if err != nil {
			return 0, nil, err
		}
		out := make([]*structs.CheckServiceNode, 0, len(entries))
		for _, e := range entries {
			if !hasTags(e.Service.Tags, tags) || !metaMatches(e.Node.Meta, meta) {
				continue
			}
			if passing && !allPassing(e.Checks) {
				continue
			}
			out = append(out, e)
		}
		err = sortByDistance(rt, near, out, func(e *structs.CheckServiceNode) string { return e.Node.Node })
		return idx, out, err
	})
}

func allPassing(checks []*structs.HealthCheck) bool {
	for _, c := range checks {
		if c.Status != structs.HealthPassing {
			return false
		}
	}
	return true
}
