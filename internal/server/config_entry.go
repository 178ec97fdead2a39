package server

import (
	"fmt"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/fsm"
)

// ConfigEntryApply commits one config entry write through raft: op is one
// of the state.ConfigEntry* ops; e is the entry to upsert (normalised and
// validated) or nil for deletes of kind/name. It reports whether the write
// happened (false: a -cas op whose index did not match); an error the FSM
// returned (a rule across entries broken) is a structs.BadRequestError
// and nothing changed.
func (s *Server) ConfigEntryApply(op, kind, name string, e configentry.Entry, casIndex uint64) (bool, error) {
	req := &fsm.ConfigEntryRequest{Op: op, Kind: kind, Name: name, CASIndex: casIndex}
	if e != nil {
		data, err := configentry.Marshal(e)
		if err != nil {
			return false, fmt.Errorf("server: config entry %s/%s: %w", e.GetKind(), e.GetName(), err)
		}
		req.Kind, req.Name, req.Entry = e.GetKind(), e.GetName(), data
	}
	resp, err := s.Apply(fsm.ConfigEntryRequestType, req)
	if err != nil {
		return false, err
	}
	ok, _ := resp.(bool)
	return ok, nil
}
