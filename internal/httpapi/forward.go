package httpapi

import (
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/server"
)

// Forwarder sends an API request to another server and writes that
// server's answer: to the leader, for writes and default reads on a
// follower. The agent implements it over its internal RPC.
type Forwarder interface {
	Forward(w http.ResponseWriter, r *http.Request, addr string) error
}

// ForwardedHeader marks a request that one server forwarded to another: it
// is served where it lands and never forwarded again, so a leadership
// change cannot make a request go round in circles.
const ForwardedHeader = "X-Trellis-Forwarded"

// localPrefixes are served by the agent that receives them, whatever its
// role: they are about that agent.
var localPrefixes = []string{"/v1/agent/", "/v1/event/", "/v1/status/"}

// forwardTarget says where r must be served: here (""), or at the leader's
// address. Writes and default-consistency reads go to the leader; ?stale
// reads are served by any server. With no known leader, a request that
// needs one fails with ErrNotLeader ("No cluster leader").
func (a *API) forwardTarget(r *http.Request) (string, error) {
	srv := a.deps.Server
	if a.deps.Forwarder == nil || srv == nil || r.Header.Get(ForwardedHeader) != "" {
		return "", nil
	}
	for _, p := range localPrefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			return "", nil
		}
	}
	if srv.IsLeader() {
		return "", nil
	}
	if r.Method == http.MethodGet && r.URL.Query().Has("stale") {
		return "", nil
	}
	leader := srv.Leader()
	if leader == "" {
		return "", server.ErrNotLeader
	}
	return leader, nil
}

// serveOrForward serves r here or at the leader.
func (a *API) serveOrForward(w http.ResponseWriter, r *http.Request, local http.Handler) {
	addr, err := a.forwardTarget(r)
	if err != nil {
		a.setMeta(w, nil)
		writeError(w, err)
		return
	}
	if addr == "" {
		local.ServeHTTP(w, r)
		return
	}
	if err := a.deps.Forwarder.Forward(w, r, addr); err != nil {
		writeError(w, err)
	}
}
