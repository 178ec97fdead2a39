package api_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Regression: a transaction's lock ignored lock-delay (only the KV
// endpoint's ?acquire checked it), so a txn could take a lock that a
// destroyed session had held moments before. Consul fails the whole
// transaction: 409, the lock op named, nothing written.
func TestTxnLockRespectsLockDelay(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	s1, _, err := a.c.Session().Create(&api.SessionEntry{LockDelay: 15e9}, nil)
	must(t, err)
	ok, _, err := kv.Acquire(&api.KVPair{Key: "l", Session: s1}, nil)
	must(t, err)
	if !ok {
		t.Fatal("first acquire failed")
	}
	_, err = a.c.Session().Destroy(s1, nil)
	must(t, err)
	released := mustGet(t, kv, "l")
	s2, _, err := a.c.Session().Create(&api.SessionEntry{}, nil)
	must(t, err)

	body := fmt.Sprintf(`[{"KV":{"Verb":"set","Key":"other","Value":"eA=="}},{"KV":{"Verb":"lock","Key":"l","Session":%q}}]`, s2)
	r := a.do(t, "PUT", "/v1/txn", body).expect(t, "txn lock during lock-delay", 409)
	var resp api.TxnResponse
	must(t, json.Unmarshal([]byte(r.body), &resp))
	want := `failed to lock key "l" due to lock delay`
	if len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 || resp.Errors[0].What != want {
		t.Errorf("errors = %v, want op 1: %s", txnErrors(&resp), want)
	}
	if p, _, err := kv.Get("other", nil); err != nil || p != nil {
		t.Errorf("other = %+v, %v; a failed txn wrote it", p, err)
	}
	if p := mustGet(t, kv, "l"); p.Session != "" || p.ModifyIndex != released.ModifyIndex {
		t.Errorf("l = %+v, want it untouched since the release at %d", p, released.ModifyIndex)
	}

	// The client sees the same failure.
	ok, cresp, _, err := a.c.Txn().Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVLock, Key: "l", Session: s2}}}, nil)
	must(t, err)
	if ok || len(cresp.Errors) != 1 || cresp.Errors[0].What != want {
		t.Errorf("client txn = ok %v, errors %v; want the lock-delay error", ok, txnErrors(cresp))
	}
}
