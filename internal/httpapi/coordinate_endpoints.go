package httpapi

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Network coordinates: /v1/coordinate/..., and ?near=, which orders catalog
// and health answers by the round-trip time estimated from them.

// nearAgent, as ?near=, stands for the agent the client asked.
const nearAgent = "_agent"

// coordinateDatacenters answers GET /v1/coordinate/datacenters: each
// datacenter's servers with their WAN coordinates, from this server's
// gossip. Like Consul's, it neither blocks nor takes a consistency mode.
func (a *API) coordinateDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.deps.Agent.DatacenterCoordinates(), nil
}

// coordinateNodes answers GET /v1/coordinate/nodes, a blocking query on
// the "coordinates" index; ?segment= keeps one segment's entries.
func (a *API) coordinateNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, list, err := rt.Coordinates(ws)
		if err != nil {
			return 0, nil, err
		}
		return idx, filterSegment(r, list), nil
	})
}

// coordinateNode answers GET /v1/coordinate/node/:node: the node's entries,
// one per segment, or 404 when it has none.
func (a *API) coordinateNode(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	node := r.PathValue("node")
	res, err := a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, list, err := rt.NodeCoordinates(ws, node)
		if err != nil {
			return 0, nil, err
		}
		return idx, filterSegment(r, list), nil
	})
	if err != nil {
		return nil, err
	}
	if list, ok := res.([]*structs.CoordinateEntry); ok && len(list) == 0 {
		// The index headers are set already, as for any blocking answer.
		return nil, structs.NotFoundError{Reason: fmt.Sprintf("coordinate: no coordinate for node %q", node)}
	}
	return res, nil
}

// filterSegment keeps the entries of the segment ?segment= names; without
// the parameter, all. ?segment= (empty) names the default segment.
func filterSegment(r *http.Request, list []*structs.CoordinateEntry) []*structs.CoordinateEntry {
	q := r.URL.Query()
	if !q.Has("segment") {
		return list
	}
	seg := q.Get("segment")
	out := make([]*structs.CoordinateEntry, 0, len(list))
	for _, e := range list {
		if strings.EqualFold(e.Segment, seg) {
			out = append(out, e)
		}
	}
	return out
}

// coordinateUpdate answers PUT /v1/coordinate/update: it sets one node's
// coordinate. Input that is not a usable coordinate is a 400 naming the
// field, and nothing is written. An update for a node the catalog does not
// hold succeeds and is dropped, as Consul's.
func (a *API) coordinateUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Datacenter string
		structs.CoordinateEntry
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if err := a.checkDatacenter(body.Datacenter); err != nil {
		return nil, err
	}
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	e := body.CoordinateEntry
	if err := validateCoordinateUpdate(&e); err != nil {
		return nil, err
	}
	req := &fsm.CoordinateBatchUpdateRequest{Updates: []*structs.CoordinateEntry{&e}}
	if _, err := a.deps.Server.Apply(fsm.CoordinateBatchUpdateType, req); err != nil {
		return nil, err
	}
	return nil, nil
}

// validateCoordinateUpdate checks a coordinate update before anything is
// written: a node, and a coordinate of serf's dimensionality (the one every
// agent's LAN pool uses) with finite components and a height that is not
// negative. Distances to a coordinate that fails these would be meaningless
// or, for another dimensionality, panic.
func validateCoordinateUpdate(e *structs.CoordinateEntry) error {
	const prefix = "Invalid coordinate update: "
	if e.Node == "" {
		return badRequest(prefix + "missing Node")
	}
	c := e.Coord
	if c == nil {
		return badRequest(prefix + "missing Coord")
	}
	if want := coordinate.DefaultConfig().Dimensionality; len(c.Vec) != int(want) {
		return badRequest(prefix+"Coord.Vec has %d dimensions, want %d", len(c.Vec), want)
	}
	for i, v := range c.Vec {
		if !finite(v) {
			return badRequest(prefix+"Coord.Vec[%d] is not a finite number", i)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"Error", c.Error}, {"Adjustment", c.Adjustment}, {"Height", c.Height}} {
		if !finite(f.v) {
			return badRequest(prefix+"Coord.%s is not a finite number", f.name)
		}
	}
	if c.Height < 0 {
		return badRequest(prefix+"Coord.Height %g is negative", c.Height)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// nearNode returns the node that a read's ?near= names, "" for none.
// "_agent" is the agent the client asked: for a request forwarded from
// another agent, the origin, else this one.
func (a *API) nearNode(r *http.Request) string {
	near := r.URL.Query().Get("near")
	if near != nearAgent {
		return near
	}
	if origin := r.Header.Get(OriginNodeHeader); origin != "" {
		return origin
	}
	return a.deps.NodeName
}

// sortByDistance orders items, in place, by the round-trip time estimated
// from near's coordinate to the coordinate of each item's node, nearest
// first. Items whose node has no (compatible) coordinate follow the others
// in their original order. When near is "" or has no coordinate, items
// stay as they are. Coordinates are read without watching them: a
// coordinate update does not change what a blocking query returns, only
// the order of its next answer.
func sortByDistance[T any](rt *state.ReadTxn, near string, items []T, nodeOf func(T) string) error {
	if near == "" || len(items) < 2 {
		return nil
	}
	from, err := rt.Coordinate(near, "")
	if err != nil || from == nil {
		return err
	}
	type ranked struct {
		item  T
		known bool
		rtt   time.Duration
	}
	type dist struct {
		known bool
		rtt   time.Duration
	}
	byNode := make(map[string]dist)
	rs := make([]ranked, len(items))
	for i, it := range items {
		key := strings.ToLower(nodeOf(it))
		d, ok := byNode[key]
		if !ok {
			c, err := rt.Coordinate(key, "")
			if err != nil {
				return err
			}
			if c != nil && c.IsCompatibleWith(from) {
				d = dist{known: true, rtt: from.DistanceTo(c)}
			}
			byNode[key] = d
		}
		rs[i] = ranked{item: it, known: d.known, rtt: d.rtt}
	}
	slices.SortStableFunc(rs, func(x, y ranked) int {
		switch {
		case x.known && y.known:
			return cmp.Compare(x.rtt, y.rtt)
		case x.known:
			return -1
		case y.known:
			return 1
		}
		return 0
	})
	for i := range rs {
		items[i] = rs[i].item
	}
	return nil
}
