package state

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func mustEntry(t *testing.T, body string) configentry.Entry {
	t.Helper()
	e, err := configentry.DecodeJSON([]byte(body))
	if err != nil {
		t.Fatalf("DecodeJSON(%s): %v", body, err)
	}
	return e
}

func getEntry(t *testing.T, s *Store, kind, name string) configentry.Entry {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	_, e, err := r.ConfigEntry(nil, kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Writes and deletes, plain and check-and-set, keep CreateIndex, bump
// ModifyIndex and wake readers.
func TestConfigEntryApplyCAS(t *testing.T) {
	s := New()
	ws := memdb.NewWatchSet()
	r := s.Read()
	if _, _, err := r.ConfigEntries(ws, configentry.ServiceDefaults); err != nil {
		t.Fatal(err)
	}
	r.Abort()
	web := `{"Kind":"service-defaults","Name":"web","Protocol":"http"}`
	steps := []struct {
		name     string
		idx      uint64
		op       string
		body     string
		casIndex uint64
		want     bool
		indexes  [2]uint64 // after; zero: no entry
	}{
		{"cas create against a stale index", 3, ConfigEntryUpsertCAS, web, 2, false, [2]uint64{}},
		{"cas create with 0", 4, ConfigEntryUpsertCAS, web, 0, true, [2]uint64{4, 4}},
		{"cas create with 0 again", 5, ConfigEntryUpsertCAS, web, 0, false, [2]uint64{4, 4}},
		{"plain upsert", 6, ConfigEntryUpsert, web, 0, true, [2]uint64{4, 6}},
		{"cas update", 7, ConfigEntryUpsertCAS, web, 6, true, [2]uint64{4, 7}},
		{"cas delete stale", 8, ConfigEntryDeleteCAS, "", 6, false, [2]uint64{4, 7}},
		{"cas delete", 9, ConfigEntryDeleteCAS, "", 7, true, [2]uint64{}},
		{"delete missing", 10, ConfigEntryDelete, "", 0, true, [2]uint64{}},
		{"cas delete missing with 0", 11, ConfigEntryDeleteCAS, "", 0, false, [2]uint64{}},
	}
	for _, st := range steps {
		var e configentry.Entry
		if st.body != "" {
			e = mustEntry(t, st.body)
		}
		ok, err := s.ConfigEntryApply(st.idx, st.op, configentry.ServiceDefaults, "web", e, st.casIndex)
		if err != nil || ok != st.want {
			t.Fatalf("%s: = %v, %v; want %v", st.name, ok, err, st.want)
		}
		got := getEntry(t, s, configentry.ServiceDefaults, "web")
		if st.indexes == ([2]uint64{}) {
			if got != nil {
				t.Fatalf("%s: stored %+v, want none", st.name, got)
			}
			continue
		}
		if got == nil {
			t.Fatalf("%s: nothing stored", st.name)
		}
		if c, m := got.GetRaftIndex(); [2]uint64{c, m} != st.indexes {
			t.Fatalf("%s: indexes %d, %d; want %v", st.name, c, m, st.indexes)
		}
	}
	if ws.Watch(time.After(10 * time.Second)) {
		t.Error("a write did not wake a reader of the kind")
	}
	// Deleting what is not there changes nothing: the index stays at the
	// last real change, so no blocking query wakes for it.
	if got := s.LatestIndex(); got != 9 {
		t.Errorf("LatestIndex = %d, want 9", got)
	}
}

// L7 intentions need an HTTP-like protocol for their destination; the rule
// holds whichever entry is written last, and a refused write changes
// nothing.
func TestConfigEntryL7ProtocolCheck(t *testing.T) {
	s := New()
	idx := uint64(1)
	apply := func(op, kind, name, body string) error {
		t.Helper()
		idx++
		var e configentry.Entry
		if body != "" {
			e = mustEntry(t, body)
		}
		_, err := s.ConfigEntryApply(idx, op, kind, name, e, 0)
		return err
	}
	l7 := `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}]}`
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !structs.IsBadRequest(err) || !strings.Contains(err.Error(), `service "db" has protocol`) {
			t.Fatalf("%s: err %v, want a bad request about db's protocol", what, err)
		}
	}
	refused("L7 intention on tcp (the default)", apply(ConfigEntryUpsert, "", "", l7))
	if getEntry(t, s, configentry.ServiceIntentions, "db") != nil {
		t.Fatal("refused intention stored")
	}
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"proxy-defaults","Config":{"protocol":"http"}}`); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryUpsert, "", "", l7); err != nil {
		t.Fatalf("L7 intention with global http: %v", err)
	}
	refused("proxy-defaults back to tcp", apply(ConfigEntryUpsert, "", "", `{"Kind":"proxy-defaults","Config":{"protocol":"tcp"}}`))
	refused("proxy-defaults deleted", apply(ConfigEntryDelete, configentry.ProxyDefaults, "global", ""))
	refused("service-defaults tcp", apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"db","Protocol":"tcp"}`))
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"db","Protocol":"grpc"}`); err != nil {
		t.Fatal(err)
	}
	// db's own protocol now holds it up: the global default may change.
	if err := apply(ConfigEntryDelete, configentry.ProxyDefaults, "global", ""); err != nil {
		t.Fatalf("deleting proxy-defaults with db on grpc: %v", err)
	}
	refused("service-defaults deleted", apply(ConfigEntryDelete, configentry.ServiceDefaults, "db", ""))
	if sd := getEntry(t, s, configentry.ServiceDefaults, "db"); sd == nil || sd.(*configentry.ServiceConfigEntry).Protocol != "grpc" {
		t.Fatalf("refused delete changed service-defaults: %+v", sd)
	}
	// An L4 intention needs nothing.
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"}]}`); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryDelete, configentry.ServiceDefaults, "db", ""); err != nil {
		t.Fatalf("deleting service-defaults under an L4 intention: %v", err)
	}
}

// A service-router, and a service-resolver that hashes requests, need an
// HTTP-like protocol as L7 intentions do, as Consul's (which refuses
// "advanced routing" on tcp): the write that would break it is refused,
// whichever it is, and changes nothing.
func TestConfigEntryDiscoveryChainProtocolCheck(t *testing.T) {
	s := New()
	idx := uint64(1)
	apply := func(op, kind, name, body string) error {
		t.Helper()
		idx++
		var e configentry.Entry
		if body != "" {
			e = mustEntry(t, body)
		}
		_, err := s.ConfigEntryApply(idx, op, kind, name, e, 0)
		return err
	}
	refused := func(what, want string, err error) {
		t.Helper()
		if err == nil || !structs.IsBadRequest(err) || !strings.Contains(err.Error(), `service "api" has protocol "tcp"`) ||
			!strings.Contains(err.Error(), want) {
			t.Fatalf("%s: err %v, want a bad request about api's protocol and %q", what, err, want)
		}
	}
	router := `{"Kind":"service-router","Name":"api","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin"}}}]}`
	hashing := `{"Kind":"service-resolver","Name":"api","LoadBalancer":{"Policy":"ring_hash","HashPolicies":[{"SourceIP":true}]}}`
	refused("router on tcp", `service-router "api"`, apply(ConfigEntryUpsert, "", "", router))
	refused("empty router on tcp", `service-router "api"`, apply(ConfigEntryUpsert, "", "", `{"Kind":"service-router","Name":"api"}`))
	refused("hashing resolver on tcp", `service-resolver "api" has LoadBalancer.HashPolicies`, apply(ConfigEntryUpsert, "", "", hashing))
	for _, k := range []string{configentry.ServiceRouter, configentry.ServiceResolver} {
		if getEntry(t, s, k, "api") != nil {
			t.Fatalf("refused %s stored", k)
		}
	}
	// A resolver that hashes nothing works on tcp connections.
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-resolver","Name":"api","ConnectTimeout":"2s","LoadBalancer":{"Policy":"least_request"}}`); err != nil {
		t.Fatalf("L4 resolver on tcp: %v", err)
	}

	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"api","Protocol":"http"}`); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryUpsert, "", "", router); err != nil {
		t.Fatalf("router on http: %v", err)
	}
	refused("service-defaults to tcp under a router", `service-router "api"`,
		apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"api","Protocol":"tcp"}`))
	refused("service-defaults deleted under a router", `service-router "api"`,
		apply(ConfigEntryDelete, configentry.ServiceDefaults, "api", ""))
	if err := apply(ConfigEntryDelete, configentry.ServiceRouter, "api", ""); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryUpsert, "", "", hashing); err != nil {
		t.Fatalf("hashing resolver on http: %v", err)
	}
	refused("service-defaults to tcp under a hashing resolver", "HashPolicies",
		apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"api","Protocol":"tcp"}`))

	// Held up by the global protocol only: proxy-defaults cannot drop it.
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"proxy-defaults","Config":{"protocol":"grpc"}}`); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-defaults","Name":"api"}`); err != nil {
		t.Fatalf("service-defaults inheriting grpc: %v", err)
	}
	refused("proxy-defaults to tcp under a hashing resolver", "HashPolicies",
		apply(ConfigEntryUpsert, "", "", `{"Kind":"proxy-defaults","Config":{"protocol":"tcp"}}`))
	if pd := getEntry(t, s, configentry.ProxyDefaults, "global"); pd.(*configentry.ProxyConfigEntry).Config["protocol"] != "grpc" {
		t.Fatalf("refused write changed proxy-defaults: %+v", pd)
	}
	// Once the resolver stops hashing, tcp is fine again.
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"service-resolver","Name":"api","LoadBalancer":{"Policy":"ring_hash"}}`); err != nil {
		t.Fatal(err)
	}
	if err := apply(ConfigEntryUpsert, "", "", `{"Kind":"proxy-defaults","Config":{"protocol":"tcp"}}`); err != nil {
		t.Fatalf("proxy-defaults to tcp with nothing needing L7: %v", err)
	}
}

func TestConfigEntrySnapshotRestore(t *testing.T) {
	s := New()
	for i, body := range []string{
		`{"Kind":"proxy-defaults","Config":{"protocol":"http","n":3}}`,
		`{"Kind":"service-defaults","Name":"web","Protocol":"http2"}`,
		`{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"/a.*"}}]}]}`,
		`{"Kind":"mesh","HTTP":{"SanitizeXForwardedClientCert":true}}`,
	} {
		if _, err := s.ConfigEntryApply(uint64(10+i), ConfigEntryUpsert, "", "", mustEntry(t, body), 0); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	counts, err := Inspect(bytes.NewReader(buf.Bytes()))
	if err != nil || counts[tableConfigEntries] != 4 {
		t.Fatalf("Inspect = %v, %v; want 4 config entries", counts, err)
	}
	s2 := New()
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	r1, r2 := s.Read(), s2.Read()
	defer r1.Abort()
	defer r2.Abort()
	i1, want, _ := r1.ConfigEntries(nil, "")
	i2, got, err := r2.ConfigEntries(nil, "")
	if err != nil || i1 != i2 || len(got) != len(want) {
		t.Fatalf("restored %d entries at %d (%v), want %d at %d", len(got), i2, err, len(want), i1)
	}
	for i := range want {
		a, _ := configentry.Marshal(want[i])
		b, _ := configentry.Marshal(got[i])
		if !bytes.Equal(a, b) {
			t.Errorf("entry %d: restored %s, want %s", i, b, a)
		}
	}
	if s2.LatestIndex() != 13 {
		t.Errorf("restored LatestIndex = %d, want 13", s2.LatestIndex())
	}
}
