// Package httpapi serves Trellis's HTTP API: Consul's /v1 paths, JSON
// shapes, status codes and headers. Reads come from the state store, with
// blocking queries; writes go to the raft server or the local agent.
//
// Handler contract: a handler returns (body, error). A nil error with a
// non-nil body is written as JSON with 200; a structs.BadRequestError is
// 400, a structs.NotFoundError 404, anything else 500, each with the
// error's text as a plain-text body.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Blocking query bounds, as Consul's.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// Deps is what the API needs.
type Deps struct {
	Store      *state.Store
	Server     *server.Server
	Agent      Agent
	Datacenter string
	NodeName   string
	Logger     *slog.Logger
	// MaxKVSize is the largest KV value accepted; 0 means structs.MaxKVSize.
	MaxKVSize int
	// Forwarder, when set, sends what a follower must not serve itself to
	// the leader, and what a client agent cannot serve to a server.
	Forwarder Forwarder
	// Servers lists the RPC addresses of live servers; a client agent
	// (Server nil) forwards to them.
	Servers func() []string
	// DatacenterServers lists the RPC addresses of the live servers of
	// another datacenter, from the WAN pool; ?dc= requests go there.
	DatacenterServers func(dc string) []string
	// Blocked, when set, counts the blocking queries waiting right now.
	Blocked interface{ Add(float64) }
	// IntentionDefaultDeny makes connections no intention matches denied
	// (acl.enabled with acl.default_policy "deny"); they are allowed
	// otherwise. See intention_endpoints.go.
	IntentionDefaultDeny bool
	// RemoteIntentions, on a client agent, returns the datacenter's
	// service-intentions entries and mesh entry (nil when none) from the
	// agent's cache of the servers'.
	RemoteIntentions func(ctx context.Context) ([]*configentry.ServiceIntentionsConfigEntry, *configentry.MeshConfigEntry, error)
	// ConnectCA serves /v1/agent/connect/ca/*; see connect_ca_endpoints.go.
	ConnectCA AgentCA
}

// API is the /v1 HTTP handler.
type API struct {
	deps Deps
	mux  *http.ServeMux
	kv   map[string]http.Handler // by method
	log  *slog.Logger
}

// New builds the handler.
func New(deps Deps) *API {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.MaxKVSize == 0 {
		deps.MaxKVSize = structs.MaxKVSize
	}
	a := &API{deps: deps, mux: http.NewServeMux(), log: deps.Logger.With("component", "http")}
	a.routes()
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.serveOrForward(w, r, http.HandlerFunc(a.serveLocal))
}

// serveLocal serves r from this agent's own state.
func (a *API) serveLocal(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, kvPrefix) {
		h, ok := a.kv[r.Method]
		if !ok {
			methodNotAllowed("GET, PUT, DELETE").ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
		return
	}
	a.mux.ServeHTTP(w, r)
}

const kvPrefix = "/v1/kv/"

// methodNotAllowed answers 405 naming the allowed methods, as ServeMux
// does for paths it knows under other methods.
func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		http.Error(w, fmt.Sprintf("method %s not allowed", r.Method), http.StatusMethodNotAllowed)
	})
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

// handle registers fn under each of the space-separated methods for path
// ("GET", "/v1/x"). Writes register PUT alone, as Consul's do: any other
// method gets ServeMux's 405.
func (a *API) handle(methods string, path string, fn handlerFunc) {
	h := a.wrap(fn)
	for _, m := range strings.Fields(methods) {
		a.mux.Handle(m+" "+path, h)
	}
}

func (a *API) wrap(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := fn(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		if body == nil {
			return
		}
		if raw, ok := body.(rawBody); ok {
			w.Write(raw)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		if _, ok := r.URL.Query()["pretty"]; ok {
			enc.SetIndent("", "    ")
		}
		if err := enc.Encode(body); err != nil {
			a.log.Debug("writing response", "path", r.URL.Path, "error", err)
		}
	})
}

// rawBody is written as is, with headers set by the handler.
type rawBody []byte

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he httpError
	switch {
	case errors.As(err, &he):
		code = he.code
	case structs.IsBadRequest(err):
		code = http.StatusBadRequest
	case structs.IsNotFound(err):
		code = http.StatusNotFound
	case errors.Is(err, server.ErrNotLeader):
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprint(w, err.Error())
}

// httpError carries an exact status code.
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return structs.BadRequestError{Reason: fmt.Sprintf(format, args...)}
}

// queryOpts are the read options every GET accepts.
type queryOpts struct {
	minIndex   uint64
	wait       time.Duration
	stale      bool
	consistent bool
	filter     *bexpr.Evaluator
}

func parseQuery(r *http.Request) (*queryOpts, error) {
	q := r.URL.Query()
	o := &queryOpts{}
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, badRequest("Invalid index: %q", v)
		}
		o.minIndex = idx
	}
	if v := q.Get("wait"); v != "" {
		d, err := structs.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, badRequest("Invalid wait time")
		}
		o.wait = d
	}
	_, o.stale = q["stale"]
	_, o.consistent = q["consistent"]
	if o.stale && o.consistent {
		return nil, badRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
	}
	if f := q.Get("filter"); f != "" {
		ev, err := bexpr.CreateEvaluator(f)
		if err != nil {
			return nil, badRequest("Failed to create boolean expression evaluator: %v", err)
		}
		o.filter = ev
	}
	return o, nil
}

// queryFunc reads from the store, adding what it read to ws, and returns
// the index of the result and the result.
type queryFunc func(ws memdb.WatchSet, r *state.ReadTxn) (uint64, any, error)

// blocking runs fn as a Consul blocking query: when ?index= is given it
// waits until fn's index rises above it or the wait time passes, then
// writes the query headers and returns fn's last result.
func (a *API) blocking(w http.ResponseWriter, r *http.Request, o *queryOpts, fn queryFunc) (any, error) {
	if o == nil {
		var err error
		if o, err = parseQuery(r); err != nil {
			return nil, err
		}
	}
	if o.consistent {
		if err := a.deps.Server.VerifyLeader(); err != nil {
			return nil, err
		}
	}
	ctx := r.Context()
	if o.minIndex > 0 {
		var cancel context.CancelFunc
		ctx, cancel = waitContext(ctx, o.wait)
		defer cancel()
		if g := a.deps.Blocked; g != nil {
			g.Add(1)
			defer g.Add(-1)
		}
	}
	for {
		ws := memdb.NewWatchSet()
		ws.Add(a.deps.Store.AbandonCh())
		rt := a.deps.Store.Read()
		idx, res, err := fn(ws, rt)
		rt.Abort()
		if err != nil {
			return nil, err
		}
		if idx < 1 {
			// Index 0 would make clients spin; raft never commits at 1.
			idx = 1
		}
		if o.minIndex == 0 || idx > o.minIndex {
			return a.finish(w, o, idx, res)
		}
		if err := ws.WatchCtx(ctx); err != nil {
			// Timed out (or the client left): answer with what we have.
			return a.finish(w, o, idx, res)
		}
	}
}

// waitContext bounds a blocking query: the requested wait (default 5
// minutes, at most 10) plus a jitter of up to wait/16 that spreads out the
// wake-ups of many watchers.
func waitContext(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	if wait == 0 {
		wait = defaultWait
	}
	if wait > maxWait {
		wait = maxWait
	}
	wait += time.Duration(rand.Int64N(int64(wait)/16 + 1))
	return context.WithTimeout(ctx, wait)
}

func (a *API) finish(w http.ResponseWriter, o *queryOpts, idx uint64, res any) (any, error) {
	setIndex(w, idx)
	a.setMeta(w, o)
	if o.filter != nil {
		var err error
		if res, err = applyFilter(o.filter, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func setIndex(w http.ResponseWriter, idx uint64) {
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
}

func (a *API) setMeta(w http.ResponseWriter, o *queryOpts) {
	h := w.Header()
	if srv := a.deps.Server; srv != nil {
		h.Set("X-Consul-KnownLeader", strconv.FormatBool(srv.Leader() != ""))
		h.Set("X-Consul-LastContact", strconv.FormatInt(srv.LastContact().Milliseconds(), 10))
	}
	switch {
	case o != nil && o.stale:
		h.Set("X-Consul-Effective-Consistency", "stale")
	case o != nil && o.consistent:
		h.Set("X-Consul-Effective-Consistency", "consistent")
	default:
		h.Set("X-Consul-Effective-Consistency", "leader")
	}
}

// applyFilter keeps the elements of a slice (or the values of a map) that
// match the filter expression.
func applyFilter(ev *bexpr.Evaluator, res any) (any, error) {
	switch v := res.(type) {
	case []*structs.Node:
		return filterSlice(ev, v)
	case []*structs.ServiceNode:
		return filterSlice(ev, v)
	case []*structs.CheckServiceNode:
		return filterSlice(ev, v)
	case []*structs.HealthCheck:
		return filterSlice(ev, v)
	case []*structs.NodeService:
		return filterSlice(ev, v)
	case []*structs.DirEntry:
		return filterSlice(ev, v)
	case []*structs.Session:
		return filterSlice(ev, v)
	case map[string]*structs.NodeService:
		out := make(map[string]*structs.NodeService, len(v))
		for k, s := range v {
			ok, err := ev.Evaluate(s)
			if err != nil {
				return nil, badRequest("filter: %v", err)
			}
			if ok {
				out[k] = s
			}
		}
		return out, nil
	case map[string]*structs.HealthCheck:
		out := make(map[string]*structs.HealthCheck, len(v))
		for k, c := range v {
			ok, err := ev.Evaluate(c)
			if err != nil {
				return nil, badRequest("filter: %v", err)
			}
			if ok {
				out[k] = c
			}
		}
		return out, nil
	case *structs.NodeServices:
		if v == nil {
			return v, nil
		}
		svcs, err := applyFilter(ev, v.Services)
		if err != nil {
			return nil, err
		}
		return &structs.NodeServices{Node: v.Node, Services: svcs.(map[string]*structs.NodeService)}, nil
	case *structs.NodeServiceList:
		if v == nil {
			return v, nil
		}
		svcs, err := filterSlice(ev, v.Services)
		if err != nil {
			return nil, err
		}
		return &structs.NodeServiceList{Node: v.Node, Services: svcs}, nil
	}
	return res, nil
}

func filterSlice[T any](ev *bexpr.Evaluator, in []T) ([]T, error) {
	out := make([]T, 0, len(in))
	for _, x := range in {
		ok, err := ev.Evaluate(x)
		if err != nil {
			return nil, badRequest("filter: %v", err)
		}
		if ok {
			out = append(out, x)
		}
	}
	return out, nil
}

// decodeBody decodes a JSON request body; a malformed body is a 400.
func decodeBody(r *http.Request, out any) error {
	if err := structs.DecodeJSON(r.Body, out); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// nodeMetaFilter parses repeated ?node-meta=key:value.
func nodeMetaFilter(r *http.Request) map[string]string {
	vals := r.URL.Query()["node-meta"]
	if len(vals) == 0 {
		return nil
	}
	out := make(map[string]string, len(vals))
	for _, v := range vals {
		k, val, _ := strings.Cut(v, ":")
		out[k] = val
	}
	return out
}

func metaMatches(meta, want map[string]string) bool {
	for k, v := range want {
		if got, ok := meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func hasTags(have []string, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
