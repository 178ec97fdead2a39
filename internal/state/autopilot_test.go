package state

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func readAutopilot(t *testing.T, s *Store) (uint64, *structs.AutopilotConfig) {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	idx, c, err := r.AutopilotConfig(nil)
	if err != nil {
		t.Fatalf("AutopilotConfig: %v", err)
	}
	return idx, c
}

// The configuration is a single row: absent until set, replaced whole by
// each write with CreateIndex kept, and check-and-set against its
// ModifyIndex, 0 standing for "never set".
func TestAutopilotConfigSetAndCAS(t *testing.T) {
	s := New()
	if idx, c := readAutopilot(t, s); idx != 0 || c != nil {
		t.Fatalf("empty store: %d, %+v; want 0, nil", idx, c)
	}
	ws := memdb.NewWatchSet()
	r := s.Read()
	if _, _, err := r.AutopilotConfig(ws); err != nil {
		t.Fatal(err)
	}
	r.Abort()

	cfg := &structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(time.Second), MaxTrailingLogs: 7}
	for _, tc := range []struct {
		name     string
		idx      uint64
		cas      bool
		casIndex uint64
		trailing uint64
		want     bool
		wantIdx  [2]uint64 // CreateIndex, ModifyIndex after
	}{
		{"cas against a stale index while unset", 5, true, 4, 1, false, [2]uint64{}},
		{"cas 0 while unset", 6, true, 0, 2, true, [2]uint64{6, 6}},
		{"cas 0 once set", 7, true, 0, 3, false, [2]uint64{6, 6}},
		{"cas against the ModifyIndex", 8, true, 6, 4, true, [2]uint64{6, 8}},
		{"plain set", 9, false, 0, 5, true, [2]uint64{6, 9}},
	} {
		c := *cfg
		c.MaxTrailingLogs = tc.trailing
		ok, err := s.AutopilotSetConfig(tc.idx, &c, tc.cas, tc.casIndex)
		if err != nil || ok != tc.want {
			t.Fatalf("%s: AutopilotSetConfig = %v, %v; want %v", tc.name, ok, err, tc.want)
		}
		idx, got := readAutopilot(t, s)
		if tc.wantIdx == ([2]uint64{}) {
			if got != nil {
				t.Fatalf("%s: stored %+v, want nothing", tc.name, got)
			}
			continue
		}
		if got == nil || got.CreateIndex != tc.wantIdx[0] || got.ModifyIndex != tc.wantIdx[1] || idx != tc.wantIdx[1] {
			t.Fatalf("%s: read %d, %+v; want indexes %v", tc.name, idx, got, tc.wantIdx)
		}
		if tc.want && got.MaxTrailingLogs != tc.trailing {
			t.Errorf("%s: MaxTrailingLogs = %d, want %d", tc.name, got.MaxTrailingLogs, tc.trailing)
		}
	}
	// Already fired: Watch returns at once.
	if timedOut := ws.Watch(time.After(10 * time.Second)); timedOut {
		t.Error("a write did not wake a reader watching the configuration")
	}
	if got := s.LatestIndex(); got != 9 {
		t.Errorf("LatestIndex = %d, want 9: the configuration's writes count", got)
	}
}

// The configuration survives a snapshot and restore, index included, and
// inspect counts it.
func TestAutopilotConfigSnapshotRoundTrip(t *testing.T) {
	s := New()
	want := structs.AutopilotConfig{CleanupDeadServers: false, LastContactThreshold: structs.Duration(300 * time.Millisecond),
		MaxTrailingLogs: 9, MinQuorum: 3, ServerStabilizationTime: structs.Duration(2 * time.Second),
		RedundancyZoneTag: "zone", DisableUpgradeMigration: true, UpgradeVersionTag: "ver"}
	if ok, err := s.AutopilotSetConfig(12, &want, false, 0); !ok || err != nil {
		t.Fatalf("AutopilotSetConfig = %v, %v", ok, err)
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	counts, err := Inspect(bytes.NewReader(buf.Bytes()))
	if err != nil || counts[tableAutopilot] != 1 {
		t.Errorf("Inspect = %v, %v; want one %s record", counts, err, tableAutopilot)
	}
	restored := New()
	if err := restored.Restore(&buf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	idx, got := readAutopilot(t, restored)
	want.CreateIndex, want.ModifyIndex = 12, 12
	if idx != 12 || got == nil || !reflect.DeepEqual(*got, want) {
		t.Errorf("restored: %d, %+v; want 12, %+v", idx, got, want)
	}
}
