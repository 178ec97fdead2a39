package server

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// RemovePeer removes a server from the raft configuration, named by its ID
// or its address (one of the two). Consul's DELETE /v1/operator/raft/peer.
func (s *Server) RemovePeer(id, address string) error {
	if (id == "") == (address == "") {
		return structs.BadRequestError{Reason: "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"}
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, srv := range f.Configuration().Servers {
		if (id != "" && string(srv.ID) == id) || (address != "" && string(srv.Address) == address) {
			if err := s.raft.RemoveServer(srv.ID, 0, 30*time.Second).Error(); err != nil {
				return fmt.Errorf("server: remove peer %s: %w", srv.ID, applyError(err))
			}
			return nil
		}
	}
	if id != "" {
		return structs.NotFoundError{Reason: fmt.Sprintf("id %q was not found in the Raft configuration", id)}
	}
	return structs.NotFoundError{Reason: fmt.Sprintf("address %q was not found in the Raft configuration", address)}
}

// TransferLeader hands leadership to the voter with the given ID, or to
// any up-to-date voter when id is empty. Consul's POST
// /v1/operator/raft/transfer-leader.
func (s *Server) TransferLeader(id string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		cf := s.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return err
		}
		var target *raft.Server
		for _, srv := range cf.Configuration().Servers {
			if string(srv.ID) == id {
				target = &srv
				break
			}
		}
		if target == nil {
			return structs.NotFoundError{Reason: fmt.Sprintf("id %q was not found in the Raft configuration", id)}
		}
		if target.ID == raft.ServerID(s.cfg.NodeID) {
			return structs.BadRequestError{Reason: "cannot transfer leadership to the current leader"}
		}
		f = s.raft.LeadershipTransferToServer(target.ID, target.Address)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("server: transfer leadership: %w", err)
	}
	return nil
}
