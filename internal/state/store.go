package state

import (
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Store is the state store. Reads may run concurrently with each other and
// with the single writer (the FSM).
type Store struct {
	mu        sync.RWMutex
	db        *memdb.MemDB  // guarded by mu; replaced whole by Restore
	abandonCh chan struct{} // guarded by mu; closed when db is replaced

	lockMu    sync.Mutex
	lockDelay map[string]time.Time // guarded by lockMu: key → end of its lock-delay
	pruneAt   int                  // guarded by lockMu: map size that triggers the next prune

	now func() time.Time
}

// New returns an empty store.
func New() *Store {
	return &Store{
		db:        newDB(),
		abandonCh: make(chan struct{}),
		lockDelay: make(map[string]time.Time),
		pruneAt:   minLockDelayPrune,
		now:       time.Now,
	}
}

// ReadTxn is a consistent, read-only view of the store.
type ReadTxn struct {
	tx        *memdb.Txn
	abandonCh <-chan struct{}
}

// Read opens a read transaction; the caller must call Abort when done.
func (s *Store) Read() *ReadTxn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &ReadTxn{tx: s.db.Txn(false), abandonCh: s.abandonCh}
}

// Abort releases the read transaction.
func (r *ReadTxn) Abort() { r.tx.Abort() }

// AbandonCh is closed when the store's contents are replaced by a snapshot
// restore; blocking queries add it to their WatchSet.
func (s *Store) AbandonCh() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.abandonCh
}

func (s *Store) writeTxn() *memdb.Txn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Txn(true)
}

// maxIndex returns the highest of the named index rows, adding their watch
// channels to ws when ws is not nil.
func maxIndex(tx *memdb.Txn, ws memdb.WatchSet, keys ...string) uint64 {
	var max uint64
	for _, k := range keys {
		ch, raw, err := tx.FirstWatch(tableIndex, "id", k)
		if err != nil {
			continue
		}
		if ws != nil {
			ws.Add(ch)
		}
		if raw != nil {
			if v := raw.(*indexEntry).Value; v > max {
				max = v
			}
		}
	}
	return max
}

// bumpIndex records that key changed at idx.
func bumpIndex(tx *memdb.Txn, idx uint64, keys ...string) error {
	for _, k := range keys {
		raw, err := tx.First(tableIndex, "id", k)
		if err != nil {
			return err
		}
		if raw != nil && raw.(*indexEntry).Value >= idx {
			continue
		}
		if err := tx.Insert(tableIndex, &indexEntry{Key: k, Value: idx}); err != nil {
			return err
		}
	}
	return nil
}

// MaxIndex returns the highest raft index recorded for the named tables.
func (s *Store) MaxIndex(tables ...string) uint64 {
	r := s.Read()
	defer r.Abort()
	return maxIndex(r.tx, nil, tables...)
}

// latestTables are the tables whose indexes LatestIndex considers.
var latestTables = []string{tableNodes, tableServices, tableChecks, tableKVs, tableTombstones, tableSessions, tableCoordinates, tableAutopilot,
	tableConfigEntries, tableCAConfig, tableCARoots}

// LatestIndex is the highest index of any table.
func (s *Store) LatestIndex() uint64 {
	return s.MaxIndex(latestTables...)
}

// minLockDelayPrune is the lock-delay map size below which expired entries
// are left for lookups to remove.
const minLockDelayPrune = 64

// recordLockDelay starts the lock-delay of key, ending at until.
//
// Entries are otherwise removed only when their key is looked up again, so
// a stream of locks on distinct keys would grow the map without bound. When
// the map reaches pruneAt, expired entries are dropped and pruneAt set to
// twice the survivors: each prune scans at most twice the entries added
// since the last one, so the cost stays O(1) per insert.
func (s *Store) recordLockDelay(key string, until time.Time) {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	if cur, ok := s.lockDelay[key]; !ok || until.After(cur) {
		s.lockDelay[key] = until
	}
	if len(s.lockDelay) < s.pruneAt {
		return
	}
	now := s.now()
	for k, end := range s.lockDelay {
		if !now.Before(end) {
			delete(s.lockDelay, k)
		}
	}
	s.pruneAt = max(minLockDelayPrune, 2*len(s.lockDelay))
}

// KVSLockDelay returns when the lock-delay of key ends; the zero time means
// none is in force. Lock-delay lives in memory only, as in Consul: it is a
// safety margin, not replicated state.
func (s *Store) KVSLockDelay(key string) time.Time {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	until, ok := s.lockDelay[key]
	if !ok {
		return time.Time{}
	}
	if !s.now().Before(until) {
		delete(s.lockDelay, key)
		return time.Time{}
	}
	return until
}
