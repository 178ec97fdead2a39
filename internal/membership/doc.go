// Package membership owns gossip membership for Trellis agents: one serf
// pool (memberlist underneath) per Pool, as Consul runs them — a LAN pool
// of every agent in a datacenter and a WAN pool of the servers of all
// datacenters, whose members are named "<node>.<dc>".
//
// A pool detects failures (probes, then suspicion), carries member tags,
// user events and network coordinates, and fans its events out to
// subscribers without ever blocking serf: each subscriber has a bounded
// queue, and one that falls behind is dropped — its channel is closed — and
// must resubscribe and reconcile with Members (see Pool.Subscribe).
//
// Member status codes are Consul's (api.AgentMember.Status): 0 none,
// 1 alive, 2 leaving, 3 left, 4 failed.
//
// Example:
//
//	lan, err := membership.New(membership.Config{
//		NodeName:   "web-1",
//		NodeID:     nodeID,
//		Datacenter: "dc1",
//		BindAddr:   "10.0.0.5",
//		BindPort:   8301,
//		Tags:       map[string]string{"role": "node"},
//		Logger:     logger,
//	})
//	if err != nil {
//		return err
//	}
//	defer lan.Shutdown()
//	events, cancel := lan.Subscribe()
//	defer cancel()
//	go func() { // owned by the caller's group
//		_, err := lan.RetryJoin(ctx, []string{"10.0.0.2", "10.0.0.3"}, 30*time.Second)
//		...
//	}()
//	for e := range events { // closed on Shutdown, or when this subscriber falls behind
//		...
//	}
//
// Leaving gracefully is Leave then Shutdown; Shutdown alone makes the
// others see this member fail.
//
// Tests use FastTiming so that failures are detected in about a second on
// loopback.
package membership
