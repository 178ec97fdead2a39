package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/server"
)

// Forwarder sends an API request to another server and writes that
// server's answer: to the leader, for writes and default reads on a
// follower; to any server, for everything a client agent does not serve
// itself. The agent implements it over its internal RPC.
type Forwarder interface {
	// Forward tries addrs in order, moving on only when a server could
	// not be reached. final marks the request so that the server that
	// gets it serves it itself.
	Forward(w http.ResponseWriter, r *http.Request, addrs []string, final bool) error
}

// OriginNodeHeader names the agent a request was first sent to, so that
// defaults that depend on it (a session's node) stay that agent's when a
// server serves the request.
const OriginNodeHeader = "X-Trellis-Origin-Node"

// ForwardedHeader marks a request that one server forwarded to another: it
// is served where it lands and never forwarded again, so a leadership
// change cannot make a request go round in circles.
const ForwardedHeader = "X-Trellis-Forwarded"

// localPrefixes are served by the agent that receives them, whatever its
// role: they are about that agent. A client agent has no raft state, so it
// forwards /v1/status/ too.
var localPrefixes = []string{"/v1/agent/", "/v1/event/"}

// leaderOnly are reads only the leader can answer, ?stale or not: only it
// runs autopilot. Consul's client always sends them to the leader.
var leaderOnly = map[string]bool{
	"/v1/operator/autopilot/health": true,
	"/v1/operator/autopilot/state":  true,
}

// target is where a request is served: here (addrs nil), or at the first
// of addrs that answers.
type target struct {
	addrs []string
	// final marks the request so the server that gets it serves it.
	final bool
	// remote: addrs are servers of another datacenter.
	remote bool
}

// errNoPath is the answer for a datacenter no server knows of.
var errNoPath = errors.New("No path to datacenter")

// forwardTarget says where r must be served: here, at the leader, at a
// server of another datacenter (?dc=), or, on a client agent, at any
// server (final is false then, so that a follower passes writes on).
// Writes and default-consistency reads go to the leader; ?stale reads are
// served by any server. With no known leader, a request that needs one
// fails with ErrNotLeader ("No cluster leader").
func (a *API) forwardTarget(r *http.Request) (target, error) {
	if dc := r.URL.Query().Get("dc"); dc != "" && !strings.EqualFold(dc, a.deps.Datacenter) &&
		!strings.HasPrefix(r.URL.Path, "/v1/agent/") && r.URL.Path != "/v1/event/list" {
		return a.remoteTarget(strings.ToLower(dc))
	}
	if a.deps.Forwarder == nil || r.Header.Get(ForwardedHeader) != "" {
		return target{}, nil
	}
	for _, p := range localPrefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			return target{}, nil
		}
	}
	srv := a.deps.Server
	if srv == nil {
		servers := a.deps.Servers()
		if len(servers) == 0 {
			return target{}, errNoServers
		}
		return target{addrs: servers}, nil
	}
	if strings.HasPrefix(r.URL.Path, "/v1/status/") || srv.IsLeader() {
		return target{}, nil
	}
	if r.Method == http.MethodGet && r.URL.Query().Has("stale") && !leaderOnly[r.URL.Path] {
		return target{}, nil
	}
	leader := srv.Leader()
	if leader == "" {
		return target{}, server.ErrNotLeader
	}
	return target{addrs: []string{leader}, final: true}, nil
}

// remoteTarget sends a request for datacenter dc to that datacenter's
// servers, which the WAN pool lists; a client agent passes it to its own
// servers, which know the way. The receiving server serves it as any
// request of its own datacenter (forwarding to its leader if need be).
func (a *API) remoteTarget(dc string) (target, error) {
	if a.deps.Forwarder == nil {
		return target{}, errNoPath
	}
	if a.deps.Server == nil {
		servers := a.deps.Servers()
		if len(servers) == 0 {
			return target{}, errNoServers
		}
		return target{addrs: servers}, nil
	}
	if a.deps.DatacenterServers == nil {
		return target{}, errNoPath
	}
	addrs := a.deps.DatacenterServers(dc)
	if len(addrs) == 0 {
		return target{}, errNoPath
	}
	return target{addrs: addrs, remote: true}, nil
}

// errNoServers is a client agent's answer when it knows no live server.
var errNoServers = errors.New("No known Consul servers")

// holdTimeout is how long a request waits for a leader (or for another
// server) before failing: Consul's rpc_hold_timeout. A leader election
// takes a second or two; clients should not see it as errors.
const holdTimeout = 7 * time.Second

// serveOrForward serves r here or where forwardTarget says. While there
// is no leader, or the server it was sent to cannot be reached (so it was
// never served), the request is held and tried again, for up to
// holdTimeout.
func (a *API) serveOrForward(w http.ResponseWriter, r *http.Request, local http.Handler) {
	deadline := time.Now().Add(holdTimeout)
	var body []byte
	bodyRead := false
	for {
		t, err := a.forwardTarget(r)
		if err == nil && t.addrs == nil {
			if bodyRead {
				// An earlier attempt read the body: this server became
				// the leader meanwhile and serves the request itself.
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			local.ServeHTTP(w, r)
			return
		}
		if err == nil {
			if !bodyRead {
				// Kept, so that the request can be sent again.
				if body, err = io.ReadAll(io.LimitReader(r.Body, rpc.MaxBodyBytes+1)); err != nil {
					writeError(w, badRequest("reading body: %v", err))
					return
				}
				bodyRead = true
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			// Servers set it too: a follower passing a request to the
			// leader is still the agent the client asked (?near=_agent,
			// a session's node).
			if r.Header.Get(OriginNodeHeader) == "" {
				r.Header.Set(OriginNodeHeader, a.deps.NodeName)
			}
			if err = a.deps.Forwarder.Forward(w, r, t.addrs, t.final); err == nil {
				return
			}
		}
		retry := errors.Is(err, server.ErrNotLeader) || rpc.NeverSent(err)
		if !retry || time.Now().After(deadline) || r.Context().Err() != nil {
			switch {
			case retry && t.remote:
				err = fmt.Errorf("%w: no server of it answered: %v", errNoPath, err)
			case retry && a.deps.Server != nil:
				err = server.ErrNotLeader // the leader we knew is gone; no new one yet
			}
			if a.deps.Server != nil {
				a.setMeta(w, nil)
			}
			writeError(w, err)
			return
		}
		select {
		case <-r.Context().Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
