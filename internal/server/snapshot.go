package server

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/snapshot"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// OpenSnapshot takes a snapshot of the whole state now and opens it; the
// caller must close the reader.
func (s *Server) OpenSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	// The barrier both makes every committed write part of the snapshot
	// and adds an entry, so raft always has something new to snapshot.
	if err := s.raft.Barrier(time.Minute).Error(); err != nil {
		return nil, nil, applyError(err)
	}
	f := s.raft.Snapshot()
	if err := f.Error(); err != nil {
		return nil, nil, fmt.Errorf("server: snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("server: open snapshot: %w", err)
	}
	return meta, rc, nil
}

// OpenLocalSnapshot snapshots the state this server has applied, without
// the leader: GET /v1/snapshot?stale on a follower, which may lag behind
// the leader, or have no leader at all. The state is spooled to a
// temporary file (the archive needs its size first) that Close removes.
func (s *Server) OpenLocalSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	snap := s.store.Snapshot()
	idx := snap.LatestIndex()
	f, err := os.CreateTemp("", "trellis-snapshot-*")
	if err != nil {
		return nil, nil, fmt.Errorf("server: snapshot spool: %w", err)
	}
	spool := &spoolFile{f}
	if err := snap.Persist(f); err != nil {
		spool.Close()
		return nil, nil, fmt.Errorf("server: snapshot: %w", err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		spool.Close()
		return nil, nil, fmt.Errorf("server: snapshot spool: %w", err)
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		spool.Close()
		return nil, nil, fmt.Errorf("server: stale snapshot: raft configuration: %w", err)
	}
	term, _ := strconv.ParseUint(s.raft.Stats()["last_log_term"], 10, 64)
	meta := &raft.SnapshotMeta{
		Version: raft.SnapshotVersionMax, ID: fmt.Sprintf("local-%d-%d", term, idx),
		Index: idx, Term: term, Configuration: cf.Configuration(), ConfigurationIndex: cf.Index(), Size: size,
	}
	return meta, spool, nil
}

// spoolFile is a temporary file removed when closed.
type spoolFile struct{ *os.File }

func (f *spoolFile) Close() error {
	err := f.File.Close()
	os.Remove(f.Name())
	return err
}

// SnapshotRestore replaces the whole state with the one in a snapshot
// archive read from r. A damaged archive is a BadRequestError and changes
// nothing. Session TTLs restart in full, as after a leader change.
func (s *Server) SnapshotRestore(r io.Reader) error {
	a, err := snapshot.Read(r)
	if err != nil {
		return structs.BadRequestError{Reason: err.Error()}
	}
	defer a.Close()
	st, err := a.State()
	if err != nil {
		return err
	}
	if err := s.raft.Restore(&a.Meta, st, time.Minute); err != nil {
		return fmt.Errorf("server: restore: %w", applyError(err))
	}
	s.stopSessionTimers()
	s.initSessionTimers()
	return nil
}

// Configuration returns the raft configuration with each server's node
// name and which one leads.
func (s *Server) Configuration() (*structs.RaftConfiguration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leaderID := s.raft.LeaderWithID()
	out := &structs.RaftConfiguration{Index: f.Index(), Servers: []*structs.RaftServer{}}
	for _, srv := range f.Configuration().Servers {
		node := string(srv.ID)
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			node = s.cfg.NodeName
		}
		out.Servers = append(out.Servers, &structs.RaftServer{
			ID: string(srv.ID), Node: node, Address: string(srv.Address),
			Leader: srv.ID == leaderID, ProtocolVersion: "3", Voter: srv.Suffrage == raft.Voter,
			LastIndex: s.raft.LastIndex(),
		})
	}
	return out, nil
}
