package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// sessionCreateBody is the body of PUT /v1/session/create. LockDelay may
// be a duration string or a number (seconds below 1000, else
// nanoseconds), as Consul accepts.
type sessionCreateBody struct {
	Name          string
	Node          string
	Checks        []string
	NodeChecks    []string
	ServiceChecks []structs.ServiceCheck
	LockDelay     json.RawMessage
	Behavior      string
	TTL           string
}

func (a *API) sessionCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	var body sessionCreateBody
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	sess := &structs.Session{
		Name:          body.Name,
		Node:          body.Node,
		NodeChecks:    body.NodeChecks,
		ServiceChecks: body.ServiceChecks,
		Behavior:      strings.ToLower(body.Behavior),
		TTL:           body.TTL,
		LockDelay:     structs.DefaultLockDelay,
	}
	if sess.Node == "" {
		sess.Node = a.deps.NodeName
		if origin := r.Header.Get(OriginNodeHeader); origin != "" {
			sess.Node = origin // created through a client agent: its node
		}
	}
	for _, c := range body.Checks {
		if !contains(sess.NodeChecks, c) {
			sess.NodeChecks = append(sess.NodeChecks, c)
		}
	}
	if body.Checks == nil && body.NodeChecks == nil && body.ServiceChecks == nil {
		sess.NodeChecks = []string{structs.SerfCheckID}
	}
	if len(body.LockDelay) > 0 {
		d, err := parseLockDelay(body.LockDelay)
		if err != nil {
			return nil, badRequest("Request decode failed: LockDelay: %v", err)
		}
		sess.LockDelay = int64(d)
	}
	if sess.TTL != "" {
		// Normalise "10.0s" and friends to Go's canonical form.
		d, err := server.ParseSessionTTL(sess.TTL)
		if err != nil {
			return nil, err
		}
		sess.TTL = d.String()
		if d == 0 {
			sess.TTL = ""
		}
	}
	id, err := a.deps.Server.SessionCreate(sess)
	if err != nil {
		return nil, err
	}
	return map[string]string{"ID": id}, nil
}

func parseLockDelay(raw json.RawMessage) (time.Duration, error) {
	d, err := structs.ParseDurationJSON(raw)
	if err != nil {
		return 0, err
	}
	if raw[0] != '"' && d < structs.LockDelayThreshold {
		d *= time.Second
	}
	return d, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (a *API) sessionDestroy(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	if id == "" {
		return nil, badRequest("Missing session")
	}
	if err := a.deps.Server.SessionDestroy(id); err != nil {
		return nil, err
	}
	return true, nil
}

func (a *API) sessionRenew(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	sess, err := a.deps.Server.SessionRenew(id)
	if err != nil {
		return nil, err
	}
	if sess == nil {
		return nil, structs.NotFoundError{Reason: fmt.Sprintf("Session id '%s' not found", id)}
	}
	a.setMeta(w, nil)
	return []*structs.Session{sess}, nil
}

func (a *API) sessionInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, s, err := rt.Session(ws, id)
		if s == nil {
			return idx, []*structs.Session{}, err
		}
		return idx, []*structs.Session{s}, err
	})
}

func (a *API) sessionNode(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	node := r.PathValue("node")
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, s, err := rt.Sessions(ws, node)
		return idx, s, err
	})
}

func (a *API) sessionList(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		idx, s, err := rt.Sessions(ws, "")
		return idx, s, err
	})
}
