package api_test

import (
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Regression: an acquire stored the session ID as sent, and destroying the
// session looked its locks up case-sensitively, so a lock taken with an
// upper-cased session ID was never released.
func TestKVLockWithUpperCaseSessionReleasedOnDestroy(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	sid, _, err := a.c.Session().Create(&api.SessionEntry{LockDelay: 1}, nil)
	must(t, err)
	upper := strings.ToUpper(sid)
	ok, _, err := kv.Acquire(&api.KVPair{Key: "case/lock", Session: upper}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("acquire with %s failed", upper)
	}
	if p := mustGet(t, kv, "case/lock"); p.Session != sid {
		t.Errorf("Session = %q, want the session's own ID %q", p.Session, sid)
	}
	_, err = a.c.Session().Destroy(sid, nil)
	must(t, err)
	if p := mustGet(t, kv, "case/lock"); p.Session != "" {
		t.Errorf("after destroying the session the key is held by %q", p.Session)
	}
}
