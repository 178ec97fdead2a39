package balance

// Kind is a resource the circuit breaker limits.
type Kind uint8

const (
	// Connections are upstream connections open (max_connections).
	Connections Kind = iota
	// PendingRequests are requests waiting for a connection
	// (max_pending_requests).
	PendingRequests
	// Requests are requests in flight to the cluster (max_requests): the
	// cluster's active requests.
	Requests
	// Retries are retries in flight (max_retries, or the retry budget).
	Retries

	numKinds = 4
)

var kindNames = [numKinds]string{"connections", "pending", "requests", "retries"}

// String is the kind's label in trellis_proxy_upstream_overflow_total.
func (k Kind) String() string { return kindNames[k] }

// TryAcquire takes one k if the circuit breaker allows it, and reports
// whether it did. Every successful TryAcquire needs one Release of the
// same kind; a refusal is counted in Stats().Overflow (the proxy answers
// 503 with x-envoy-overloaded). A retry holds a Retries as well as the
// Requests of its attempt. The counts survive Update, so a Release after
// an Update returns what was taken before it; a lowered threshold refuses
// new acquisitions until enough are released.
func (c *Cluster) TryAcquire(k Kind) bool {
	limit := c.limit(k)
	n := &c.counts[k]
	for {
		cur := n.Load()
		if cur >= limit {
			c.overflow[k].Add(1)
			return false
		}
		if n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Release returns one k taken by TryAcquire.
func (c *Cluster) Release(k Kind) { c.counts[k].Add(-1) }

// InUse is how many k are taken now; InUse(Requests) is the cluster's
// active requests.
func (c *Cluster) InUse(k Kind) int64 { return c.counts[k].Load() }

// limit is the current threshold for k. With a retry budget, retries may
// be max(min_retry_concurrency, budget_percent% × (active + pending
// requests)), the product truncated, as in Envoy.
func (c *Cluster) limit(k Kind) int64 {
	b := &c.cur.Load().cfg.Breaker
	switch k {
	case Connections:
		return int64(b.MaxConnections)
	case PendingRequests:
		return int64(b.MaxPendingRequests)
	case Requests:
		return int64(b.MaxRequests)
	}
	rb := b.RetryBudget
	if rb == nil {
		return int64(b.MaxRetries)
	}
	active := c.counts[Requests].Load() + c.counts[PendingRequests].Load()
	return max(int64(rb.BudgetPercent/100*float64(active)), int64(rb.MinRetryConcurrency))
}
