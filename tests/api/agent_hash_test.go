package api_test

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// /v1/agent/service/:id blocks on its content hash, as Consul's does.
func TestAgentServiceHashBlocking(t *testing.T) {
	a := start(t)
	reg := &api.AgentServiceRegistration{ID: "web1", Name: "web", Port: 80}
	must(t, a.c.Agent().ServiceRegister(reg))
	svc, meta, err := a.c.Agent().Service("web1", nil)
	must(t, err)
	if meta.LastContentHash == "" || svc.ContentHash != meta.LastContentHash {
		t.Fatalf("hash header %q, body %q: want both set and equal", meta.LastContentHash, svc.ContentHash)
	}

	// Nothing changes: the query waits out its wait time, same hash.
	start := time.Now()
	_, same, err := a.c.Agent().Service("web1", &api.QueryOptions{WaitHash: meta.LastContentHash, WaitTime: 300 * time.Millisecond})
	must(t, err)
	if same.LastContentHash != meta.LastContentHash || time.Since(start) < 300*time.Millisecond {
		t.Errorf("unchanged service: hash %q after %v, want %q after the wait", same.LastContentHash, time.Since(start), meta.LastContentHash)
	}

	// A change wakes a blocked query with the new content.
	type result struct {
		svc *api.AgentService
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, _, err := a.c.Agent().Service("web1", &api.QueryOptions{WaitHash: meta.LastContentHash, WaitTime: time.Minute})
		done <- result{s, err}
	}()
	reg.Port = 81
	must(t, a.c.Agent().ServiceRegister(reg))
	select {
	case r := <-done:
		must(t, r.err)
		if r.svc.Port != 81 || r.svc.ContentHash == meta.LastContentHash {
			t.Errorf("woken with port %d hash %q, want port 81 and a new hash", r.svc.Port, r.svc.ContentHash)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a blocked agent service query was not woken by the change")
	}
}
