package state

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// KV operations, as the HTTP API and transactions name them.
const (
	KVSet            = "set"
	KVDelete         = "delete"
	KVDeleteCAS      = "delete-cas"
	KVDeleteTree     = "delete-tree"
	KVCAS            = "cas"
	KVLock           = "lock"
	KVUnlock         = "unlock"
	KVGet            = "get"
	KVGetOrEmpty     = "get-or-empty"
	KVGetTree        = "get-tree"
	KVCheckSession   = "check-session"
	KVCheckIndex     = "check-index"
	KVCheckNotExists = "check-not-exists"
)

// errKVFailed is returned inside transactions when a conditional operation
// does not hold.
var errKVFailed = errors.New("failed")

// KVApply applies one KV write and reports whether it took effect: a CAS,
// lock or unlock that does not hold returns false and changes nothing.
func (s *Store) KVApply(idx uint64, op string, e *structs.DirEntry) (bool, error) {
	tx := s.writeTxn()
	defer tx.Abort()
	ok, err := s.kvApplyTxn(tx, idx, op, e)
	if err != nil || !ok {
		return ok, err
	}
	tx.Commit()
	return true, nil
}

func (s *Store) kvApplyTxn(tx *memdb.Txn, idx uint64, op string, e *structs.DirEntry) (bool, error) {
	switch op {
	case KVSet:
		return true, kvsSetTxn(tx, idx, e, false)
	case KVCAS:
		return kvsCASTxn(tx, idx, e)
	case KVLock:
		return kvsLockTxn(tx, idx, e)
	case KVUnlock:
		return kvsUnlockTxn(tx, idx, e)
	case KVDelete:
		return true, kvsDeleteTxn(tx, idx, e.Key)
	case KVDeleteCAS:
		return kvsDeleteCASTxn(tx, idx, e.ModifyIndex, e.Key)
	case KVDeleteTree:
		return true, kvsDeleteTreeTxn(tx, idx, e.Key)
	}
	return false, fmt.Errorf("unknown KV operation %q", op)
}

func kvsSetTxn(tx *memdb.Txn, idx uint64, in *structs.DirEntry, updateSession bool) error {
	raw, err := tx.First(tableKVs, "id", in.Key)
	if err != nil {
		return err
	}
	e := in.Clone()
	e.CreateIndex, e.ModifyIndex = idx, idx
	if raw != nil {
		old := raw.(*structs.DirEntry)
		e.CreateIndex = old.CreateIndex
		e.LockIndex = old.LockIndex
		if !updateSession {
			e.Session = old.Session
		}
	} else if !updateSession {
		e.Session, e.LockIndex = "", 0
	}
	if err := tx.Insert(tableKVs, e); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableKVs)
}

func kvsCASTxn(tx *memdb.Txn, idx uint64, e *structs.DirEntry) (bool, error) {
	raw, err := tx.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, err
	}
	// A CAS index of 0 means "only if the key does not exist".
	if e.ModifyIndex == 0 && raw != nil {
		return false, nil
	}
	if e.ModifyIndex != 0 && (raw == nil || raw.(*structs.DirEntry).ModifyIndex != e.ModifyIndex) {
		return false, nil
	}
	return true, kvsSetTxn(tx, idx, e, false)
}

func kvsLockTxn(tx *memdb.Txn, idx uint64, e *structs.DirEntry) (bool, error) {
	if e.Session == "" {
		return false, fmt.Errorf("Missing session")
	}
	sraw, err := tx.First(tableSessions, "id", e.Session)
	if err != nil {
		return false, err
	}
	if sraw == nil {
		return false, fmt.Errorf("Invalid session %q", e.Session)
	}
	raw, err := tx.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, err
	}
	n := e.Clone()
	// Session IDs match case-insensitively (the sessions index lowercases
	// them): store the session's own spelling, so that destroying it finds
	// and releases this lock whatever case the acquirer sent.
	n.Session = sraw.(*structs.Session).ID
	n.LockIndex = 1
	if raw != nil {
		old := raw.(*structs.DirEntry)
		switch {
		case sameSession(old.Session, n.Session):
			n.LockIndex = old.LockIndex // re-acquiring updates the value only
		case old.Session != "":
			return false, nil
		default:
			n.LockIndex = old.LockIndex + 1
		}
		n.CreateIndex = old.CreateIndex
	} else {
		n.CreateIndex = idx
	}
	n.ModifyIndex = idx
	if err := tx.Insert(tableKVs, n); err != nil {
		return false, err
	}
	return true, bumpIndex(tx, idx, tableKVs)
}

func kvsUnlockTxn(tx *memdb.Txn, idx uint64, e *structs.DirEntry) (bool, error) {
	if e.Session == "" {
		return false, fmt.Errorf("Missing session")
	}
	raw, err := tx.First(tableKVs, "id", e.Key)
	if err != nil {
		return false, err
	}
	if raw == nil || !sameSession(raw.(*structs.DirEntry).Session, e.Session) {
		return false, nil
	}
	old := raw.(*structs.DirEntry)
	n := e.Clone()
	n.Session = ""
	n.LockIndex = old.LockIndex
	n.CreateIndex = old.CreateIndex
	n.ModifyIndex = idx
	if err := tx.Insert(tableKVs, n); err != nil {
		return false, err
	}
	return true, bumpIndex(tx, idx, tableKVs)
}

// sameSession reports whether a and b name the same session. Session IDs
// are UUIDs and match case-insensitively, as the sessions table's index
// does; "" (no session) matches only "".
func sameSession(a, b string) bool { return strings.EqualFold(a, b) }

func kvsDeleteTxn(tx *memdb.Txn, idx uint64, key string) error {
	raw, err := tx.First(tableKVs, "id", key)
	if err != nil || raw == nil {
		return err
	}
	if err := tx.Delete(tableKVs, raw); err != nil {
		return err
	}
	if err := tx.Insert(tableTombstones, &tombstone{Key: key, Index: idx}); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableKVs, tableTombstones)
}

func kvsDeleteCASTxn(tx *memdb.Txn, idx, cas uint64, key string) (bool, error) {
	raw, err := tx.First(tableKVs, "id", key)
	if err != nil {
		return false, err
	}
	if raw == nil {
		// Deleting what is not there succeeds only for a CAS of 0.
		return cas == 0, nil
	}
	if raw.(*structs.DirEntry).ModifyIndex != cas {
		return false, nil
	}
	return true, kvsDeleteTxn(tx, idx, key)
}

func kvsDeleteTreeTxn(tx *memdb.Txn, idx uint64, prefix string) error {
	it, err := tx.Get(tableKVs, "id_prefix", prefix)
	if err != nil {
		return err
	}
	var keys []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		keys = append(keys, raw.(*structs.DirEntry).Key)
	}
	for _, k := range keys {
		if err := kvsDeleteTxn(tx, idx, k); err != nil {
			return err
		}
	}
	return nil
}

// indexTombstonesReaped is the index row holding the highest index of any
// tombstone reaped so far. A reaped tombstone no longer raises the index of
// a prefix read, so KVList raises it to this mark instead: otherwise the
// index of a prefix whose newest change was a delete would go backwards
// when the tombstone goes. It is an index row, so snapshots keep it.
const indexTombstonesReaped = "tombstones.reaped"

// ReapTombstones removes tombstones at or below idx, recording the highest
// index among them as the reap mark.
func (s *Store) ReapTombstones(idx uint64) error {
	tx := s.writeTxn()
	defer tx.Abort()
	it, err := tx.Get(tableTombstones, "id")
	if err != nil {
		return err
	}
	var doomed []any
	var mark uint64
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if i := raw.(*tombstone).Index; i <= idx {
			doomed = append(doomed, raw)
			mark = max(mark, i)
		}
	}
	if len(doomed) == 0 {
		return nil
	}
	for _, d := range doomed {
		if err := tx.Delete(tableTombstones, d); err != nil {
			return err
		}
	}
	if err := bumpIndex(tx, mark, indexTombstonesReaped); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// --- reads ---

// KVGet returns one key. The index is the key's ModifyIndex when it
// exists, else the highest index of the KV tables, so that a watcher of one
// key is not woken by writes to others.
func (r *ReadTxn) KVGet(ws memdb.WatchSet, key string) (uint64, *structs.DirEntry, error) {
	ch, raw, err := r.tx.FirstWatch(tableKVs, "id", key)
	if err != nil {
		return 0, nil, err
	}
	ws.Add(ch)
	if raw != nil {
		e := raw.(*structs.DirEntry)
		return e.ModifyIndex, e, nil
	}
	return maxIndex(r.tx, nil, tableKVs, tableTombstones), nil, nil
}

// KVList returns the keys under prefix. Its index is the highest
// ModifyIndex among them or among the prefix's tombstones, so that deletes
// under the prefix raise it too, and never below the reap mark: a reaped
// tombstone may have been the prefix's newest change, and the index must
// not go backwards when it goes. The mark moves only when tombstones are
// reaped, so it adds no wake-ups between reaps; its row is not watched, as
// a reap changes no entry (the prefix's tombstone watch still wakes the
// reader, which then finds the same index and keeps blocking).
func (r *ReadTxn) KVList(ws memdb.WatchSet, prefix string) (uint64, []*structs.DirEntry, error) {
	it, err := r.tx.Get(tableKVs, "id_prefix", prefix)
	if err != nil {
		return 0, nil, err
	}
	ws.Add(it.WatchCh())
	var out []*structs.DirEntry
	var idx uint64
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := raw.(*structs.DirEntry)
		out = append(out, e)
		if e.ModifyIndex > idx {
			idx = e.ModifyIndex
		}
	}
	tit, err := r.tx.Get(tableTombstones, "id_prefix", prefix)
	if err != nil {
		return 0, nil, err
	}
	ws.Add(tit.WatchCh())
	for raw := tit.Next(); raw != nil; raw = tit.Next() {
		if i := raw.(*tombstone).Index; i > idx {
			idx = i
		}
	}
	if prefix == "" || idx == 0 {
		idx = maxIndex(r.tx, nil, tableKVs, tableTombstones)
	} else {
		idx = max(idx, maxIndex(r.tx, nil, indexTombstonesReaped))
	}
	return idx, out, nil
}

// KVKeys returns the keys under prefix, rolled up at the first separator
// after the prefix when sep is not empty (Consul's ?keys&separator=).
func (r *ReadTxn) KVKeys(ws memdb.WatchSet, prefix, sep string) (uint64, []string, error) {
	idx, entries, err := r.KVList(ws, prefix)
	if err != nil {
		return 0, nil, err
	}
	keys := []string{}
	var last string
	for _, e := range entries {
		k := e.Key
		if sep != "" {
			if i := strings.Index(k[len(prefix):], sep); i >= 0 {
				k = k[:len(prefix)+i+len(sep)]
			}
		}
		if k == last && len(keys) > 0 {
			continue
		}
		keys = append(keys, k)
		last = k
	}
	return idx, keys, nil
}
