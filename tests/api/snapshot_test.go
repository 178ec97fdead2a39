package api_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// A snapshot taken from one agent restores the whole state (KV, catalog,
// sessions) into another, replacing what that one had.
func TestSnapshotSaveRestore(t *testing.T) {
	t.Parallel()
	src := start(t)
	for i := range 20 {
		_, err := src.c.KV().Put(&api.KVPair{Key: fmt.Sprintf("snap/%02d", i), Value: []byte(fmt.Sprint(i)), Flags: 7}, nil)
		must(t, err)
	}
	_, err := src.c.Catalog().Register(&api.CatalogRegistration{Node: "ext", Address: "127.0.0.9",
		Service: &api.AgentService{ID: "db1", Service: "db", Port: 5432}}, nil)
	must(t, err)
	sid, _, err := src.c.Session().Create(&api.SessionEntry{Name: "held", TTL: "30s"}, nil)
	must(t, err)
	ok, _, err := src.c.KV().Acquire(&api.KVPair{Key: "lock", Session: sid}, nil)
	must(t, err)
	if !ok {
		t.Fatal("acquire failed")
	}

	rc, meta, err := src.c.Snapshot().Save(nil)
	must(t, err)
	archive, err := io.ReadAll(rc)
	rc.Close()
	must(t, err)
	if meta.LastIndex == 0 || len(archive) == 0 {
		t.Fatalf("snapshot: index %d, %d bytes", meta.LastIndex, len(archive))
	}

	dst := start(t)
	_, err = dst.c.KV().Put(&api.KVPair{Key: "only-on-dst", Value: []byte("x")}, nil)
	must(t, err)
	// A watcher blocked on the destination wakes when the restore replaces
	// what it watched.
	_, qm, err := dst.c.KV().Get("only-on-dst", nil)
	must(t, err)
	woke := make(chan error, 1)
	go func() {
		_, _, err := dst.c.KV().Get("only-on-dst", &api.QueryOptions{WaitIndex: qm.LastIndex, WaitTime: time.Minute})
		woke <- err
	}()
	must(t, dst.c.Snapshot().Restore(nil, bytes.NewReader(archive)))

	pairs, _, err := dst.c.KV().List("snap/", nil)
	must(t, err)
	if len(pairs) != 20 || string(pairs[3].Value) != "3" || pairs[3].Flags != 7 {
		t.Fatalf("after restore: %d keys (%+v)", len(pairs), pairs)
	}
	if kv, _, _ := dst.c.KV().Get("only-on-dst", nil); kv != nil {
		t.Error("a key only the destination had survived the restore")
	}
	db, _, err := dst.c.Catalog().Service("db", "", nil)
	if err != nil || len(db) != 1 || db[0].Address != "127.0.0.9" {
		t.Errorf("after restore: catalog db = %+v, %v", db, err)
	}
	if s, _, err := dst.c.Session().Info(sid, nil); err != nil || s == nil {
		t.Errorf("after restore: session %s = %+v, %v", sid, s, err)
	}
	if kv, _, _ := dst.c.KV().Get("lock", nil); kv == nil || kv.Session != sid {
		t.Errorf("after restore: lock = %+v, want held by %s", kv, sid)
	}
	select {
	case err := <-woke:
		must(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("a blocking query was not woken by the restore")
	}
	// The destination's own node is registered again by anti-entropy.
	must(t, dst.SyncFull())
	if n, _, err := dst.c.Catalog().Node(nodeName, nil); err != nil || n == nil {
		t.Errorf("after restore and sync: own node = %+v, %v", n, err)
	}
}

// A damaged archive is refused with a 400 and changes nothing.
func TestSnapshotRestoreRejectsDamage(t *testing.T) {
	t.Parallel()
	a := start(t)
	_, err := a.c.KV().Put(&api.KVPair{Key: "keep", Value: []byte("me")}, nil)
	must(t, err)
	rc, _, err := a.c.Snapshot().Save(nil)
	must(t, err)
	archive, _ := io.ReadAll(rc)
	rc.Close()
	for name, body := range map[string][]byte{
		"garbage":   []byte("not an archive"),
		"truncated": archive[:len(archive)/2],
	} {
		resp := a.do(t, "PUT", "/v1/snapshot", body).expect(t, name, 400)
		if !strings.Contains(resp.body, "snapshot") {
			t.Errorf("%s: body %q does not say what is wrong", name, resp.body)
		}
	}
	if kv, _, _ := a.c.KV().Get("keep", nil); kv == nil || string(kv.Value) != "me" {
		t.Errorf("a refused restore changed the state: keep = %+v", kv)
	}
}

func TestOperatorRaftConfiguration(t *testing.T) {
	t.Parallel()
	a := start(t)
	cfg, err := a.c.Operator().RaftGetConfiguration(nil)
	must(t, err)
	if len(cfg.Servers) != 1 {
		t.Fatalf("servers = %+v", cfg.Servers)
	}
	s := cfg.Servers[0]
	if !s.Leader || !s.Voter || s.Node != nodeName || s.Address == "" || s.ProtocolVersion != "3" {
		t.Errorf("server = %+v", s)
	}
}
