package fsm

import (
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// A config entry goes through the log encoding intact; -cas entries
// return whether they were written, and a cross-entry rule broken is an
// error with nothing changed.
func TestApplyConfigEntry(t *testing.T) {
	if ConfigEntryRequestType != 10 {
		t.Fatalf("ConfigEntryRequestType = %d: message type numbers are on disk and must not change", ConfigEntryRequestType)
	}
	f := New(state.New(), slog.New(slog.DiscardHandler))
	apply := func(idx uint64, req *ConfigEntryRequest) any {
		t.Helper()
		buf, err := f.Encode(ConfigEntryRequestType, req)
		if err != nil {
			t.Fatal(err)
		}
		return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: buf})
	}
	entry := func(body string) []byte {
		e, err := configentry.DecodeJSON([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := configentry.Marshal(e)
		return data
	}
	sd := entry(`{"Kind":"service-defaults","Name":"web","Protocol":"http","UpstreamConfig":{"Defaults":{"ConnectTimeoutMs":250}}}`)
	if res := apply(5, &ConfigEntryRequest{Op: state.ConfigEntryUpsertCAS, Kind: "service-defaults", Name: "web", Entry: sd, CASIndex: 1}); res != false {
		t.Errorf("cas against a missing entry's wrong index = %v, want false", res)
	}
	if res := apply(6, &ConfigEntryRequest{Op: state.ConfigEntryUpsert, Kind: "service-defaults", Name: "web", Entry: sd}); res != true {
		t.Errorf("upsert = %v, want true", res)
	}
	l7 := entry(`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Permissions":[{"Action":"deny","HTTP":{"PathExact":"/x"}}]}]}`)
	res := apply(7, &ConfigEntryRequest{Op: state.ConfigEntryUpsert, Kind: "service-intentions", Name: "db", Entry: l7})
	if err, ok := res.(error); !ok || !structs.IsBadRequest(err) {
		t.Errorf("L7 intention on a tcp service = %v, want a bad request", res)
	}
	r := f.Store().Read()
	defer r.Abort()
	_, e, err := r.ConfigEntry(nil, "service-defaults", "web")
	if err != nil || e == nil {
		t.Fatalf("stored %v, %v", e, err)
	}
	got := e.(*configentry.ServiceConfigEntry)
	if c, m := got.GetRaftIndex(); got.Protocol != "http" || got.UpstreamConfig.Defaults.ConnectTimeoutMs != 250 || c != 6 || m != 6 {
		t.Errorf("stored %+v", got)
	}
	if _, e, _ := r.ConfigEntry(nil, "service-intentions", "db"); e != nil {
		t.Errorf("refused entry stored: %+v", e)
	}
}
