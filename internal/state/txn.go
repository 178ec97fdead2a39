package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// TxnApply runs the operations of a transaction atomically: either every
// operation succeeds and all writes are committed, or nothing changes and
// the errors name the operations that failed.
func (s *Store) TxnApply(idx uint64, ops []*structs.TxnOp) ([]*structs.TxnResult, []*structs.TxnError) {
	tx := s.writeTxn()
	defer tx.Abort()
	results, errs := s.txnOps(tx, idx, ops)
	if len(errs) > 0 {
		return nil, errs
	}
	tx.Commit()
	return results, nil
}

// TxnRead runs a transaction that only reads.
func (r *ReadTxn) TxnRead(ops []*structs.TxnOp) ([]*structs.TxnResult, []*structs.TxnError) {
	results, errs := (*Store)(nil).txnOps(r.tx, 0, ops)
	if len(errs) > 0 {
		return nil, errs
	}
	return results, nil
}

// IsReadOnlyTxn reports whether every operation of ops only reads.
func IsReadOnlyTxn(ops []*structs.TxnOp) bool {
	for _, op := range ops {
		if op.KV == nil {
			return false
		}
		switch op.KV.Verb {
		case KVGet, KVGetOrEmpty, KVGetTree, KVCheckIndex, KVCheckSession, KVCheckNotExists:
		default:
			return false
		}
	}
	return true
}

func (s *Store) txnOps(tx *memdb.Txn, idx uint64, ops []*structs.TxnOp) ([]*structs.TxnResult, []*structs.TxnError) {
	var results []*structs.TxnResult
	var errs []*structs.TxnError
	for i, op := range ops {
		if op.KV == nil {
			errs = append(errs, &structs.TxnError{OpIndex: i, What: "unknown operation type"})
			continue
		}
		res, err := s.txnKV(tx, idx, op.KV)
		if err != nil {
			errs = append(errs, &structs.TxnError{OpIndex: i, What: err.Error()})
			continue
		}
		results = append(results, res...)
	}
	return results, errs
}

func (s *Store) txnKV(tx *memdb.Txn, idx uint64, op *structs.TxnKVOp) ([]*structs.TxnResult, error) {
	e := &structs.DirEntry{Key: op.Key, Value: op.Value, Flags: op.Flags, Session: op.Session, ModifyIndex: op.Index}
	get := func() (*structs.DirEntry, error) {
		raw, err := tx.First(tableKVs, "id", op.Key)
		if err != nil || raw == nil {
			return nil, err
		}
		return raw.(*structs.DirEntry), nil
	}
	var entry *structs.DirEntry
	switch op.Verb {
	case KVSet, KVCAS, KVLock, KVUnlock:
		if s == nil {
			return nil, fmt.Errorf("operation %q needs a write transaction", op.Verb)
		}
		if op.Key == "" {
			return nil, fmt.Errorf("Missing key")
		}
		ok, err := s.kvApplyTxn(tx, idx, op.Verb, e)
		if err != nil {
			return nil, err
		}
		if !ok {
			switch op.Verb {
			case KVCAS:
				return nil, fmt.Errorf("failed to set key %q, index is stale", op.Key)
			case KVLock:
				return nil, fmt.Errorf("failed to lock key %q, lock is already held", op.Key)
			default:
				return nil, fmt.Errorf("failed to unlock key %q, lock isn't held, or is held by another session", op.Key)
			}
		}
		if entry, err = get(); err != nil {
			return nil, err
		}
	case KVDelete, KVDeleteTree, KVDeleteCAS:
		if s == nil {
			return nil, fmt.Errorf("operation %q needs a write transaction", op.Verb)
		}
		ok, err := s.kvApplyTxn(tx, idx, op.Verb, e)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("failed to delete key %q, index is stale", op.Key)
		}
		return nil, nil
	case KVGet, KVGetOrEmpty:
		var err error
		if entry, err = get(); err != nil {
			return nil, err
		}
		if entry == nil {
			if op.Verb == KVGet {
				return nil, fmt.Errorf("key %q doesn't exist", op.Key)
			}
			return []*structs.TxnResult{{KV: &structs.DirEntry{Key: op.Key}}}, nil
		}
		return []*structs.TxnResult{{KV: entry}}, nil
	case KVGetTree:
		it, err := tx.Get(tableKVs, "id_prefix", op.Key)
		if err != nil {
			return nil, err
		}
		var out []*structs.TxnResult
		for raw := it.Next(); raw != nil; raw = it.Next() {
			out = append(out, &structs.TxnResult{KV: raw.(*structs.DirEntry)})
		}
		return out, nil
	case KVCheckIndex:
		var err error
		if entry, err = get(); err != nil {
			return nil, err
		}
		if entry == nil {
			return nil, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		if entry.ModifyIndex != op.Index {
			return nil, fmt.Errorf("current modify index %d != %d", entry.ModifyIndex, op.Index)
		}
	case KVCheckSession:
		var err error
		if entry, err = get(); err != nil {
			return nil, err
		}
		if entry == nil {
			return nil, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		if !sameSession(entry.Session, op.Session) {
			return nil, fmt.Errorf("current session %q != %q", entry.Session, op.Session)
		}
	case KVCheckNotExists:
		var err error
		if entry, err = get(); err != nil {
			return nil, err
		}
		if entry != nil {
			return nil, fmt.Errorf("key %q exists", op.Key)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown KV verb %q", op.Verb)
	}
	if entry == nil {
		return nil, nil
	}
	// Only reads return values; writes and checks report the entry's
	// metadata alone.
	c := entry.Clone()
	c.Value = nil
	return []*structs.TxnResult{{KV: c}}, nil
}
