package httpapi

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// txnMaxReqLen is the default largest transaction body.
const txnMaxReqLen = 512 * 1024

func (a *API) txn(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	// Consul's txn_max_req_len: 512 KiB, or the KV value limit if larger.
	body, err := readBody(r, int64(max(txnMaxReqLen, a.deps.MaxKVSize)))
	if err != nil {
		return nil, err
	}
	var ops []*structs.TxnOp
	if err := structs.DecodeJSON(bytes.NewReader(body), &ops); err != nil {
		return nil, badRequest("%v", err)
	}
	if len(ops) > structs.MaxTxnOps {
		return nil, httpError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("Transaction contains too many operations (%d > %d)", len(ops), structs.MaxTxnOps)}
	}
	for i, op := range ops {
		if op == nil || op.KV == nil {
			return nil, badRequest("Operation %d: only KV operations are supported", i)
		}
		if len(op.KV.Value) > a.deps.MaxKVSize {
			return nil, httpError{code: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("Value for key %q is too large (%d > %d bytes)", op.KV.Key, len(op.KV.Value), a.deps.MaxKVSize)}
		}
	}
	var resp *structs.TxnResponse
	if state.IsReadOnlyTxn(ops) {
		res, err := a.blocking(w, r, &queryOpts{}, func(ws memdb.WatchSet, rt *state.ReadTxn) (uint64, any, error) {
			results, errs := rt.TxnRead(ops)
			return a.deps.Store.LatestIndex(), &structs.TxnResponse{Results: results, Errors: errs}, nil
		})
		if err != nil {
			return nil, err
		}
		resp = res.(*structs.TxnResponse)
	} else {
		if resp, err = a.deps.Server.TxnApply(ops); err != nil {
			return nil, err
		}
	}
	if len(resp.Errors) > 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
	}
	return resp, nil
}

func (a *API) statusLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.deps.Server.Leader(), nil
}

func (a *API) statusPeers(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.deps.Server.Peers()
}
