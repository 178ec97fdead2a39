package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// ConnectCASignPath is where the leader signs an agent's CSR
// (structs.CASignRequest → structs.IssuedCert). It is internal: served
// only to a request that carries InternalHeader, which the agent strips
// from every request on the public HTTP API, so only a request that came
// over the internal RPC (an agent's, relayed by servers as any write to
// the leader) reaches it; anything else gets 404. The internal RPC port
// is as trusted as raft's, on which it runs. Without ACLs this grants no
// more than /v1/agent/connect/ca/leaf does to any API client.
const ConnectCASignPath = "/v1/internal/connect/ca/sign"

// InternalHeader marks a request an agent sent over the internal RPC to
// an internal endpoint; the public HTTP API strips it.
const InternalHeader = "X-Trellis-Internal"

// maxCABody bounds CA request bodies: a configuration with a supplied
// root and key, or a CSR.
const maxCABody = 256 << 10

// AgentCA is the local agent's Connect CA client: the roots it keeps
// fresh and the leaves it caches and renews. *agent.Agent implements it.
type AgentCA interface {
	// ConnectCARoots returns the roots once their index is above
	// minIndex, or what it has when ctx ends, with their index.
	ConnectCARoots(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error)
	// ConnectCALeaf returns service's leaf once its ModifyIndex is above
	// minIndex, or the current one when ctx ends; hit says whether it
	// was served from the cache without a signing.
	ConnectCALeaf(ctx context.Context, service string, minIndex uint64) (leaf *structs.IssuedCert, hit bool, err error)
}

func (a *API) connectCARoutes() {
	a.handle("GET", "/v1/connect/ca/roots", a.connectCARoots)
	a.handle("GET", "/v1/connect/ca/configuration", a.connectCAGetConfig)
	a.handle("PUT", "/v1/connect/ca/configuration", a.connectCASetConfig)
	a.handle("PUT", ConnectCASignPath, a.connectCASign)
	a.handle("GET", "/v1/agent/connect/ca/roots", a.agentConnectCARoots)
	a.handle("GET", "/v1/agent/connect/ca/leaf/{service...}", a.agentConnectCALeaf)
}

// connectServer returns the server, or Consul's error when connect is
// off. A client agent forwards these paths, so Server is set wherever
// they are served.
func (a *API) connectServer() (*server.Server, error) {
	srv := a.deps.Server
	if srv == nil {
		return nil, errNoServers
	}
	if !srv.ConnectEnabled() {
		return nil, server.ErrConnectNotEnabled
	}
	return srv, nil
}

// CARootsQuery reads the roots as /v1/connect/ca/roots answers them,
// with the index of the last change to the CA; nil roots before the CA
// is set up.
func CARootsQuery(ws memdb.WatchSet, r *state.ReadTxn) (uint64, *structs.IndexedCARoots, error) {
	ci, cfg, err := r.CAConfig(ws)
	if err != nil {
		return 0, nil, err
	}
	ri, roots, err := r.CARoots(ws)
	if err != nil {
		return 0, nil, err
	}
	out := &structs.IndexedCARoots{Roots: []*structs.CARoot{}}
	if cfg != nil {
		out.TrustDomain = connect.TrustDomain(cfg.ClusterID)
	}
	for _, root := range roots {
		c := *root
		c.SigningKey = "" // never leaves the store; JSON hides it anyway
		if c.Active {
			out.ActiveRootID = c.ID
		}
		out.Roots = append(out.Roots, &c)
	}
	return max(ci, ri), out, nil
}

// connectCARoots answers the trusted roots, as a blocking query; with
// ?pem=true, the root certificates as one PEM bundle
// (application/pem-certificate-chain), as Consul.
func (a *API) connectCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	srv, err := a.connectServer()
	if err != nil {
		return nil, err
	}
	if !r.URL.Query().Has("index") {
		// Right after a cluster starts, its leader is still making the
		// root: wait a moment for it rather than answer no roots. After
		// the wait, no roots is the answer.
		if err := srv.WaitConnectCA(); err != nil && !errors.Is(err, server.ErrCANotInitialized) {
			return nil, err
		}
	}
	if v := r.URL.Query().Get("pem"); v != "" {
		pemOut, err := strconv.ParseBool(v)
		if err != nil {
			return nil, badRequest("Invalid pem value: %q", v)
		}
		if pemOut {
			rt := a.deps.Store.Read()
			idx, roots, err := CARootsQuery(nil, rt)
			rt.Abort()
			if err != nil {
				return nil, err
			}
			var b strings.Builder
			for _, root := range roots.Roots {
				b.WriteString(strings.TrimSpace(root.RootCert))
				b.WriteString("\n")
			}
			setIndex(w, max(idx, 1))
			a.setMeta(w, nil)
			w.Header().Set("Content-Type", "application/pem-certificate-chain")
			return rawBody(b.String()), nil
		}
	}
	return a.blocking(w, r, nil, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
		return CARootsQuery(ws, rt)
	})
}

func (a *API) connectCAGetConfig(w http.ResponseWriter, r *http.Request) (any, error) {
	srv, err := a.connectServer()
	if err != nil {
		return nil, err
	}
	cfg, err := srv.ConnectCAConfiguration()
	if err != nil {
		return nil, err
	}
	setIndex(w, max(cfg.ModifyIndex, 1))
	a.setMeta(w, nil)
	return cfg, nil
}

// connectCASetConfig replaces the CA configuration (see
// server.ConnectCASetConfiguration). A body that does not decode, or a
// configuration that is not valid, is a 400 naming the field, and nothing
// changes. It answers 200 with no body, as Consul.
func (a *API) connectCASetConfig(w http.ResponseWriter, r *http.Request) (any, error) {
	srv, err := a.connectServer()
	if err != nil {
		return nil, err
	}
	var cfg structs.CAConfiguration
	if err := decodeCABody(r.Body, &cfg); err != nil {
		return nil, err
	}
	if err := srv.ConnectCASetConfiguration(&cfg); err != nil {
		return nil, err
	}
	return nil, nil
}

// decodeCABody decodes a JSON object body; an empty, oversized or
// malformed body is a 400.
func decodeCABody(body io.Reader, out any) error {
	raw, err := io.ReadAll(io.LimitReader(body, maxCABody+1))
	if err != nil {
		return badRequest("Request decode failed: reading body: %v", err)
	}
	if len(raw) > maxCABody {
		return badRequest("Request decode failed: body larger than %d bytes", maxCABody)
	}
	if t := strings.TrimSpace(string(raw)); t == "" || t[0] != '{' {
		return badRequest("Request decode failed: body must be a JSON object")
	}
	if err := structs.DecodeJSON(strings.NewReader(string(raw)), out); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// connectCASign signs an agent's CSR on the leader; see ConnectCASignPath.
func (a *API) connectCASign(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Header.Get(InternalHeader) == "" {
		return nil, errPageNotFound
	}
	srv, err := a.connectServer()
	if err != nil {
		return nil, err
	}
	var req structs.CASignRequest
	if err := decodeCABody(r.Body, &req); err != nil {
		return nil, err
	}
	return srv.ConnectCASign(req.CSR, req.Service)
}

// agentConnectCARoots answers the roots as the local agent has them,
// kept fresh from the servers; a blocking query waits for a change.
func (a *API) agentConnectCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	ca, o, ctx, cancel, err := a.agentCA(r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	roots, idx, err := ca.ConnectCARoots(ctx, o.minIndex)
	if err != nil {
		return nil, err
	}
	setIndex(w, max(idx, 1))
	a.setMeta(w, o)
	return roots, nil
}

// agentConnectCALeaf answers the leaf certificate of a service, signed
// for a key made on this agent, from the agent's cache (X-Cache: HIT) or
// signed now (MISS). X-Consul-Index is the leaf's ModifyIndex; a
// blocking query returns when the leaf is renewed or re-issued (root
// rotation).
func (a *API) agentConnectCALeaf(w http.ResponseWriter, r *http.Request) (any, error) {
	service := r.PathValue("service")
	if service == "" {
		return nil, badRequest("Missing service name")
	}
	ca, o, ctx, cancel, err := a.agentCA(r)
	if err != nil {
		return nil, err
	}
	defer cancel()
	leaf, hit, err := ca.ConnectCALeaf(ctx, service, o.minIndex)
	if err != nil {
		return nil, err
	}
	if hit {
		w.Header().Set("X-Cache", "HIT")
	} else {
		w.Header().Set("X-Cache", "MISS")
	}
	setIndex(w, max(leaf.ModifyIndex, 1))
	a.setMeta(w, o)
	return leaf, nil
}

func (a *API) agentCA(r *http.Request) (AgentCA, *queryOpts, context.Context, context.CancelFunc, error) {
	ca := a.deps.ConnectCA
	if ca == nil {
		return nil, nil, nil, nil, errors.New("agent: Connect CA client not configured")
	}
	o, err := parseQuery(r)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := r.Context(), context.CancelFunc(func() {})
	if o.minIndex > 0 {
		ctx, cancel = waitContext(ctx, o.wait)
	}
	return ca, o, ctx, cancel, nil
}
