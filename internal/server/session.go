package server

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-uuid"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// SessionCreate validates sess, gives it an ID and commits it. It returns
// the new session's ID.
func (s *Server) SessionCreate(sess *structs.Session) (string, error) {
	if err := checkSessionTTL(sess.TTL); err != nil {
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
	if _, err := s.Apply(fsm.SessionRequestType, &fsm.SessionRequest{Op: fsm.SessionCreate, Session: *sess}); err != nil {
		return "", err
	}
	s.resetSessionTimer(id, sess.TTL)
	return id, nil
}

// SessionDestroy invalidates a session.
func (s *Server) SessionDestroy(id string) error {
	s.clearSessionTimer(id)
	_, err := s.Apply(fsm.SessionRequestType, &fsm.SessionRequest{Op: fsm.SessionDestroy, Session: structs.Session{ID: id}})
	return err
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
	s.resetSessionTimer(id, sess.TTL)
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

// resetSessionTimer (re)starts the invalidation timer of a TTL session. The
// session lives for TTL × 2 after its last renewal: Consul's grace.
func (s *Server) resetSessionTimer(id, ttl string) {
	d, err := structs.ParseDuration(ttl)
	if err != nil || d == 0 {
		return
	}
	d *= structs.SessionTTLMultiple
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	if t, ok := s.sessionTimers[id]; ok {
		t.Reset(d)
		return
	}
	s.sessionTimers[id] = time.AfterFunc(d, func() { s.expireSession(id) })
}

func (s *Server) clearSessionTimer(id string) {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	if t, ok := s.sessionTimers[id]; ok {
		t.Stop()
		delete(s.sessionTimers, id)
	}
}

func (s *Server) expireSession(id string) {
	s.clearSessionTimer(id)
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
	for id, t := range s.sessionTimers {
		t.Stop()
		delete(s.sessionTimers, id)
	}
}
