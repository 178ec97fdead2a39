package state

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func kvGet(t *testing.T, s *Store, key string) *structs.DirEntry {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	_, e, err := r.KVGet(memdb.NewWatchSet(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return e
}

func kvListIndex(t *testing.T, s *Store, prefix string) uint64 {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	idx, _, err := r.KVList(memdb.NewWatchSet(), prefix)
	if err != nil {
		t.Fatalf("list %s: %v", prefix, err)
	}
	return idx
}

// Regression: the sessions table matched IDs case-insensitively but the KV
// "session" index and the lock/unlock/check-session comparisons did not,
// and an acquire stored the ID as sent. A lock taken with an upper-cased
// session ID was then never released when the session was destroyed.
func TestKVLockSessionIDIgnoresCase(t *testing.T) {
	const id = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
	upper := strings.ToUpper(id)
	setup := func(t *testing.T) *Store {
		t.Helper()
		s := New()
		if err := s.EnsureRegistration(1, &structs.RegisterRequest{Node: "n1", Address: "10.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SessionCreate(2, &structs.Session{ID: id, Node: "n1"}); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.KVApply(3, KVLock, &structs.DirEntry{Key: "lock", Value: []byte("a"), Session: upper}); err != nil || !ok {
			t.Fatalf("acquire with %s = %v, %v; want true", upper, ok, err)
		}
		return s
	}

	t.Run("stores the session's own ID", func(t *testing.T) {
		s := setup(t)
		if got := kvGet(t, s, "lock").Session; got != id {
			t.Errorf("Session = %q, want %q", got, id)
		}
	})
	t.Run("destroy releases", func(t *testing.T) {
		s := setup(t)
		if err := s.SessionDestroy(4, upper); err != nil {
			t.Fatal(err)
		}
		if got := kvGet(t, s, "lock").Session; got != "" {
			t.Errorf("after destroying the session the key is held by %q", got)
		}
	})
	t.Run("reacquire in another case keeps the lock index", func(t *testing.T) {
		s := setup(t)
		if ok, err := s.KVApply(4, KVLock, &structs.DirEntry{Key: "lock", Value: []byte("b"), Session: id}); err != nil || !ok {
			t.Fatalf("reacquire = %v, %v; want true", ok, err)
		}
		if e := kvGet(t, s, "lock"); e.LockIndex != 1 || string(e.Value) != "b" {
			t.Errorf("after reacquire: LockIndex %d, value %q; want 1, b", e.LockIndex, e.Value)
		}
	})
	t.Run("release in another case", func(t *testing.T) {
		s := setup(t)
		if ok, err := s.KVApply(4, KVUnlock, &structs.DirEntry{Key: "lock", Session: upper}); err != nil || !ok {
			t.Fatalf("release with %s = %v, %v; want true", upper, ok, err)
		}
		if got := kvGet(t, s, "lock").Session; got != "" {
			t.Errorf("after release the key is held by %q", got)
		}
	})
	t.Run("txn check-session in another case", func(t *testing.T) {
		s := setup(t)
		_, errs := s.TxnApply(4, []*structs.TxnOp{{KV: &structs.TxnKVOp{Verb: KVCheckSession, Key: "lock", Session: upper}}})
		if len(errs) != 0 {
			t.Errorf("check-session with %s: %s", upper, errs[0].What)
		}
	})
}

// Regression: a prefix list's index came from its entries and tombstones
// only, so reaping the tombstone of its newest change (a delete) made
// X-Consul-Index go backwards: foo/a@5, foo/b@7, delete foo/b@10 gave 10,
// and 5 once the tombstone was reaped.
func TestKVListIndexNotBackwardsAfterReap(t *testing.T) {
	s := New()
	apply := func(idx uint64, op, key string) {
		t.Helper()
		if _, err := s.KVApply(idx, op, &structs.DirEntry{Key: key, Value: []byte("v")}); err != nil {
			t.Fatalf("%s %s: %v", op, key, err)
		}
	}
	apply(5, KVSet, "foo/a")
	apply(7, KVSet, "foo/b")
	apply(10, KVDelete, "foo/b")
	apply(12, KVSet, "bar/a")
	if got := kvListIndex(t, s, "foo/"); got != 10 {
		t.Fatalf("foo/ index before reap = %d, want 10", got)
	}
	if err := s.ReapTombstones(11); err != nil {
		t.Fatal(err)
	}
	if got := kvListIndex(t, s, "foo/"); got != 10 {
		t.Errorf("foo/ index after reap = %d, want 10", got)
	}
	// A prefix whose own changes are newer than the reaped tombstones
	// keeps its own index.
	if got := kvListIndex(t, s, "bar/"); got != 12 {
		t.Errorf("bar/ index after reap = %d, want 12", got)
	}

	// The mark is state like any other: a snapshot keeps it.
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	restored := New()
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := kvListIndex(t, restored, "foo/"); got != 10 {
		t.Errorf("foo/ index after reap and restore = %d, want 10", got)
	}
}

// A reaped tombstone wakes a blocked prefix reader, which must then find
// the same index and keep waiting rather than answer with nothing new.
func TestKVListReapDoesNotRaiseBlockedIndex(t *testing.T) {
	s := New()
	s.KVApply(5, KVSet, &structs.DirEntry{Key: "foo/a"})
	s.KVApply(10, KVDelete, &structs.DirEntry{Key: "foo/a"})
	s.KVApply(11, KVSet, &structs.DirEntry{Key: "foo/b"})
	before := kvListIndex(t, s, "foo/")
	if err := s.ReapTombstones(10); err != nil {
		t.Fatal(err)
	}
	if got := kvListIndex(t, s, "foo/"); got != before {
		t.Errorf("foo/ index %d -> %d after a reap that changed no entry", before, got)
	}
}
