// Package balance chooses the host of an upstream cluster for each
// request and protects the cluster, with Envoy's semantics: the five
// load-balancing policies, the circuit breaker and consecutive-error
// outlier detection. It is pure and concurrency-safe, runs no goroutine,
// and its hot paths (Pick, TryAcquire/Release, Begin/End, Result on
// success) take no lock and allocate nothing.
//
// # Lifecycle
//
// The proxy keeps one *Cluster per cluster name across xDS updates:
//
//	c, err := balance.New(name, cfg, endpoints, balance.Options{})
//	...
//	err = c.Update(cfg, endpoints) // on every Apply; an error changes nothing
//
// Update rebuilds the picking tables (immutable, swapped atomically) and
// keeps, for every address still listed, the same *Host with its
// requests in flight, consecutive error counts, ejection and ejection
// multiplier; the circuit-breaker counts and the round-robin position
// carry over too. Endpoints are the healthy ones, "host:port" with weight
// ≥ 1 (0 reads as 1); an address listed twice is one host with the sum
// of the weights. Config starts from DefaultConfig (Envoy's defaults;
// DefaultOutlier for outlier_detection) and Validate names the Envoy
// field that is out of range.
//
// # A request
//
//	if !c.TryAcquire(balance.Requests) {
//		// 503, x-envoy-overloaded: true
//	}
//	defer c.Release(balance.Requests)
//	h := c.Pick(nil) // or c.PickHash(hash, nil) with the route's hash
//	if h == nil {
//		// 503 no healthy upstream
//	}
//	h.Begin()
//	status, err := send(h.Addr())
//	h.End()
//	c.Result(h, balance.Status(status)) // or balance.ConnectFailure, Reset, Timeout
//
// A retry takes a Retries as well (TryAcquire(Retries), max_retries or
// the retry budget) and picks with an exclude predicate naming the hosts
// tried already: exclude is best-effort, ignored when it would exclude
// every host not ejected. Pick returns nil only when the cluster has no
// host that is not ejected.
//
// # Policies
//
//   - ROUND_ROBIN: a deterministic cycle from the first endpoint; equal
//     weights go in endpoint order, unequal ones in an earliest-deadline
//     order that interleaves them (weights 3 and 1: a a b a). A slot
//     whose host is ejected or excluded is skipped, so the others keep
//     their shares.
//   - LEAST_REQUEST: ChoiceCount (2) hosts drawn at random, the one with
//     the fewest requests in flight (per unit of weight) wins.
//   - RANDOM: in proportion to weight.
//   - RING_HASH: Envoy's ketama ring of XXH64("<address>_<k>") points,
//     sized between MinRingSize and MaxRingSize and scaled by weight; a
//     request takes the first point at or after its hash, the next points
//     if that host is ejected or excluded.
//   - MAGLEV: Envoy's weighted Maglev table of 65537 slots; an ejected or
//     excluded host's slot is re-hashed.
//
// The hash policies place a request without a hash (Pick) at a random
// hash. HashString and Hasher compute a route's hash as Envoy does.
//
// # Outlier detection
//
// Result feeds the consecutive 5xx and consecutive gateway-failure
// detectors; a host reaching a threshold is ejected (enforcing_* percent,
// max_ejection_percent with at least one host allowed) for
// base_ejection_time × the number of times it was ejected in a row,
// capped at max_ejection_time. The owner calls Tick every Interval()
// (from a time.Ticker): it un-ejects the hosts whose time is up and
// lowers the multiplier of the hosts that are not ejected. Options.Rand
// and Options.Now make all of it deterministic in tests.
//
// # Metrics
//
// Stats returns the counters the proxy exports: resources in use and
// overflows by Kind (InUse(Requests) is the cluster's active requests),
// total, active and overflowed ejections. OnEject and OnUneject report
// each ejection for logs.
//
// Not implemented: Envoy's panic threshold (below 50% healthy hosts Envoy
// balances over all hosts; here ejected hosts are never picked, within
// max_ejection_percent), success-rate and failure-percentage detectors,
// priorities and localities.
package balance
