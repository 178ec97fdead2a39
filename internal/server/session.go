package server

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// SessionCreate validates sess, gives it an ID and commits it. It returns
// the new session's ID.
func (s *Server) SessionCreate(sess *structs.Session) (string, error) {
	if _, err := ParseSessionTTL(sess.TTL); err != nil {
		return "", err
	}
	if sess.LockDelay > structs.MaxLockDelay {
		return "", fmt.Errorf("Lock delay must be less than %v", time.Duration(structs.MaxLockDelay))
	}
	switch sess.Behavior {
	case "":
		sess.Behavior = structs.SessionReleases
	case structs.SessionReleases, structs.SessionDeletes:
	default:
		return "", fmt.Errorf("Invalid Behavior setting '%s'", sess.Behavior)
	}
	if sess.Node == "" {
		return "", fmt.Errorf("Must provide Node")
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return "", err
	}
	sess.ID = id
	_, err = s.Apply(fsm.SessionRequestType, &fsm.SessionRequest{Op: fsm.SessionCreate, Session: *sess})
	// The timer also starts when the outcome is unknown: after a timeout
	// or a lost leadership the entry may still commit, and a session
	// nobody can renew must then expire. Expiring a session that does not
	// exist is harmless.
	if err == nil || outcomeUnknown(err) {
		s.resetSessionTimer(id, sess.TTL)
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

// SessionDestroy invalidates a session. Its TTL timer stops only once the
// destroy has committed: after a failed Apply the session may still exist,
// and it must still expire.
func (s *Server) SessionDestroy(id string) error {
	if _, err := s.Apply(fsm.SessionRequestType, &fsm.SessionRequest{Op: fsm.SessionDestroy, Session: structs.Session{ID: id}}); err != nil {
		return err
	}
	s.clearSessionTimer(id)
	return nil
}

// SessionRenew restarts a session's TTL and returns it, or nil when the
// session does not exist. Renewal is leader state only, not a raft write.
func (s *Server) SessionRenew(id string) (*structs.Session, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	r := s.store.Read()
	_, sess, err := r.Session(nil, id)
	r.Abort()
	if err != nil || sess == nil {
		return nil, err
	}
	s.resetSessionTimer(sess.ID, sess.TTL)
	return sess, nil
}

// KVSApply applies one KV write. An acquire of a key still in lock-delay
// returns false without a write, as in Consul.
func (s *Server) KVSApply(op string, e *structs.DirEntry) (bool, error) {
	if op == state.KVLock {
		if until := s.store.KVSLockDelay(e.Key); !until.IsZero() {
			return false, nil
		}
	}
	resp, err := s.Apply(fsm.KVSRequestType, &fsm.KVSRequest{Op: op, Entry: *e})
	if err != nil {
		return false, err
	}
	ok, _ := resp.(bool)
	return ok, nil
}

// TxnApply commits a transaction that writes. As in Consul, a lock of a key
// still in lock-delay fails the whole transaction before it reaches raft:
// the response names each such operation and nothing is written.
// Lock-delay is the leader's in-memory state, so it cannot be checked in
// the FSM.
func (s *Server) TxnApply(ops []*structs.TxnOp) (*structs.TxnResponse, error) {
	var errs []*structs.TxnError
	for i, op := range ops {
		if op.KV == nil || op.KV.Verb != state.KVLock {
			continue
		}
		if until := s.store.KVSLockDelay(op.KV.Key); !until.IsZero() {
			errs = append(errs, &structs.TxnError{OpIndex: i,
				What: fmt.Sprintf("failed to lock key %q due to lock delay", op.KV.Key)})
		}
	}
	if len(errs) > 0 {
		return &structs.TxnResponse{Errors: errs}, nil
	}
	resp, err := s.Apply(fsm.TxnRequestType, &fsm.TxnRequest{Ops: ops})
	if err != nil {
		return nil, err
	}
	return resp.(*structs.TxnResponse), nil
}

// resetSessionTimer (re)starts the invalidation timer of a TTL session. The
// session lives for TTL × 2 after its last renewal: Consul's grace. Once
// Shutdown has begun it does nothing.
func (s *Server) resetSessionTimer(id, ttl string) {
	d, err := structs.ParseDuration(ttl)
	if err != nil || d == 0 {
		return
	}
	d *= structs.SessionTTLMultiple
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	if s.shutdown {
		return
	}
	// Session IDs match case-insensitively: one session, one timer.
	key := strings.ToLower(id)
	if t, ok := s.sessionTimers[key]; ok {
		t.Reset(d)
		return
	}
	s.sessionTimers[key] = time.AfterFunc(d, func() { s.expireSession(id) })
}

func (s *Server) clearSessionTimer(id string) {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	s.clearSessionTimerLocked(id)
}

func (s *Server) clearSessionTimerLocked(id string) {
	key := strings.ToLower(id)
	if t, ok := s.sessionTimers[key]; ok {
		t.Stop()
		delete(s.sessionTimers, key)
	}
}

// expireSession runs on a session timer's goroutine. It joins s.wg so that
// Shutdown waits for it, and does nothing once Shutdown has begun.
func (s *Server) expireSession(id string) {
	s.sessionMu.Lock()
	if s.shutdown {
		s.sessionMu.Unlock()
		return
	}
	s.wg.Add(1)
	s.clearSessionTimerLocked(id)
	s.sessionMu.Unlock()
	defer s.wg.Done()
	if !s.IsLeader() {
		return
	}
	if _, err := s.Apply(fsm.SessionRequestType, &fsm.SessionRequest{Op: fsm.SessionDestroy, Session: structs.Session{ID: id}}); err != nil {
		s.logger.Warn("session TTL invalidation failed", "session", id, "error", err)
		return
	}
	s.logger.Debug("session TTL expired", "session", id)
}

// initSessionTimers starts a full TTL for every TTL session, as a new leader
// must: it cannot know when they were last renewed.
func (s *Server) initSessionTimers() {
	r := s.store.Read()
	_, sessions, err := r.Sessions(nil, "")
	r.Abort()
	if err != nil {
		s.logger.Error("reading sessions for TTL timers", "error", err)
		return
	}
	for _, sess := range sessions {
		s.resetSessionTimer(sess.ID, sess.TTL)
	}
}

func (s *Server) stopSessionTimers() {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	s.stopSessionTimersLocked()
}

func (s *Server) stopSessionTimersLocked() {
	for id, t := range s.sessionTimers {
		t.Stop()
		delete(s.sessionTimers, id)
	}
}
