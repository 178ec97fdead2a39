package fsm

import (
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/trellis-mesh/trellis/internal/configentry"
)

// ConfigEntryRequest writes or deletes one config entry. Op is one of
// state.ConfigEntryUpsert, ConfigEntryUpsertCAS, ConfigEntryDelete and
// ConfigEntryDeleteCAS. For upserts Entry is the entry's JSON, already
// normalised and validated (JSON, rather than the Go type, keeps the log
// independent of how each kind's type encodes in msgpack); for deletes
// Kind and Name name it. CASIndex is the ModifyIndex a -cas op expects (0:
// no entry). Apply returns whether the write happened, or a
// structs.BadRequestError when it would break a rule across entries.
type ConfigEntryRequest struct {
	Op       string
	Kind     string
	Name     string
	Entry    []byte
	CASIndex uint64
}

func (f *FSM) applyConfigEntry(dec *codec.Decoder, idx uint64) any {
	var req ConfigEntryRequest
	if err := dec.Decode(&req); err != nil {
		return f.corrupt(ConfigEntryRequestType, idx, err)
	}
	var e configentry.Entry
	if len(req.Entry) > 0 {
		var err error
		if e, err = configentry.Unmarshal(req.Kind, req.Entry); err != nil {
			return f.corrupt(ConfigEntryRequestType, idx, err)
		}
	}
	ok, err := f.store.ConfigEntryApply(idx, req.Op, req.Kind, req.Name, e, req.CASIndex)
	if err != nil {
		return err
	}
	return ok
}
