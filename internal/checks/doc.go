// Package checks runs an agent's health checks and reports each result to a
// Notifier: it owns the probes (HTTP, TCP, gRPC, script), the TTL timers, and
// the consecutive-result thresholds that decide when a result is reported.
//
// It does not keep check state; the agent does. A runner only produces
// results, and New's caller decides what to store and publish.
//
// Example: run an HTTP check every 10s and stop it when the service goes away.
//
//	r, err := checks.New("service:web", &structs.CheckType{
//		HTTP:     "http://127.0.0.1:8080/health",
//		Interval: structs.Duration(10 * time.Second),
//	}, checks.Options{Notify: agentState, Logger: logger})
//	if err != nil {
//		return err
//	}
//	defer r.Stop()
//
// TTL checks are driven from outside: New returns a TTLRunner whose SetStatus
// is called by the agent's /v1/agent/check/{pass,warn,fail,update} endpoints.
//
// Alias checks report the health of another local service (the worst of
// its checks) and follow Options.Aliases: they wake on its changes rather
// than poll. Aliases of another node are not supported.
//
// After Stop returns, a runner makes no further calls to its Notifier.
package checks
