package state

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// SessionCreate stores a new session after checking that its node and the
// checks it names exist and are not critical.
func (s *Store) SessionCreate(idx uint64, sess *structs.Session) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := sessionCreateTxn(tx, idx, sess); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func sessionCreateTxn(tx *memdb.Txn, idx uint64, in *structs.Session) error {
	if in.ID == "" {
		return fmt.Errorf("Missing session ID")
	}
	switch in.Behavior {
	case "":
		in.Behavior = structs.SessionReleases
	case structs.SessionReleases, structs.SessionDeletes:
	default:
		return fmt.Errorf("Invalid session behavior: %q", in.Behavior)
	}
	nraw, err := tx.First(tableNodes, "id", in.Node)
	if err != nil {
		return err
	}
	if nraw == nil {
		return fmt.Errorf("Missing node registration")
	}
	sess := *in
	sess.Node = nraw.(*structs.Node).Node
	for _, id := range sess.AllCheckIDs() {
		raw, err := tx.First(tableChecks, "id", sess.Node, id)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("Missing check '%s' registration", id)
		}
		if st := raw.(*structs.HealthCheck).Status; st == structs.HealthCritical {
			return fmt.Errorf("Check '%s' is in %s state", id, st)
		}
	}
	existing, err := tx.First(tableSessions, "id", sess.ID)
	if err != nil {
		return err
	}
	if existing != nil {
		return fmt.Errorf("session %q already exists", sess.ID)
	}
	sess.CreateIndex, sess.ModifyIndex = idx, idx
	if err := tx.Insert(tableSessions, &sess); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableSessions)
}

// SessionDestroy invalidates a session: its locks are released (or their
// keys deleted, by its behaviour) and lock-delay starts on them.
func (s *Store) SessionDestroy(idx uint64, id string) error {
	tx := s.writeTxn()
	defer tx.Abort()
	if err := s.deleteSessionTxn(tx, idx, id); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func (s *Store) deleteSessionTxn(tx *memdb.Txn, idx uint64, id string) error {
	raw, err := tx.First(tableSessions, "id", id)
	if err != nil || raw == nil {
		return err
	}
	sess := raw.(*structs.Session)
	var held []*structs.DirEntry
	it, err := tx.Get(tableKVs, "session", sess.ID)
	if err != nil {
		return err
	}
	for r := it.Next(); r != nil; r = it.Next() {
		held = append(held, r.(*structs.DirEntry))
	}
	for _, e := range held {
		switch sess.Behavior {
		case structs.SessionDeletes:
			if err := kvsDeleteTxn(tx, idx, e.Key); err != nil {
				return err
			}
		default:
			n := e.Clone()
			n.Session = ""
			n.ModifyIndex = idx
			if err := tx.Insert(tableKVs, n); err != nil {
				return err
			}
			if err := bumpIndex(tx, idx, tableKVs); err != nil {
				return err
			}
		}
	}
	if sess.LockDelay > 0 && len(held) > 0 {
		until := s.now().Add(time.Duration(sess.LockDelay))
		keys := make([]string, len(held))
		for i, e := range held {
			keys[i] = e.Key
		}
		// Lock-delay is in-memory state: record it only once the
		// transaction has committed.
		tx.Defer(func() {
			for _, k := range keys {
				s.recordLockDelay(k, until)
			}
		})
	}
	if err := tx.Delete(tableSessions, sess); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableSessions)
}

func (s *Store) invalidateSessionsForCheckTxn(tx *memdb.Txn, idx uint64, node, checkID string) error {
	it, err := tx.Get(tableSessions, "node", node)
	if err != nil {
		return err
	}
	var doomed []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		sess := raw.(*structs.Session)
		for _, id := range sess.AllCheckIDs() {
			if id == checkID {
				doomed = append(doomed, sess.ID)
				break
			}
		}
	}
	for _, id := range doomed {
		if err := s.deleteSessionTxn(tx, idx, id); err != nil {
			return err
		}
	}
	return nil
}

// Session returns one session, or nil.
func (r *ReadTxn) Session(ws memdb.WatchSet, id string) (uint64, *structs.Session, error) {
	idx := maxIndex(r.tx, ws, tableSessions)
	raw, err := r.tx.First(tableSessions, "id", id)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*structs.Session), nil
}

// Sessions returns every session, or those of one node when node is set.
func (r *ReadTxn) Sessions(ws memdb.WatchSet, node string) (uint64, []*structs.Session, error) {
	idx := maxIndex(r.tx, ws, tableSessions)
	var it memdb.ResultIterator
	var err error
	if node == "" {
		it, err = r.tx.Get(tableSessions, "id")
	} else {
		it, err = r.tx.Get(tableSessions, "node", node)
	}
	if err != nil {
		return 0, nil, err
	}
	out := []*structs.Session{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*structs.Session))
	}
	return idx, out, nil
}
