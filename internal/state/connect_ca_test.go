package state

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func caRoot(id string, active bool) *structs.CARoot {
	return &structs.CARoot{ID: id, Name: "root " + id, RootCert: "PEM " + id, Active: active,
		SigningKey: "KEY " + id, PrivateKeyType: "ec", PrivateKeyBits: 256,
		NotBefore: time.Unix(1000, 0).UTC(), NotAfter: time.Unix(2000, 0).UTC()}
}

func readCA(t *testing.T, s *Store) (uint64, *structs.CAConfiguration, uint64, []*structs.CARoot) {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	ci, cfg, err := r.CAConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ri, roots, err := r.CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ci, cfg, ri, roots
}

// The configuration and roots are written together, check-and-set on the
// configuration's ModifyIndex; a refused write changes nothing.
func TestCASetCAS(t *testing.T) {
	s := New()
	cfg := &structs.CAConfiguration{ClusterID: "c1", Provider: "consul", Config: map[string]any{"LeafCertTTL": "72h"}}
	if ok, err := s.CASet(5, cfg, []*structs.CARoot{caRoot("a", true)}, 1); ok || err != nil {
		t.Fatalf("CASet with a stale CAS index on an empty store = %v, %v; want false", ok, err)
	}
	if ok, err := s.CASet(5, cfg, []*structs.CARoot{caRoot("a", true)}, 0); !ok || err != nil {
		t.Fatalf("first CASet = %v, %v", ok, err)
	}
	ci, got, ri, roots := readCA(t, s)
	if ci != 5 || ri != 5 || got.CreateIndex != 5 || got.ModifyIndex != 5 || len(roots) != 1 || roots[0].CreateIndex != 5 {
		t.Fatalf("after first set: %d %+v %d %+v", ci, got, ri, roots)
	}
	// A second leader that read the empty store loses.
	if ok, _ := s.CASet(6, cfg, []*structs.CARoot{caRoot("b", true)}, 0); ok {
		t.Fatal("CASet with CAS 0 over a stored CA succeeded")
	}
	// Rotation: a replaced, b added; the config keeps its CreateIndex.
	old := caRoot("a", false)
	old.RotatedOutAt = time.Unix(1500, 0).UTC()
	if ok, err := s.CASet(7, cfg, []*structs.CARoot{old, caRoot("b", true)}, 5); !ok || err != nil {
		t.Fatalf("rotation CASet = %v, %v", ok, err)
	}
	ci, got, ri, roots = readCA(t, s)
	if ci != 7 || got.CreateIndex != 5 || got.ModifyIndex != 7 || ri != 7 || len(roots) != 2 ||
		roots[0].ID != "a" || roots[0].Active || roots[0].CreateIndex != 5 || roots[0].ModifyIndex != 7 ||
		roots[1].ID != "b" || !roots[1].Active || roots[1].CreateIndex != 7 {
		t.Fatalf("after rotation: %+v %+v", got, roots)
	}
	// Roots only (a prune): the config is unchanged.
	if ok, err := s.CASet(9, nil, []*structs.CARoot{caRoot("b", true)}, 7); !ok || err != nil {
		t.Fatalf("prune CASet = %v, %v", ok, err)
	}
	ci, _, ri, roots = readCA(t, s)
	if ci != 7 || ri != 9 || len(roots) != 1 || roots[0].ID != "b" || roots[0].ModifyIndex != 7 {
		t.Fatalf("after prune: config index %d, roots index %d %+v", ci, ri, roots)
	}
	// Two active roots are refused.
	if _, err := s.CASet(10, nil, []*structs.CARoot{caRoot("b", true), caRoot("c", true)}, 7); err == nil {
		t.Fatal("two active roots accepted")
	}
	if _, _, ri, roots = readCA(t, s); ri != 9 || len(roots) != 1 {
		t.Fatalf("refused write changed the roots: %d %+v", ri, roots)
	}
}

// The CA survives a snapshot and restore, the roots' private keys
// included (they are left out of JSON, not of snapshots).
func TestCASnapshotRoundTrip(t *testing.T) {
	s := New()
	cfg := &structs.CAConfiguration{ClusterID: "c1", Provider: "consul",
		Config: map[string]any{"LeafCertTTL": "72h", "PrivateKeyBits": 256}}
	old := caRoot("a", false)
	old.RotatedOutAt = time.Unix(1500, 0).UTC()
	old.PruneAfter = time.Unix(1800, 0).UTC()
	neu := caRoot("b", true)
	neu.IntermediateCerts = []string{"CROSS"}
	if ok, err := s.CASet(5, cfg, []*structs.CARoot{old, neu}, 0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	counts, err := Inspect(bytes.NewReader(buf.Bytes()))
	if err != nil || counts[tableCARoots] != 2 || counts[tableCAConfig] != 1 {
		t.Fatalf("Inspect = %v, %v", counts, err)
	}
	s2 := New()
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	ci, got, ri, roots := readCA(t, s2)
	_, want, _, wantRoots := readCA(t, s)
	if ci != 5 || ri != 5 || s2.LatestIndex() != 5 {
		t.Errorf("indexes after restore: config %d roots %d latest %d", ci, ri, s2.LatestIndex())
	}
	if got.ClusterID != want.ClusterID || got.Config["LeafCertTTL"] != "72h" || got.CreateIndex != 5 {
		t.Errorf("config after restore: %+v", got)
	}
	if !reflect.DeepEqual(roots, wantRoots) {
		t.Errorf("roots after restore:\n%+v\nwant\n%+v", roots, wantRoots)
	}
	if roots[0].SigningKey != "KEY a" || !roots[0].PruneAfter.Equal(old.PruneAfter) {
		t.Errorf("hidden fields lost in the snapshot: %+v", roots[0])
	}
}
