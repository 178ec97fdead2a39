package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func kvKey(r *http.Request) string { return r.URL.Path[len(kvPrefix):] }

func (a *API) kvGet(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	key := kvKey(r)
	q := r.URL.Query()
	_, recurse := q["recurse"]
	_, keys := q["keys"]
	_, raw := q["raw"]
	sep := q.Get("separator")
	var res any
	var err error
	switch {
	case keys:
		res, err = a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
			return wrapKeys(rt.KVKeys(ws, key, sep))
		})
		if err == nil && len(res.([]string)) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return nil, nil
		}
	case recurse:
		res, err = a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
			idx, entries, err := rt.KVList(ws, key)
			return idx, entries, err
		})
		if err == nil && len(res.([]*structs.DirEntry)) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return nil, nil
		}
	default:
		res, err = a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
			idx, e, err := rt.KVGet(ws, key)
			if e == nil {
				return idx, []*structs.DirEntry{}, err
			}
			return idx, []*structs.DirEntry{e}, err
		})
		if err != nil {
			return nil, err
		}
		entries := res.([]*structs.DirEntry)
		if len(entries) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return nil, nil
		}
		if raw {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			return rawBody(entries[0].Value), nil
		}
	}
	return res, err
}

func wrapKeys(idx uint64, keys []string, err error) (uint64, any, error) {
	return idx, keys, err
}

func (a *API) kvPut(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	key := kvKey(r)
	if key == "" {
		return nil, badRequest("Missing key name")
	}
	q := r.URL.Query()
	e := &structs.DirEntry{Key: key}
	if v := q.Get("flags"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("Invalid flags: %v", err)
		}
		e.Flags = f
	}
	op := state.KVSet
	if _, ok := q["cas"]; ok {
		cas, err := strconv.ParseUint(q.Get("cas"), 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %v", err)
		}
		e.ModifyIndex = cas
		op = state.KVCAS
	}
	_, acquire := q["acquire"]
	_, release := q["release"]
	switch {
	case acquire && release:
		return nil, badRequest("Conflicting flags: acquire and release")
	case acquire:
		e.Session, op = q.Get("acquire"), state.KVLock
	case release:
		e.Session, op = q.Get("release"), state.KVUnlock
	}
	if (acquire || release) && e.Session == "" {
		return nil, badRequest("Missing session for %s", op)
	}
	body, err := readBody(r, int64(a.deps.MaxKVSize))
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		e.Value = body
	}
	ok, err := a.deps.Server.KVSApply(op, e)
	if err != nil {
		return nil, err
	}
	return ok, nil
}

// readBody reads a request body of at most limit bytes; a larger one is a
// 413 and is not used at all.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("reading body: %v", err)
	}
	if n := max(r.ContentLength, int64(len(body))); n > limit {
		// Read on a little: a client still sending when the server
		// closes the connection gets a reset, not the 413.
		io.CopyN(io.Discard, r.Body, kvDrainLimit)
		return nil, kvTooLarge(n, limit)
	}
	return body, nil
}

// kvDrainLimit is how much of a refused value is read past the limit;
// beyond it the connection is closed under the client.
const kvDrainLimit = 1 << 20

func kvTooLarge(n, max int64) error {
	return httpError{code: http.StatusRequestEntityTooLarge,
		msg: fmt.Sprintf("Request body(%d bytes) too large, max size: %d bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.", n, max)}
}

func (a *API) kvDelete(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	key := kvKey(r)
	q := r.URL.Query()
	e := &structs.DirEntry{Key: key}
	op := state.KVDelete
	if _, ok := q["recurse"]; ok {
		op = state.KVDeleteTree
	} else if key == "" {
		return nil, badRequest("Missing key name")
	}
	if _, ok := q["cas"]; ok {
		if op == state.KVDeleteTree {
			return nil, badRequest("Conflicting flags: cas and recurse")
		}
		cas, err := strconv.ParseUint(q.Get("cas"), 10, 64)
		if err != nil {
			return nil, badRequest("Invalid cas index: %v", err)
		}
		e.ModifyIndex, op = cas, state.KVDeleteCAS
	}
	ok, err := a.deps.Server.KVSApply(op, e)
	if err != nil {
		return nil, err
	}
	return ok, nil
}
