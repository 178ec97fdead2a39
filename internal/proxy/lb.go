package proxy

import (
	"sync/atomic"
)

// The seam for load balancing and resiliency. A cluster chooses its
// hosts through a picker and asks its guard before it sends a request,
// retries or opens a connection, and tells it how each attempt ended.
// This increment implements them as round robin over the healthy hosts
// and a guard that always admits; the cluster's lb_policy,
// circuit_breakers and outlier_detection are parsed into cluster.lb,
// cluster.limits and cluster.outlier for the implementations that will
// honour them (see compileCluster).

// host is one endpoint of a cluster. A host belongs to one applied
// Config: the next Apply makes new ones.
type host struct {
	addr   string // host:port
	weight uint32 // load_balancing_weight, at least 1
	// active counts the attempts in flight to the host (started, not
	// ended): what least-request balancing reads.
	active atomic.Int64
}

// pickRequest is what a request asks of its cluster's picker.
type pickRequest struct {
	// hash is the request's hash key (the route's hash policies), valid
	// if hasHash: the input of ring hash and maglev.
	hash    uint64
	hasHash bool
	// exclude, if not nil, rejects hosts (retry_host_predicate
	// previous_hosts rejects those already tried): the picker picks
	// again, attempts times in all, then returns its last choice anyway,
	// as Envoy does (host_selection_retry_max_attempts).
	exclude  func(*host) bool
	attempts int
}

// picker chooses a cluster's host for each request (and each tcp_proxy
// connection). It returns nil when the cluster has no host to offer. It
// is built at Apply and must be safe for concurrent use; pick is on the
// request path and should not allocate.
type picker interface {
	pick(req pickRequest) *host
}

// roundRobin takes the hosts in turn, ignoring weights and hash keys.
type roundRobin struct {
	hosts []*host
	next  atomic.Uint64
}

func (rr *roundRobin) pick(req pickRequest) *host {
	n := uint64(len(rr.hosts))
	if n == 0 {
		return nil
	}
	var h *host
	for range max(req.attempts, 1) {
		h = rr.hosts[(rr.next.Add(1)-1)%n]
		if req.exclude == nil || !req.exclude(h) {
			return h
		}
	}
	return h
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

// guard is a cluster's admission control and accounting: circuit
// breakers (max_connections, max_pending_requests, max_requests,
// max_retries or the retry budget) and outlier detection. Its methods
// are called on the request path, concurrently, and must be cheap.
//
// Every admitX that returns true is matched by one XDone (or
// connectionClosed) call; a false one is not, and the proxy counts it in
// trellis_proxy_upstream_overflow_total{kind}: "requests" answers the
// request 503 with x-envoy-overloaded, "retries" ends the retries with
// the last response, "connections" fails the attempt (a connect failure
// that is not retried).
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

// admitAll is the guard of this increment: no limits, no ejections.
type admitAll struct{}

func (admitAll) admitRequest() bool          { return true }
func (admitAll) requestDone()                {}
func (admitAll) admitRetry() bool            { return true }
func (admitAll) retryDone()                  {}
func (admitAll) admitConnection(*host) bool  { return true }
func (admitAll) connectionClosed(*host)      {}
func (admitAll) attemptStarted(*host)        {}
func (admitAll) attemptEnded(*host, outcome) {}
