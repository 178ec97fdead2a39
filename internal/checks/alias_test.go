package checks

import (
	"sync"
	"testing"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// fakeAliases is an AliasSource whose state the test sets.
type fakeAliases struct {
	mu       sync.Mutex
	statuses map[string]map[string]string // service → check → status
	changed  chan struct{}
}

func newFakeAliases() *fakeAliases {
	return &fakeAliases{statuses: map[string]map[string]string{}, changed: make(chan struct{})}
}

func (f *fakeAliases) AliasState(serviceID, self string) ([]string, bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	checks, ok := f.statuses[serviceID]
	var out []string
	for id, s := range checks {
		if id != self {
			out = append(out, s)
		}
	}
	return out, ok, f.changed
}

func (f *fakeAliases) set(service, check, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statuses[service] == nil {
		f.statuses[service] = map[string]string{}
	}
	if check != "" {
		f.statuses[service][check] = status
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func TestAliasFollowsService(t *testing.T) {
	src := newFakeAliases()
	n := newFakeNotifier(t)
	start(t, "alias", &structs.CheckType{AliasService: "web"}, Options{Notify: n, Aliases: src})

	// Not registered: critical.
	n.waitStatus(t, structs.HealthCritical)
	// Registered with no checks: passing.
	src.set("web", "", "")
	n.waitStatus(t, structs.HealthPassing)
	src.set("web", "c1", structs.HealthWarning)
	n.waitStatus(t, structs.HealthWarning)
	src.set("web", "c2", structs.HealthCritical)
	n.waitStatus(t, structs.HealthCritical)
	src.set("web", "c2", structs.HealthPassing)
	src.set("web", "c1", structs.HealthPassing)
	r := n.waitStatus(t, structs.HealthPassing)
	if r.output != "All checks passing." {
		t.Errorf("output = %q", r.output)
	}
	// The alias check's own status is not counted: the next result is
	// the warning, not a critical from the alias itself.
	src.set("web", "alias", structs.HealthCritical)
	src.set("web", "c3", structs.HealthWarning)
	if r := n.next(t); r.status != structs.HealthWarning {
		t.Errorf("next result %+v, want warning", r)
	}
}

func TestAliasNeedsService(t *testing.T) {
	n := newFakeNotifier(t)
	if _, err := New("a", &structs.CheckType{AliasNode: "other"}, Options{Notify: n, Aliases: newFakeAliases()}); err == nil {
		t.Error("an alias of a node alone must be refused")
	}
	if _, err := New("a", &structs.CheckType{AliasService: "web"}, Options{Notify: n}); err == nil {
		t.Error("an alias check without a source must be refused")
	}
}
