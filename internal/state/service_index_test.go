package state

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// Every change that alters /v1/health/service/web must raise web's index,
// and changes elsewhere must not: caches keyed on it rely on both.
func TestServiceIndexTracksEverythingHealthReturns(t *testing.T) {
	s := New()
	idx := uint64(1)
	apply := func(name string, fn func(i uint64) error) {
		t.Helper()
		idx++
		if err := fn(idx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	reg := func(req *structs.RegisterRequest) func(uint64) error {
		return func(i uint64) error { return s.EnsureRegistration(i, req) }
	}
	apply("node", reg(&structs.RegisterRequest{Node: "n1", Address: "10.0.0.1"}))
	apply("other node", reg(&structs.RegisterRequest{Node: "n2", Address: "10.0.0.2"}))
	apply("web", reg(&structs.RegisterRequest{Node: "n1", Address: "10.0.0.1",
		Service: &structs.NodeService{ID: "web1", Service: "web", Port: 80}}))
	apply("db", reg(&structs.RegisterRequest{Node: "n2", Address: "10.0.0.2",
		Service: &structs.NodeService{ID: "db1", Service: "db", Port: 5432}}))

	changes := []struct {
		name    string
		fn      func(uint64) error
		touches bool
	}{
		{"service check added", reg(&structs.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
			Check: &structs.HealthCheck{CheckID: "c1", ServiceID: "web1", Status: structs.HealthPassing}}), true},
		{"service check status", reg(&structs.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
			Check: &structs.HealthCheck{CheckID: "c1", ServiceID: "web1", Status: structs.HealthCritical}}), true},
		{"node check on web's node", reg(&structs.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
			Check: &structs.HealthCheck{CheckID: "nc", Status: structs.HealthPassing}}), true},
		{"node address", reg(&structs.RegisterRequest{Node: "n1", Address: "10.0.0.9"}), true},
		{"service port", reg(&structs.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
			Service: &structs.NodeService{ID: "web1", Service: "web", Port: 81}}), true},
		{"node check deleted", func(i uint64) error { return s.DeleteCheck(i, "n1", "nc") }, true},
		{"other node's check", reg(&structs.RegisterRequest{Node: "n2", SkipNodeUpdate: true,
			Check: &structs.HealthCheck{CheckID: "x", Status: structs.HealthCritical}}), false},
		{"other service", reg(&structs.RegisterRequest{Node: "n2", SkipNodeUpdate: true,
			Service: &structs.NodeService{ID: "db1", Service: "db", Port: 5433}}), false},
		{"kv write", func(i uint64) error {
			_, err := s.KVApply(i, KVSet, &structs.DirEntry{Key: "k", Value: []byte("v")})
			return err
		}, false},
		{"instance deleted", func(i uint64) error { return s.DeleteService(i, "n1", "web1") }, true},
	}
	for _, c := range changes {
		before := s.ServiceIndex("web")
		apply(c.name, c.fn)
		after := s.ServiceIndex("WEB") // names are case-insensitive
		if moved := after != before; moved != c.touches {
			t.Errorf("%s: web index %d -> %d, moved=%v, want %v", c.name, before, after, moved, c.touches)
		}
	}
}
