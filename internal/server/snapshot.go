package server

import (
	"fmt"
	"io"
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
