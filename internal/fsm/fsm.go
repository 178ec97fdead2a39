// Package fsm is the raft state machine: it decodes each committed log
// entry by its message type and applies it to the state store. Apply is
// deterministic; Snapshot is cheap (a memdb snapshot) and Persist does the
// I/O; Restore replaces the whole store.
package fsm

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// MessageType tags each raft log entry. The numbers are part of the
// on-disk format: never reuse or renumber one.
type MessageType byte

const (
	RegisterRequestType   MessageType = 1
	DeregisterRequestType MessageType = 2
	KVSRequestType        MessageType = 3
	SessionRequestType    MessageType = 4
	TxnRequestType        MessageType = 5
	TombstoneReapType     MessageType = 6
	// CoordinateBatchUpdateType sets nodes' network coordinates.
	CoordinateBatchUpdateType MessageType = 7
	// AutopilotSetConfigType sets the autopilot configuration.
	AutopilotSetConfigType MessageType = 8
	// ConnectCARequestType sets the Connect CA configuration and roots.
	ConnectCARequestType MessageType = 9
	// ConfigEntryRequestType writes or deletes a config entry
	// (ConfigEntryRequest, config_entry.go).
	ConfigEntryRequestType MessageType = 10
)

// KVSRequest is one KV write.
type KVSRequest struct {
	Op    string
	Entry structs.DirEntry
}

// Session operations.
const (
	SessionCreate  = "create"
	SessionDestroy = "destroy"
)

// SessionRequest creates or destroys a session.
type SessionRequest struct {
	Op      string
	Session structs.Session
}

// TxnRequest is a transaction.
type TxnRequest struct {
	Ops []*structs.TxnOp
}

// TombstoneReapRequest removes KV tombstones up to an index.
type TombstoneReapRequest struct {
	Index uint64
}

// CoordinateBatchUpdateRequest sets the network coordinates of nodes, in
// order. Updates for nodes the catalog does not hold are skipped.
type CoordinateBatchUpdateRequest struct {
	Updates []*structs.CoordinateEntry
}

// AutopilotSetConfigRequest replaces the autopilot configuration; with
// CAS, only if CASIndex is the ModifyIndex of the stored one (0: none is
// stored). Apply returns whether it was written.
type AutopilotSetConfigRequest struct {
	Config   structs.AutopilotConfig
	CAS      bool
	CASIndex uint64
}

// FSM applies log entries to a state store.
type FSM struct {
	store  *state.Store
	logger *slog.Logger
	handle *codec.MsgpackHandle // encodes and decodes log entries; never changed after New
}

// New returns an FSM writing to store.
func New(store *state.Store, logger *slog.Logger) *FSM {
	return &FSM{store: store, logger: logger, handle: state.NewMsgpackHandle()}
}

// Store returns the state store the FSM writes.
func (f *FSM) Store() *state.Store { return f.store }

// Encode builds a log entry payload for Apply. It is safe for concurrent
// use.
func (f *FSM) Encode(t MessageType, msg any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	if err := codec.NewEncoder(&buf, f.handle).Encode(msg); err != nil {
		return nil, fmt.Errorf("fsm: encode type %d: %w", t, err)
	}
	return buf.Bytes(), nil
}

// Apply applies one committed entry. Its return value is handed back to
// the caller of raft.Apply: an error, a bool for conditional KV and
// autopilot configuration writes, or a *structs.TxnResponse.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	t := MessageType(l.Data[0])
	dec := codec.NewDecoderBytes(l.Data[1:], f.handle)
	switch t {
	case RegisterRequestType:
		var req structs.RegisterRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		return f.store.EnsureRegistration(l.Index, &req)
	case DeregisterRequestType:
		var req structs.DeregisterRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		switch {
		case req.ServiceID != "":
			return f.store.DeleteService(l.Index, req.Node, req.ServiceID)
		case req.CheckID != "":
			return f.store.DeleteCheck(l.Index, req.Node, req.CheckID)
		default:
			return f.store.DeleteNode(l.Index, req.Node)
		}
	case KVSRequestType:
		var req KVSRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		ok, err := f.store.KVApply(l.Index, req.Op, &req.Entry)
		if err != nil {
			return err
		}
		return ok
	case SessionRequestType:
		var req SessionRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		switch req.Op {
		case SessionCreate:
			return f.store.SessionCreate(l.Index, &req.Session)
		case SessionDestroy:
			return f.store.SessionDestroy(l.Index, req.Session.ID)
		}
		return fmt.Errorf("fsm: unknown session op %q", req.Op)
	case TxnRequestType:
		var req TxnRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		results, errs := f.store.TxnApply(l.Index, req.Ops)
		return &structs.TxnResponse{Results: results, Errors: errs}
	case TombstoneReapType:
		var req TombstoneReapRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		return f.store.ReapTombstones(req.Index)
	case CoordinateBatchUpdateType:
		var req CoordinateBatchUpdateRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		return f.store.CoordinateBatchUpdate(l.Index, req.Updates)
	case AutopilotSetConfigType:
		var req AutopilotSetConfigRequest
		if err := dec.Decode(&req); err != nil {
			return f.corrupt(t, l.Index, err)
		}
		ok, err := f.store.AutopilotSetConfig(l.Index, &req.Config, req.CAS, req.CASIndex)
		if err != nil {
			return err
		}
		return ok
	case ConnectCARequestType:
		return f.applyConnectCA(dec, l.Index) // connect_ca.go
	case ConfigEntryRequestType:
		return f.applyConfigEntry(dec, l.Index)
	}
	// An unknown type is from a newer version: applying nothing keeps this
	// server's state consistent with what it understands, and says so.
	f.logger.Error("fsm: unknown message type, entry skipped", "type", t, "index", l.Index)
	return fmt.Errorf("fsm: unknown message type %d", t)
}

func (f *FSM) corrupt(t MessageType, idx uint64, err error) error {
	f.logger.Error("fsm: undecodable entry", "type", t, "index", idx, "error", err)
	return fmt.Errorf("fsm: decode type %d at index %d: %w", t, idx, err)
}

// Snapshot captures the state for raft.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{snap: f.store.Snapshot()}, nil
}

// Restore replaces the state with a snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

type snapshot struct {
	snap *state.Snapshot
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.snap.Persist(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
