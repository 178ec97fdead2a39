package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/intention"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Intentions are a view of the service-intentions config entries, as in
// Consul since 1.9: each source of an entry is one intention. The legacy
// ID-based endpoints (POST /v1/connect/intentions, /v1/connect/intentions/:id)
// are not served.

func (a *API) intentionRoutes() {
	a.handle("GET", "/v1/connect/intentions", a.intentionList)
	a.handle("GET", "/v1/connect/intentions/exact", a.intentionGetExact)
	a.handle("PUT", "/v1/connect/intentions/exact", a.intentionPutExact)
	a.handle("DELETE", "/v1/connect/intentions/exact", a.intentionDeleteExact)
	a.handle("GET", "/v1/connect/intentions/match", a.intentionMatch)
	a.handle("GET", "/v1/connect/intentions/check", a.intentionCheck)
	a.handle("POST PUT", "/v1/agent/connect/authorize", a.agentConnectAuthorize)
}

// maxIntentionBody bounds the body of PUT /v1/connect/intentions/exact.
const maxIntentionBody = 256 << 10

// intentionWriteRetries bounds the read-modify-write attempts of an exact
// write that races with other writes to the same entry.
const intentionWriteRetries = 10

func views(rules []intention.Rule, idx map[string][2]uint64) []*configentry.Intention {
	out := make([]*configentry.Intention, 0, len(rules))
	for _, r := range rules {
		ci := idx[r.Destination]
		out = append(out, configentry.ToIntention(r.Destination, r.Src, ci[0], ci[1]))
	}
	return out
}

// entryIndexes maps each entry's name to its create and modify indexes.
func entryIndexes(entries []*configentry.ServiceIntentionsConfigEntry) map[string][2]uint64 {
	out := make(map[string][2]uint64, len(entries))
	for _, e := range entries {
		c, m := e.GetRaftIndex()
		out[e.Name] = [2]uint64{c, m}
	}
	return out
}

// intentionList answers every intention, most specific first; ?filter
// applies to the intentions.
func (a *API) intentionList(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	filter := o.filter
	o.filter = nil
	res, err := a.blocking(w, r, o, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, entries, err := rt.ServiceIntentions(ws)
		if err != nil {
			return 0, nil, err
		}
		return idx, views(intention.NewSet(entries).Rules(), entryIndexes(entries)), nil
	})
	if err != nil || filter == nil {
		return res, err
	}
	return filterSlice(filter, res.([]*configentry.Intention))
}

// exactParams reads ?source= and ?destination=.
func exactParams(r *http.Request) (string, string, error) {
	q := r.URL.Query()
	if !q.Has("source") {
		return "", "", badRequest("required query parameter 'source' not set")
	}
	if !q.Has("destination") {
		return "", "", badRequest("required query parameter 'destination' not set")
	}
	src, err := configentry.ParseIntentionName("source", q.Get("source"))
	if err != nil {
		return "", "", badRequest("%v", err)
	}
	dst, err := configentry.ParseIntentionName("destination", q.Get("destination"))
	if err != nil {
		return "", "", badRequest("%v", err)
	}
	return src, dst, nil
}

var errIntentionNotFound = structs.NotFoundError{Reason: "Intention not found"}

func findSource(e *configentry.ServiceIntentionsConfigEntry, source string) *configentry.SourceIntention {
	if e == nil {
		return nil
	}
	for _, s := range e.Sources {
		if s != nil && s.Name == source && s.Peer == "" && s.SamenessGroup == "" {
			return s
		}
	}
	return nil
}

// intentionGetExact answers the intention from source to destination, or
// 404.
func (a *API) intentionGetExact(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	res, err := a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, e, err := rt.ConfigEntry(ws, configentry.ServiceIntentions, dst)
		if err != nil || e == nil {
			return idx, nil, err
		}
		ent := e.(*configentry.ServiceIntentionsConfigEntry)
		s := findSource(ent, src)
		if s == nil {
			return idx, nil, nil
		}
		c, m := ent.GetRaftIndex()
		return idx, configentry.ToIntention(dst, s, c, m), nil
	})
	if err != nil {
		return nil, err
	}
	if ixn, _ := res.(*configentry.Intention); ixn == nil {
		return nil, errIntentionNotFound
	}
	return res, nil
}

// readIntentionsEntry returns a copy of the service-intentions entry of
// dst that the caller may change, or nil, and its ModifyIndex (0: none).
func (a *API) readIntentionsEntry(dst string) (*configentry.ServiceIntentionsConfigEntry, uint64, error) {
	rt := a.deps.Store.Read()
	defer rt.Abort()
	_, e, err := rt.ConfigEntry(nil, configentry.ServiceIntentions, dst)
	if err != nil || e == nil {
		return nil, 0, err
	}
	_, m := e.GetRaftIndex()
	return configentry.Clone(e).(*configentry.ServiceIntentionsConfigEntry), m, nil
}

// intentionPutExact creates or replaces the intention from source to
// destination, inside destination's service-intentions entry (created if
// need be), and answers true. The write is a check-and-set on the entry,
// retried when another write to it came first, so concurrent exact writes
// never lose one another.
func (a *API) intentionPutExact(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	raw, err := readLimitedBody(r, maxIntentionBody)
	if err != nil {
		return nil, err
	}
	ixn, err := configentry.DecodeIntentionJSON(raw)
	if err != nil {
		return nil, badRequest("Request decoding failed: %v", err)
	}
	for range intentionWriteRetries {
		e, modify, err := a.readIntentionsEntry(dst)
		if err != nil {
			return nil, err
		}
		e, err = configentry.UpsertSource(e, dst, src, ixn)
		if err != nil {
			return nil, badRequest("Invalid intention: %v", err)
		}
		ok, err := a.deps.Server.ConfigEntryApply(state.ConfigEntryUpsertCAS, "", "", e, modify)
		if err != nil || ok {
			return ok, err
		}
	}
	return nil, errors.New("intention: too many concurrent writes to the same destination, try again")
}

// intentionDeleteExact removes the intention from source to destination,
// deleting the entry when it was the last, and answers true; deleting a
// missing intention succeeds.
func (a *API) intentionDeleteExact(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	for range intentionWriteRetries {
		e, modify, err := a.readIntentionsEntry(dst)
		if err != nil {
			return nil, err
		}
		if e == nil || !configentry.RemoveSource(e, src) {
			return true, nil
		}
		var ok bool
		if len(e.Sources) == 0 {
			ok, err = a.deps.Server.ConfigEntryApply(state.ConfigEntryDeleteCAS, configentry.ServiceIntentions, dst, nil, modify)
		} else {
			ok, err = a.deps.Server.ConfigEntryApply(state.ConfigEntryUpsertCAS, "", "", e, modify)
		}
		if err != nil || ok {
			return ok, err
		}
	}
	return nil, errors.New("intention: too many concurrent writes to the same destination, try again")
}

// intentionMatch answers, for each ?name=, the intentions that apply to
// it as a source or a destination (?by=), most specific first.
func (a *API) intentionMatch(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	by := q.Get("by")
	switch {
	case !q.Has("by"):
		return nil, badRequest("required query parameter 'by' not set")
	case by != "source" && by != "destination":
		return nil, badRequest("'by' parameter must be one of 'source' or 'destination'")
	}
	names := q["name"]
	if len(names) == 0 {
		return nil, badRequest("required query parameter 'name' not set")
	}
	parsed := make([]string, len(names))
	for i, n := range names {
		var err error
		if parsed[i], err = configentry.ParseIntentionName("name", n); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, entries, err := rt.ServiceIntentions(ws)
		if err != nil {
			return 0, nil, err
		}
		set, ci := intention.NewSet(entries), entryIndexes(entries)
		out := make(map[string][]*configentry.Intention, len(names))
		for i, n := range names {
			out[n] = views(set.MatchBy(by == "source", parsed[i]), ci)
		}
		return idx, out, nil
	})
}

// intentionCheck answers {"Allowed": bool}: whether a connection from
// source to destination is allowed by the intentions, or, when none
// applies, by the default. An L7 intention answers false, as its
// permissions can only be checked per request (as Consul's).
func (a *API) intentionCheck(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	src, dst, err := exactParams(r)
	if err != nil {
		return nil, err
	}
	if st := r.URL.Query().Get("source-type"); st != "" && st != "consul" {
		return nil, badRequest("unsupported source-type %q: only \"consul\"", st)
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, set, err := destinationSet(ws, rt, dst)
		if err != nil {
			return 0, nil, err
		}
		mesh, err := meshEntry(ws, rt)
		if err != nil {
			return 0, nil, err
		}
		allow, _ := a.intentionDefault(mesh)
		d := set.L4(src, dst, allow)
		return idx, struct{ Allowed bool }{d.Allowed}, nil
	})
}

// meshEntry returns the stored mesh config entry, or nil.
func meshEntry(ws memdb.WatchSet, rt *state.ReadTxn) (*configentry.MeshConfigEntry, error) {
	_, e, err := rt.ConfigEntry(ws, configentry.MeshConfig, configentry.MeshConfigMesh)
	if err != nil || e == nil {
		return nil, err
	}
	return e.(*configentry.MeshConfigEntry), nil
}

// Reasons authorize gives when no intention matched.
const (
	reasonDefaultACL  = "Default behavior configured by ACLs"
	reasonDefaultMesh = "Default behavior configured by the mesh config entry"
)

// intentionDefault is the decision for a connection no intention
// matches, and its reason: the mesh entry's DefaultIntentionPolicy when
// set, else deny when the agent's ACLs are enabled with default_policy
// deny, else allow.
func (a *API) intentionDefault(mesh *configentry.MeshConfigEntry) (allow bool, reason string) {
	if mesh != nil && mesh.DefaultIntentionPolicy != "" {
		return mesh.DefaultIntentionPolicy == configentry.IntentionDefaultAllow, reasonDefaultMesh
	}
	return !a.deps.IntentionDefaultDeny, reasonDefaultACL
}

// destinationSet builds the intentions that can apply to dst: those of
// its own entry and of the wildcard's.
func destinationSet(ws memdb.WatchSet, rt *state.ReadTxn, dst string) (uint64, *intention.Set, error) {
	var entries []*configentry.ServiceIntentionsConfigEntry
	var idx uint64
	for _, n := range []string{dst, configentry.WildcardName} {
		i, e, err := rt.ConfigEntry(ws, configentry.ServiceIntentions, n)
		if err != nil {
			return 0, nil, err
		}
		idx = i
		if e != nil {
			entries = append(entries, e.(*configentry.ServiceIntentionsConfigEntry))
		}
		if dst == configentry.WildcardName {
			break
		}
	}
	return idx, intention.NewSet(entries), nil
}

// AuthorizeRequest is the body of POST /v1/agent/connect/authorize.
type AuthorizeRequest struct {
	Target           string
	ClientCertURI    string
	ClientCertSerial string
}

// AuthorizeResponse is its answer.
type AuthorizeResponse struct {
	Authorized bool
	Reason     string
}

// agentConnectAuthorize decides whether the service named in a client
// certificate's URI may connect to Target, by the intentions, and says
// why. A matching L7 intention denies: its permissions are enforced per
// request by the proxy. With no matching intention, intentionDefault
// decides.
// A client agent answers from its cache of the servers' intentions.
func (a *API) agentConnectAuthorize(w http.ResponseWriter, r *http.Request) (any, error) {
	var req AuthorizeRequest
	raw, err := readLimitedBody(r, 64<<10)
	if err != nil {
		return nil, err
	}
	if err := structs.DecodeJSON(bytes.NewReader(raw), &req); err != nil {
		return nil, badRequest("Request decode failed: %v", err)
	}
	if req.Target == "" {
		return nil, badRequest("Target service must be specified")
	}
	if req.ClientCertURI == "" {
		return nil, badRequest("ClientCertURI must be specified")
	}
	id, err := connect.ParseServiceID(req.ClientCertURI)
	if err != nil {
		return nil, badRequest("ClientCertURI not a valid Connect service identifier: %v", err)
	}
	set, mesh, err := a.authorizeSet(r.Context(), req.Target)
	if err != nil {
		return nil, err
	}
	allow, reason := a.intentionDefault(mesh)
	d := set.L4(id.Service, req.Target, allow)
	resp := &AuthorizeResponse{Authorized: d.Allowed, Reason: reason}
	switch {
	case d.Matched && d.Rule.L7():
		resp.Reason = "Matched L7 intention: " + d.Rule.String()
	case d.Matched:
		resp.Reason = "Matched L4 intention: " + d.Rule.String()
	}
	return resp, nil
}

// authorizeSet returns the intentions that apply to target and the mesh
// entry (nil when none is stored): from the store on a server, from the
// agent's cache on a client agent.
func (a *API) authorizeSet(ctx context.Context, target string) (*intention.Set, *configentry.MeshConfigEntry, error) {
	if a.deps.Server != nil || a.deps.RemoteIntentions == nil {
		rt := a.deps.Store.Read()
		defer rt.Abort()
		_, set, err := destinationSet(nil, rt, target)
		if err != nil {
			return nil, nil, err
		}
		mesh, err := meshEntry(nil, rt)
		return set, mesh, err
	}
	entries, mesh, err := a.deps.RemoteIntentions(ctx)
	if err != nil {
		return nil, nil, err
	}
	var mine []*configentry.ServiceIntentionsConfigEntry
	for _, e := range entries {
		if e.Name == target || e.Name == configentry.WildcardName {
			mine = append(mine, e)
		}
	}
	return intention.NewSet(mine), mesh, nil
}
