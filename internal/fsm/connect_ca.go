package fsm

import (
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// ConnectCARequest writes the Connect CA in one step: the configuration
// (when Config is set) and the whole set of roots (when Roots is set),
// only if CASIndex is the stored configuration's ModifyIndex (0: no CA
// yet), so that two leaders can never both set up or rotate it. Apply
// returns whether it was written.
type ConnectCARequest struct {
	Config   *structs.CAConfiguration
	Roots    []*structs.CARoot
	CASIndex uint64
}

func (f *FSM) applyConnectCA(dec *codec.Decoder, idx uint64) any {
	var req ConnectCARequest
	if err := dec.Decode(&req); err != nil {
		return f.corrupt(ConnectCARequestType, idx, err)
	}
	ok, err := f.store.CASet(idx, req.Config, req.Roots, req.CASIndex)
	if err != nil {
		return err
	}
	return ok
}
