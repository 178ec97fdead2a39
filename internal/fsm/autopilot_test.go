package fsm

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// An autopilot configuration goes through the log encoding intact, and a
// check-and-set entry returns whether it was written.
func TestApplyAutopilotSetConfig(t *testing.T) {
	if AutopilotSetConfigType != 8 {
		t.Fatalf("AutopilotSetConfigType = %d: message type numbers are on disk and must not change", AutopilotSetConfigType)
	}
	f := New(state.New(), slog.New(slog.DiscardHandler))
	apply := func(idx uint64, req *AutopilotSetConfigRequest) any {
		t.Helper()
		buf, err := f.Encode(AutopilotSetConfigType, req)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: buf})
	}
	cfg := structs.AutopilotConfig{CleanupDeadServers: true, LastContactThreshold: structs.Duration(250 * time.Millisecond),
		MaxTrailingLogs: 10, MinQuorum: 3, ServerStabilizationTime: structs.Duration(time.Second), UpgradeVersionTag: "v"}
	if res := apply(4, &AutopilotSetConfigRequest{Config: cfg, CAS: true, CASIndex: 3}); res != false {
		t.Errorf("cas against a wrong index = %v, want false", res)
	}
	if res := apply(5, &AutopilotSetConfigRequest{Config: cfg}); res != true {
		t.Errorf("set = %v, want true", res)
	}
	if res := apply(6, &AutopilotSetConfigRequest{Config: cfg, CAS: true, CASIndex: 5}); res != true {
		t.Errorf("cas against the ModifyIndex = %v, want true", res)
	}
	r := f.Store().Read()
	defer r.Abort()
	_, got, err := r.AutopilotConfig(nil)
	want := cfg
	want.CreateIndex, want.ModifyIndex = 5, 6
	if err != nil || got == nil || *got != want {
		t.Errorf("stored %+v, %v; want %+v", got, err, want)
	}
}
