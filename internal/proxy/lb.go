package proxy

import (
	"sync/atomic"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// The seam for load balancing and resiliency. A cluster chooses its
// hosts through a picker and asks its guard before it sends a request,
// retries or opens a connection, and tells it how each attempt ended.
// Both are a balancer (balancer.go): the cluster's lb_policy,
// circuit_breakers and outlier_detection applied by package balance,
// with state that a cluster keeps across Configs.

// host is one endpoint of a cluster. The balancer keeps the same *host
// for an address across Configs while the address stays listed, so a
// host's counts and outlier state carry over an Apply.
type host struct {
	addr string // host:port
	// bh is the balancer's view of the host: requests in flight (what
	// least-request balancing reads) and outlier state.
	bh *balance.Host
	// active counts the attempts in flight to the host (started, not
	// ended).
	active atomic.Int64
}

// pickRequest is what a request asks of its cluster's picker.
type pickRequest struct {
	// hash is the request's hash key (the route's hash policies), valid
	// if hasHash: the input of ring hash and maglev.
	hash    uint64
	hasHash bool
	// exclude, if not nil, rejects hosts (retry_host_predicate
	// previous_hosts rejects those already tried). The balancer honours
	// it whenever a host it does not reject is available, which covers
	// Envoy's host_selection_retry_max_attempts re-picks (attempts is
	// their number; the balancer need not count them).
	exclude  func(*host) bool
	attempts int
}

// picker chooses a cluster's host for each request (and each tcp_proxy
// connection). It returns nil when the cluster has no host to offer. It
// must be safe for concurrent use; pick is on the request path and
// should not allocate.
type picker interface {
	pick(req pickRequest) *host
}

// failure is how an attempt ended without a response.
type failure uint8

const (
	failNone     failure = iota
	failConnect          // no connection: refused, unreachable, connect timeout, TLS handshake
	failReset            // the connection or stream ended before the response headers
	failTimeout          // the per-try timeout fired before the response headers
	failOverflow         // the guard refused a connection: nothing was sent
	failCanceled         // the route timeout fired or the downstream went away
)

// outcome is what an attempt on a host came to: a response status, or a
// failure. Outlier detection counts 5xx statuses and, as gateway errors,
// 502, 503, 504 and the failures connect, reset and timeout.
type outcome struct {
	status  int // 0 when failure is not failNone
	failure failure
}

// gatewayError reports whether o is a gateway failure in Envoy's sense.
func (o outcome) gatewayError() bool {
	switch o.failure {
	case failConnect, failReset, failTimeout:
		return true
	}
	return o.status == 502 || o.status == 503 || o.status == 504
}

// result is what outlier detection makes of o; false when o says
// nothing of the host: an overflow sent nothing to it, and a cancelled
// attempt was ended by the downstream or the route timeout, not by the
// host.
func (o outcome) result() (balance.Outcome, bool) {
	switch o.failure {
	case failNone:
		return balance.Status(o.status), true
	case failConnect:
		return balance.ConnectFailure, true
	case failReset:
		return balance.Reset, true
	case failTimeout:
		return balance.Timeout, true
	}
	return balance.Success, false
}

// guard is a cluster's admission control and accounting: circuit
// breakers (max_connections, max_pending_requests, max_requests,
// max_retries or the retry budget) and outlier detection. Its methods
// are called on the request path, concurrently, and must be cheap.
//
// Every admitX that returns true is matched by one XDone (or
// connectionClosed) call; a false one is not, and the proxy counts it in
// trellis_proxy_upstream_overflow_total{kind}: "requests" answers the
// request 503 with x-envoy-overloaded, "retries" ends the retries with
// the last response, "connections" makes an HTTP request wait for a
// connection as a pending request (a guard that is a connWaiter; one
// that is not, and a tcp_proxy connection, fail the attempt at once: a
// connect failure that is not retried), "pending" fails a request that
// would have waited beyond max_pending_requests.
type guard interface {
	// admitRequest is asked once per downstream request routed to the
	// cluster, before any host is picked.
	admitRequest() bool
	requestDone()
	// admitRetry is asked before each retry; retryDone is called when the
	// retry's attempt ended.
	admitRetry() bool
	retryDone()
	// admitConnection is asked before a new upstream connection to h is
	// dialled; connectionClosed is called once it is closed (or its dial
	// failed).
	admitConnection(h *host) bool
	connectionClosed(h *host)
	// attemptStarted and attemptEnded bracket each attempt on h (the
	// first try and each retry of a request, or a tcp_proxy connect):
	// attemptEnded comes after the response body ended or the attempt
	// failed.
	attemptStarted(h *host)
	attemptEnded(h *host, o outcome)
}

// admitAll is a guard with no limits and no ejections, for tests that
// replace a cluster's guard.
type admitAll struct{}

func (admitAll) admitRequest() bool          { return true }
func (admitAll) requestDone()                {}
func (admitAll) admitRetry() bool            { return true }
func (admitAll) retryDone()                  {}
func (admitAll) admitConnection(*host) bool  { return true }
func (admitAll) connectionClosed(*host)      {}
func (admitAll) attemptStarted(*host)        {}
func (admitAll) attemptEnded(*host, outcome) {}
