package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Peer names a server for raft: its node ID and its RPC address.
type Peer struct {
	ID      string
	Address string
}

// BootstrapCluster starts a new cluster with the given voters, this server
// among them. Every server of a bootstrap_expect group calls it with the
// same set. It does nothing when raft already has state (a cluster exists
// or this server was added to one): that is not an error.
func (s *Server) BootstrapCluster(peers []Peer) error {
	conf := raft.Configuration{}
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// HasPeers reports whether raft knows any configuration yet, its own
// bootstrap included.
func (s *Server) HasPeers() bool {
	f := s.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// AddVoter makes a server a voter; the leader calls it for servers that
// join after the cluster was bootstrapped. Adding one already there with
// the same address does nothing.
func (s *Server) AddVoter(p Peer) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == p.ID && string(srv.Address) == p.Address && srv.Suffrage == raft.Voter {
			return nil
		}
		if string(srv.Address) == p.Address && string(srv.ID) != p.ID {
			// The same server came back with a new ID (it lost its data
			// dir): its old entry would be a voter that never answers.
			if err := s.raft.RemoveServer(srv.ID, 0, 30*time.Second).Error(); err != nil {
				return fmt.Errorf("server: remove stale voter %s at %s: %w", srv.ID, srv.Address, applyError(err))
			}
		}
	}
	if err := s.raft.AddVoter(raft.ServerID(p.ID), raft.ServerAddress(p.Address), 0, 30*time.Second).Error(); err != nil {
		return fmt.Errorf("server: add voter %s: %w", p.ID, applyError(err))
	}
	return nil
}

// LeadershipChanged returns a channel closed at this server's next gain or
// loss of leadership.
func (s *Server) LeadershipChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leaderCh
}

func (s *Server) notifyLeadership() {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	close(s.leaderCh)
	s.leaderCh = make(chan struct{})
}
