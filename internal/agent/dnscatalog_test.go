package agent

import (
	"bytes"
	"testing"

	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestDNSCatalogCachesUntilTheServiceChanges(t *testing.T) {
	store := state.New()
	reg := func(idx uint64, req *structs.RegisterRequest) {
		t.Helper()
		if err := store.EnsureRegistration(idx, req); err != nil {
			t.Fatal(err)
		}
	}
	reg(2, &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1",
		Service: &structs.NodeService{ID: "web1", Service: "web", Port: 80},
		Check:   &structs.HealthCheck{CheckID: "c1", ServiceID: "web1", Status: structs.HealthPassing}})
	c := newDNSCatalog(store)

	first, err := c.HealthService("Web")
	if err != nil || len(first) != 1 {
		t.Fatalf("HealthService = %v, %v", first, err)
	}
	again, _ := c.HealthService("web")
	if &again[0] != &first[0] {
		t.Error("an unchanged service was read from the store again, want the cached view")
	}

	// A write elsewhere keeps the cache; a check change on web drops it.
	if _, err := store.KVApply(3, state.KVSet, &structs.DirEntry{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if still, _ := c.HealthService("web"); &still[0] != &first[0] {
		t.Error("a KV write invalidated the cached health view")
	}
	reg(4, &structs.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
		Check: &structs.HealthCheck{CheckID: "c1", ServiceID: "web1", Status: structs.HealthCritical}})
	after, _ := c.HealthService("web")
	if len(after) != 1 || after[0].Checks[0].Status != structs.HealthCritical {
		t.Fatalf("after the check went critical: %+v", after[0].Checks)
	}

	// A snapshot restore starts the cache over even if indexes repeat.
	var buf bytes.Buffer
	if err := store.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	other := state.New()
	if err := other.EnsureRegistration(4, &structs.RegisterRequest{Node: "n1", Address: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	var buf2 bytes.Buffer
	if err := other.Snapshot().Persist(&buf2); err != nil {
		t.Fatal(err)
	}
	if err := store.Restore(&buf2); err != nil {
		t.Fatal(err)
	}
	if gone, _ := c.HealthService("web"); len(gone) != 0 {
		t.Fatalf("after restoring a store without web: %d entries, want 0", len(gone))
	}
}
