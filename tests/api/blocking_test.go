package api_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// longWait is the wait of blocking queries that must wake on a change: a
// query that waited it out would fail the elapsed-time check.
const longWait = 30 * time.Second

type kvResult struct {
	pair *api.KVPair
	meta *api.QueryMeta
	err  error
	took time.Duration
}

func blockingGet(c *api.Client, key string, index uint64, wait time.Duration) <-chan kvResult {
	ch := make(chan kvResult, 1)
	go func() {
		start := time.Now()
		p, m, err := c.KV().Get(key, &api.QueryOptions{WaitIndex: index, WaitTime: wait})
		ch <- kvResult{p, m, err, time.Since(start)}
	}()
	return ch
}

func TestBlockingKVWakesOnItsKey(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	_, err := kv.Put(&api.KVPair{Key: "a", Value: []byte("1")}, nil)
	must(t, err)
	_, meta, err := kv.Get("a", nil)
	must(t, err)

	ch := blockingGet(a.c, "a", meta.LastIndex, longWait)
	_, err = kv.Put(&api.KVPair{Key: "a", Value: []byte("2")}, nil)
	must(t, err)
	r := <-ch
	must(t, r.err)
	if r.pair == nil || string(r.pair.Value) != "2" || r.meta.LastIndex <= meta.LastIndex {
		t.Errorf("woken query = %+v (index %d), want value 2 at an index above %d", r.pair, r.meta.LastIndex, meta.LastIndex)
	}
	if r.took >= longWait/2 {
		t.Errorf("query on a took %v to see a write to a: it waited out its wait instead of waking", r.took)
	}

	// A delete wakes it too; the key then reads as missing.
	ch = blockingGet(a.c, "a", r.meta.LastIndex, longWait)
	_, err = kv.Delete("a", nil)
	must(t, err)
	r2 := <-ch
	must(t, r2.err)
	if r2.pair != nil || r2.meta.LastIndex <= r.meta.LastIndex || r2.took >= longWait/2 {
		t.Errorf("after delete: pair %+v, index %d (was %d), took %v", r2.pair, r2.meta.LastIndex, r.meta.LastIndex, r2.took)
	}
}

func TestBlockingKVIgnoresOtherKeys(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	for _, k := range []string{"a", "b", "ab", "a/child"} {
		_, err := kv.Put(&api.KVPair{Key: k, Value: []byte("0")}, nil)
		must(t, err)
	}
	// a was written first, so its index is below the KV table's.
	_, err := kv.Put(&api.KVPair{Key: "a", Value: []byte("1")}, nil)
	must(t, err)
	_, meta, err := kv.Get("a", nil)
	must(t, err)

	const wait = time.Second
	ch := blockingGet(a.c, "a", meta.LastIndex, wait)
	// Write other keys, including ones that share a's prefix, until the
	// query answers: none of them may wake it.
	writes := 0
	var r kvResult
loop:
	for {
		select {
		case r = <-ch:
			break loop
		default:
		}
		key := []string{"b", "ab", "a/child"}[writes%3]
		_, err := kv.Put(&api.KVPair{Key: key, Value: []byte(strconv.Itoa(writes))}, nil)
		must(t, err)
		writes++
	}
	must(t, r.err)
	if r.meta.LastIndex != meta.LastIndex {
		t.Errorf("index = %d after %d writes to other keys, want %d unchanged", r.meta.LastIndex, writes, meta.LastIndex)
	}
	if r.took < wait {
		t.Errorf("query returned after %v, before its %v wait, with %d writes to other keys", r.took, wait, writes)
	}
	if string(r.pair.Value) != "1" {
		t.Errorf("value = %q, want 1", r.pair.Value)
	}
}

func TestBlockingKVList(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	_, err := kv.Put(&api.KVPair{Key: "dir/x", Value: []byte("1")}, nil)
	must(t, err)
	_, meta, err := kv.List("dir/", nil)
	must(t, err)
	type res struct {
		pairs api.KVPairs
		meta  *api.QueryMeta
		err   error
		took  time.Duration
	}
	list := func(idx uint64) <-chan res {
		ch := make(chan res, 1)
		go func() {
			start := time.Now()
			p, m, err := kv.List("dir/", &api.QueryOptions{WaitIndex: idx, WaitTime: longWait})
			ch <- res{p, m, err, time.Since(start)}
		}()
		return ch
	}
	// A delete under the prefix wakes a list, and raises its index.
	ch := list(meta.LastIndex)
	_, err = kv.Delete("dir/x", nil)
	must(t, err)
	r := <-ch
	must(t, r.err)
	if len(r.pairs) != 0 || r.meta.LastIndex <= meta.LastIndex || r.took >= longWait/2 {
		t.Errorf("after delete: %d pairs, index %d (was %d), took %v", len(r.pairs), r.meta.LastIndex, meta.LastIndex, r.took)
	}
}

func TestBlockingHealthService(t *testing.T) {
	t.Parallel()
	a := start(t)
	agent := a.c.Agent()
	for _, name := range []string{"watched", "other"} {
		must(t, agent.ServiceRegister(&api.AgentServiceRegistration{
			Name: name, Check: &api.AgentServiceCheck{CheckID: name + "-ttl", TTL: "1m", Status: api.HealthPassing},
		}))
	}
	_, meta, err := a.c.Health().Service("watched", "", false, nil)
	must(t, err)

	type res struct {
		entries []*api.ServiceEntry
		meta    *api.QueryMeta
		err     error
		took    time.Duration
	}
	query := func(idx uint64, wait time.Duration) <-chan res {
		ch := make(chan res, 1)
		go func() {
			start := time.Now()
			e, m, err := a.c.Health().Service("watched", "", false, &api.QueryOptions{WaitIndex: idx, WaitTime: wait})
			ch <- res{e, m, err, time.Since(start)}
		}()
		return ch
	}

	// Changes to another service's check do not wake it.
	const wait = time.Second
	ch := query(meta.LastIndex, wait)
	statuses := []string{api.HealthWarning, api.HealthCritical, api.HealthPassing}
	var r res
	n := 0
loop:
	for {
		select {
		case r = <-ch:
			break loop
		default:
		}
		must(t, agent.UpdateTTL("other-ttl", fmt.Sprint(n), statuses[n%3]))
		n++
	}
	must(t, r.err)
	if r.meta.LastIndex != meta.LastIndex || r.took < wait {
		t.Errorf("with %d changes to other: index %d (want %d), returned after %v (wait %v)", n, r.meta.LastIndex, meta.LastIndex, r.took, wait)
	}

	// A change to its own check wakes it, with the new status.
	ch = query(meta.LastIndex, longWait)
	must(t, agent.WarnTTL("watched-ttl", "slow"))
	r = <-ch
	must(t, r.err)
	if r.took >= longWait/2 || r.meta.LastIndex <= meta.LastIndex {
		t.Fatalf("own check change: index %d (was %d), took %v", r.meta.LastIndex, meta.LastIndex, r.took)
	}
	if len(r.entries) != 1 || r.entries[0].Checks.AggregatedStatus() != api.HealthWarning {
		t.Errorf("woken result = %+v, want watched in warning", r.entries)
	}
	// As does a change to a node-level check of its node.
	ch = query(r.meta.LastIndex, longWait)
	must(t, agent.EnableNodeMaintenance("watch this"))
	r2 := <-ch
	must(t, r2.err)
	if r2.took >= longWait/2 || len(r2.entries) != 1 || !hasCheck(r2.entries[0].Checks, "_node_maintenance") {
		t.Fatalf("node maintenance: took %v, entries %+v", r2.took, r2.entries)
	}
	// And the registration of a new instance.
	ch = query(r2.meta.LastIndex, longWait)
	must(t, agent.ServiceRegister(&api.AgentServiceRegistration{ID: "watched-2", Name: "watched"}))
	r3 := <-ch
	must(t, r3.err)
	if len(r3.entries) != 2 || r3.took >= longWait/2 {
		t.Errorf("new instance: %d entries after %v, want 2", len(r3.entries), r3.took)
	}
}

func TestQueryHeadersAndConsistency(t *testing.T) {
	t.Parallel()
	a := start(t)
	_, err := a.c.KV().Put(&api.KVPair{Key: "h", Value: []byte("v")}, nil)
	must(t, err)
	for _, tc := range []struct {
		query, consistency string
	}{
		{"", "leader"},
		{"?stale", "stale"},
		{"?consistent", "consistent"},
	} {
		for _, path := range []string{"/v1/kv/h", "/v1/catalog/nodes", "/v1/health/service/x", "/v1/session/list"} {
			p := path + tc.query
			r := a.do(t, "GET", p, nil).expect(t, p, 200)
			if idx, err := strconv.ParseUint(r.header.Get("X-Consul-Index"), 10, 64); err != nil || idx == 0 {
				t.Errorf("%s: X-Consul-Index = %q, want a positive number", p, r.header.Get("X-Consul-Index"))
			}
			if got := r.header.Get("X-Consul-KnownLeader"); got != "true" {
				t.Errorf("%s: X-Consul-KnownLeader = %q, want true", p, got)
			}
			if got := r.header.Get("X-Consul-LastContact"); got == "" {
				t.Errorf("%s: X-Consul-LastContact missing", p)
			}
			if got := r.header.Get("X-Consul-Effective-Consistency"); got != tc.consistency {
				t.Errorf("%s: X-Consul-Effective-Consistency = %q, want %q", p, got, tc.consistency)
			}
		}
	}
	a.do(t, "GET", "/v1/kv/h?stale&consistent", nil).expect(t, "stale and consistent", 400)
	a.do(t, "GET", "/v1/kv/h?index=abc", nil).expect(t, "bad index", 400)
	a.do(t, "GET", "/v1/kv/h?index=1&wait=forever", nil).expect(t, "bad wait", 400)

	// The client reads the headers into QueryMeta.
	_, meta, err := a.c.KV().Get("h", &api.QueryOptions{RequireConsistent: true})
	must(t, err)
	if !meta.KnownLeader || meta.LastIndex == 0 {
		t.Errorf("QueryMeta = %+v", meta)
	}
	_, meta, err = a.c.KV().Get("h", &api.QueryOptions{AllowStale: true})
	must(t, err)
	if !meta.KnownLeader || meta.LastIndex == 0 {
		t.Errorf("stale QueryMeta = %+v", meta)
	}
}
