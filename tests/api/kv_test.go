package api_test

import (
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestKVBasics(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()

	// Missing key: the client gets nil, the wire a 404.
	p, _, err := kv.Get("missing", nil)
	if err != nil || p != nil {
		t.Fatalf("Get(missing) = %+v, %v; want nil, nil", p, err)
	}
	a.do(t, "GET", "/v1/kv/missing", nil).expect(t, "GET missing", 404)

	_, err = kv.Put(&api.KVPair{Key: "app/config", Value: []byte("v1"), Flags: 42}, nil)
	must(t, err)
	p, meta, err := kv.Get("app/config", nil)
	must(t, err)
	if p == nil || string(p.Value) != "v1" || p.Flags != 42 || p.CreateIndex == 0 || p.ModifyIndex != p.CreateIndex {
		t.Fatalf("Get(app/config) = %+v", p)
	}
	if meta.LastIndex != p.ModifyIndex {
		t.Errorf("X-Consul-Index = %d, want the key's ModifyIndex %d", meta.LastIndex, p.ModifyIndex)
	}

	// ?raw returns the bytes alone.
	r := a.do(t, "GET", "/v1/kv/app/config?raw", nil).expect(t, "raw", 200)
	if r.body != "v1" {
		t.Errorf("raw body = %q, want v1", r.body)
	}
	// Binary values round-trip.
	bin := []byte{0, 1, 2, 0xff, '\n'}
	_, err = kv.Put(&api.KVPair{Key: "bin", Value: bin}, nil)
	must(t, err)
	p, _, err = kv.Get("bin", nil)
	must(t, err)
	if !bytes.Equal(p.Value, bin) {
		t.Errorf("binary value = %v, want %v", p.Value, bin)
	}

	// Overwrite keeps CreateIndex and raises ModifyIndex.
	create := mustGet(t, kv, "app/config").CreateIndex
	_, err = kv.Put(&api.KVPair{Key: "app/config", Value: []byte("v2")}, nil)
	must(t, err)
	p = mustGet(t, kv, "app/config")
	if p.CreateIndex != create || p.ModifyIndex <= create || string(p.Value) != "v2" || p.Flags != 0 {
		t.Errorf("after overwrite = %+v", p)
	}

	// An empty value is stored as such.
	_, err = kv.Put(&api.KVPair{Key: "empty"}, nil)
	must(t, err)
	if p := mustGet(t, kv, "empty"); len(p.Value) != 0 {
		t.Errorf("empty value = %q", p.Value)
	}
	a.do(t, "PUT", "/v1/kv/x?flags=notanumber", "v").expect(t, "bad flags", 400)

	_, err = kv.Delete("app/config", nil)
	must(t, err)
	if p, _, _ := kv.Get("app/config", nil); p != nil {
		t.Errorf("app/config still there after delete")
	}
	// Deleting a missing key succeeds.
	_, err = kv.Delete("app/config", nil)
	must(t, err)
}

func mustGet(t *testing.T, kv *api.KV, key string) *api.KVPair {
	t.Helper()
	p, _, err := kv.Get(key, nil)
	must(t, err)
	if p == nil {
		t.Fatalf("key %q missing", key)
	}
	return p
}

func TestKVListKeysDeleteTree(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	for _, k := range []string{"web/a", "web/b", "web/sub/c", "web/sub/d", "webx", "other/e"} {
		_, err := kv.Put(&api.KVPair{Key: k, Value: []byte(k)}, nil)
		must(t, err)
	}

	pairs, _, err := kv.List("web/", nil)
	must(t, err)
	var got []string
	for _, p := range pairs {
		got = append(got, p.Key)
	}
	if want := []string{"web/a", "web/b", "web/sub/c", "web/sub/d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("List(web/) = %v, want %v", got, want)
	}

	for _, tc := range []struct {
		prefix, sep string
		want        []string
	}{
		{"web/", "", []string{"web/a", "web/b", "web/sub/c", "web/sub/d"}},
		{"web/", "/", []string{"web/a", "web/b", "web/sub/"}},
		{"web", "/", []string{"web/", "webx"}},
		{"", "/", []string{"other/", "web/", "webx"}},
	} {
		keys, _, err := kv.Keys(tc.prefix, tc.sep, nil)
		must(t, err)
		if !reflect.DeepEqual(keys, tc.want) {
			t.Errorf("Keys(%q, %q) = %v, want %v", tc.prefix, tc.sep, keys, tc.want)
		}
	}
	// Nothing under a prefix: 404, which the client reports as empty.
	a.do(t, "GET", "/v1/kv/nothing/?recurse", nil).expect(t, "empty list", 404)
	a.do(t, "GET", "/v1/kv/nothing/?keys", nil).expect(t, "empty keys", 404)
	pairs, _, err = kv.List("nothing/", nil)
	if err != nil || len(pairs) != 0 {
		t.Errorf("List(nothing/) = %v, %v", pairs, err)
	}

	_, err = kv.DeleteTree("web/", nil)
	must(t, err)
	keys, _, err := kv.Keys("", "", nil)
	must(t, err)
	if want := []string{"other/e", "webx"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("keys after DeleteTree(web/) = %v, want %v", keys, want)
	}
	a.do(t, "DELETE", "/v1/kv/?recurse", nil).expect(t, "delete everything", 200)
	a.do(t, "GET", "/v1/kv/?keys", nil).expect(t, "keys after deleting everything", 404)
}

func TestKVCAS(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()

	// CAS 0 creates only when absent.
	ok, _, err := kv.CAS(&api.KVPair{Key: "c", Value: []byte("1"), ModifyIndex: 0}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("CAS create = false, want true")
	}
	ok, _, err = kv.CAS(&api.KVPair{Key: "c", Value: []byte("2"), ModifyIndex: 0}, nil)
	must(t, err)
	if ok {
		t.Errorf("CAS 0 on an existing key = true, want false")
	}
	p := mustGet(t, kv, "c")
	ok, _, err = kv.CAS(&api.KVPair{Key: "c", Value: []byte("3"), ModifyIndex: p.ModifyIndex + 1000}, nil)
	must(t, err)
	if ok {
		t.Errorf("CAS with a wrong index = true, want false")
	}
	if v := string(mustGet(t, kv, "c").Value); v != "1" {
		t.Errorf("value after failed CAS = %q, want 1", v)
	}
	ok, _, err = kv.CAS(&api.KVPair{Key: "c", Value: []byte("4"), ModifyIndex: p.ModifyIndex}, nil)
	must(t, err)
	if !ok {
		t.Errorf("CAS with the right index = false, want true")
	}
	p = mustGet(t, kv, "c")

	// Delete-CAS.
	ok, _, err = kv.DeleteCAS(&api.KVPair{Key: "c", ModifyIndex: p.ModifyIndex - 1}, nil)
	must(t, err)
	if ok {
		t.Errorf("DeleteCAS with a stale index = true, want false")
	}
	mustGet(t, kv, "c")
	ok, _, err = kv.DeleteCAS(&api.KVPair{Key: "c", ModifyIndex: p.ModifyIndex}, nil)
	must(t, err)
	if !ok {
		t.Errorf("DeleteCAS with the right index = false, want true")
	}
	if p, _, _ := kv.Get("c", nil); p != nil {
		t.Errorf("c still there after DeleteCAS")
	}
	a.do(t, "PUT", "/v1/kv/c?cas=abc", "x").expect(t, "bad cas", 400)
}

func TestKVTooLarge(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	const max = 512 * 1024
	_, err := kv.Put(&api.KVPair{Key: "big", Value: bytes.Repeat([]byte("x"), max)}, nil)
	must(t, err)
	if n := len(mustGet(t, kv, "big").Value); n != max {
		t.Errorf("value at the limit: %d bytes stored, want %d", n, max)
	}

	r := a.do(t, "PUT", "/v1/kv/too-big", bytes.Repeat([]byte("x"), max+1)).expect(t, "value over the limit", 413)
	if !strings.Contains(r.body, "too large") {
		t.Errorf("413 body = %q", r.body)
	}
	// Fixed bug: the 413 was sent before the body was read, and a client
	// still writing it often got a connection reset instead.
	_, err = kv.Put(&api.KVPair{Key: "too-big", Value: bytes.Repeat([]byte("y"), max+1)}, nil)
	if err == nil || !strings.Contains(err.Error(), "413") {
		t.Errorf("client put over the limit: err = %v, want a 413", err)
	}
	if p, _, _ := kv.Get("too-big", nil); p != nil {
		t.Errorf("a refused value was stored (%d bytes)", len(p.Value))
	}
	// Without a Content-Length (chunked), the limit still holds.
	req, err := http.NewRequest("PUT", a.base+"/v1/kv/chunked", io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("c"), max)), strings.NewReader("c")))
	must(t, err)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked put over the limit: status %d, want 413", resp.StatusCode)
	}
	if p, _, _ := kv.Get("chunked", nil); p != nil {
		t.Errorf("a refused chunked value was stored")
	}
	// A transaction carrying a value over the limit is refused whole.
	_, _, _, err = a.c.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "txn-small", Value: []byte("s")}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "txn-big", Value: bytes.Repeat([]byte("t"), max+1)}},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("txn with a value over the limit: err = %v", err)
	}
	if keys, _, _ := kv.Keys("txn-", "", nil); len(keys) != 0 {
		t.Errorf("keys written by a refused txn: %v", keys)
	}

	// Overwriting with too much leaves the old value.
	a.do(t, "PUT", "/v1/kv/big", bytes.Repeat([]byte("z"), max+1)).expect(t, "overwrite over the limit", 413)
	if v := mustGet(t, kv, "big").Value; v[0] != 'x' {
		t.Errorf("refused overwrite changed the value")
	}
}
