package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// maxConfigEntryBody bounds the body of a config entry write.
const maxConfigEntryBody = 1 << 20

func (a *API) configRoutes() {
	a.handle("PUT", "/v1/config", a.configApply)
	a.handle("GET", "/v1/config/{kind}", a.configList)
	a.handle("GET", "/v1/config/{kind}/{name...}", a.configGet)
	a.handle("DELETE", "/v1/config/{kind}/{name...}", a.configDelete)
	a.intentionRoutes() // intention_endpoints.go
}

// casParam reads ?cas=<index>: whether it was given, and the index.
func casParam(r *http.Request) (bool, uint64, error) {
	q := r.URL.Query()
	if _, ok := q["cas"]; !ok {
		return false, 0, nil
	}
	v, err := strconv.ParseUint(q.Get("cas"), 10, 64)
	if err != nil {
		return false, 0, badRequest("Invalid cas index: %q", q.Get("cas"))
	}
	return true, v, nil
}

func readLimitedBody(r *http.Request, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("Request decoding failed: reading body: %v", err)
	}
	if int64(len(raw)) > limit {
		return nil, badRequest("Request decoding failed: body larger than %d bytes", limit)
	}
	return raw, nil
}

// configApply writes the entry in the body (PUT /v1/config) and answers
// true; with ?cas=<index> only when index is the entry's ModifyIndex (0:
// only if there is none), answering whether it did. A body that does not
// decode, names an unknown kind or fails validation is a 400 naming the
// field, and nothing is written.
func (a *API) configApply(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	cas, casIndex, err := casParam(r)
	if err != nil {
		return nil, err
	}
	raw, err := readLimitedBody(r, maxConfigEntryBody)
	if err != nil {
		return nil, err
	}
	e, err := configentry.DecodeJSON(raw)
	if err != nil {
		return nil, badRequest("Request decoding failed: %v", err)
	}
	op := state.ConfigEntryUpsert
	if cas {
		op = state.ConfigEntryUpsertCAS
	}
	return a.deps.Server.ConfigEntryApply(op, "", "", e, casIndex)
}

// configKind reads the {kind} path segment; an unknown kind is a 400.
func configKind(r *http.Request) (string, error) {
	kind := strings.ToLower(r.PathValue("kind"))
	if !configentry.ValidKind(kind) {
		return "", badRequest("%v", configentry.KindError{Kind: r.PathValue("kind")})
	}
	return kind, nil
}

// configList answers the entries of a kind, sorted by name; a blocking
// query.
func (a *API) configList(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	kind, err := configKind(r)
	if err != nil {
		return nil, err
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, entries, err := rt.ConfigEntries(ws, kind)
		if entries == nil {
			entries = []configentry.Entry{}
		}
		return idx, entries, err
	})
}

// configGet answers one entry; a missing one is a 404 with Consul's text.
func (a *API) configGet(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	kind, err := configKind(r)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	res, err := a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, e, err := rt.ConfigEntry(ws, kind, name)
		return idx, e, err
	})
	if err != nil {
		return nil, err
	}
	if e, _ := res.(configentry.Entry); e == nil {
		return nil, structs.NotFoundError{Reason: fmt.Sprintf("Config entry not found for %q / %q", kind, name)}
	}
	return res, nil
}

// configDelete deletes one entry and answers {} (deleting a missing
// entry succeeds); with ?cas=<index> only when index is its ModifyIndex,
// answering whether it did (false for a missing entry).
func (a *API) configDelete(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	kind, err := configKind(r)
	if err != nil {
		return nil, err
	}
	cas, casIndex, err := casParam(r)
	if err != nil {
		return nil, err
	}
	op := state.ConfigEntryDelete
	if cas {
		op = state.ConfigEntryDeleteCAS
	}
	ok, err := a.deps.Server.ConfigEntryApply(op, kind, r.PathValue("name"), nil, casIndex)
	if err != nil || cas {
		return ok, err
	}
	return struct{}{}, nil // Consul answers {} to a delete without ?cas
}
