package api_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestTxnWrite(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	_, err := kv.Put(&api.KVPair{Key: "t/old", Value: []byte("old")}, nil)
	must(t, err)
	old := mustGet(t, kv, "t/old")

	ok, resp, _, err := a.c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/a", Value: []byte("A"), Flags: 7}},
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: "t/old", Value: []byte("new"), Index: old.ModifyIndex}},
	}, nil)
	must(t, err)
	if !ok || len(resp.Errors) != 0 || len(resp.Results) != 2 {
		t.Fatalf("txn = ok %v, %+v", ok, resp)
	}
	// Writes report the entry without its value.
	if r := resp.Results[0].KV; r.Key != "t/a" || r.Flags != 7 || r.Value != nil || r.ModifyIndex == 0 {
		t.Errorf("result 0 = %+v", r)
	}
	if v := mustGet(t, kv, "t/old"); string(v.Value) != "new" {
		t.Errorf("t/old = %q, want new", v.Value)
	}
	a1 := mustGet(t, kv, "t/a")
	if string(a1.Value) != "A" || a1.Flags != 7 {
		t.Errorf("t/a = %+v", a1)
	}

	// Several verbs in one transaction; every write shares one index.
	ok, resp, _, err = a.c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: "t/a", Index: a1.ModifyIndex}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/b", Value: []byte("B")}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "t/c", Value: []byte("C")}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "t/a"}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: "t/old"}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: "t/old"}},
	}, nil)
	must(t, err)
	if !ok || len(resp.Errors) != 0 {
		t.Fatalf("txn = ok %v, errors %v", ok, txnErrors(resp))
	}
	b, c := mustGet(t, kv, "t/b"), mustGet(t, kv, "t/c")
	if b.ModifyIndex != c.ModifyIndex {
		t.Errorf("writes of one txn at indexes %d and %d, want one", b.ModifyIndex, c.ModifyIndex)
	}
	var gotA bool
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.Key == "t/a" && string(r.KV.Value) == "A" {
			gotA = true
		}
	}
	if !gotA {
		t.Errorf("get t/a in txn did not return its value: %+v", resp.Results)
	}
	if p, _, _ := kv.Get("t/old", nil); p != nil {
		t.Errorf("t/old not deleted by the txn")
	}
}

func txnErrors(r *api.TxnResponse) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, e := range r.Errors {
		out = append(out, fmt.Sprintf("op %d: %s", e.OpIndex, e.What))
	}
	return out
}

func TestTxnRollback(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	_, err := kv.Put(&api.KVPair{Key: "r/x", Value: []byte("x0")}, nil)
	must(t, err)
	x := mustGet(t, kv, "r/x")
	_, before, err := kv.List("r/", nil)
	must(t, err)

	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "r/new", Value: []byte("n")}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "r/x", Value: []byte("x1")}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: "r/x", Index: x.ModifyIndex + 100}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: "r/x"}},
	}
	ok, resp, _, err := a.c.Txn().Txn(ops, nil)
	must(t, err)
	if ok {
		t.Fatalf("txn with a failing check-index succeeded")
	}
	if len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 2 || resp.Errors[0].What == "" {
		t.Errorf("Errors = %v, want one naming op 2", txnErrors(resp))
	}
	if len(resp.Results) != 0 {
		t.Errorf("Results of a failed txn = %+v, want none", resp.Results)
	}
	if p, _, _ := kv.Get("r/new", nil); p != nil {
		t.Errorf("r/new written by a rolled-back txn")
	}
	if p := mustGet(t, kv, "r/x"); string(p.Value) != "x0" || p.ModifyIndex != x.ModifyIndex {
		t.Errorf("r/x changed by a rolled-back txn: %+v", p)
	}
	_, after, err := kv.List("r/", nil)
	must(t, err)
	if after.LastIndex != before.LastIndex {
		t.Errorf("prefix index moved from %d to %d after a rolled-back txn", before.LastIndex, after.LastIndex)
	}

	// On the wire: 409 with Errors.
	body, err := json.Marshal(ops)
	must(t, err)
	r := a.do(t, "PUT", "/v1/txn", body).expect(t, "failed txn", 409)
	var out struct {
		Results []any
		Errors  []struct {
			OpIndex int
			What    string
		}
	}
	must(t, json.Unmarshal([]byte(r.body), &out))
	if len(out.Errors) != 1 || out.Errors[0].OpIndex != 2 {
		t.Errorf("409 body = %s", r.body)
	}

	// Failed lock and CAS ops roll back too.
	ok, resp, _, err = a.c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "r/new", Value: []byte("n")}},
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: "r/x", Value: []byte("x2"), Index: x.ModifyIndex + 1}},
	}, nil)
	must(t, err)
	if ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 {
		t.Errorf("failed CAS: ok %v, errors %v", ok, txnErrors(resp))
	}
	if p, _, _ := kv.Get("r/new", nil); p != nil {
		t.Errorf("r/new written by a txn whose CAS failed")
	}
}

func TestTxnLimitsAndReadOnly(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	for _, k := range []string{"ro/a", "ro/b", "ro/sub/c", "rox"} {
		_, err := kv.Put(&api.KVPair{Key: k, Value: []byte(k)}, nil)
		must(t, err)
	}

	// Too many operations: 413, nothing applied.
	var ops api.TxnOps
	for i := range 129 {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("many/%03d", i), Value: []byte("v")}})
	}
	_, _, _, err := a.c.Txn().Txn(ops, nil)
	if err == nil || !strings.Contains(err.Error(), "too many operations") {
		t.Errorf("129 ops: err = %v, want too many operations", err)
	}
	body, err := json.Marshal(ops)
	must(t, err)
	a.do(t, "PUT", "/v1/txn", body).expect(t, "129 ops", 413)
	if keys, _, _ := kv.Keys("many/", "", nil); len(keys) != 0 {
		t.Errorf("%d keys written by a refused txn", len(keys))
	}
	// 128 is allowed.
	ok, _, _, err := a.c.Txn().Txn(ops[:128], nil)
	must(t, err)
	if !ok {
		t.Errorf("128 ops refused")
	}

	// A read-only transaction, with get-tree.
	ok, resp, _, err := a.c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "rox"}},
		{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: "ro/"}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: "ro/none"}},
	}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("read-only txn failed: %v", txnErrors(resp))
	}
	var got []string
	for _, r := range resp.Results {
		got = append(got, r.KV.Key+"="+string(r.KV.Value))
	}
	if want := []string{"rox=rox", "ro/a=ro/a", "ro/b=ro/b", "ro/sub/c=ro/sub/c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("read-only results = %v, want %v", got, want)
	}
	// A read of a missing key fails the transaction.
	ok, resp, _, err = a.c.Txn().Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVGet, Key: "ro/none"}}}, nil)
	must(t, err)
	if ok || len(resp.Errors) != 1 {
		t.Errorf("get of a missing key: ok %v, errors %v", ok, txnErrors(resp))
	}

	// Bad input is a 400.
	a.do(t, "PUT", "/v1/txn", `[{"KV":{"Verb":"frobnicate","Key":"x"}}]`).expect(t, "unknown verb", 409)
	a.do(t, "PUT", "/v1/txn", `[{"KV":`).expect(t, "malformed", 400)
	a.do(t, "PUT", "/v1/txn", `{"KV":{}}`).expect(t, "not a list", 400)
}
