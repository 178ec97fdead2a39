package fsm

import (
	"log/slog"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// A coordinate batch goes through the log encoding intact, and updates for
// nodes the catalog lacks are skipped without failing the entry.
func TestApplyCoordinateBatchUpdate(t *testing.T) {
	f := New(state.New(), slog.New(slog.DiscardHandler))
	apply := func(idx uint64, mt MessageType, msg any) any {
		t.Helper()
		buf, err := f.Encode(mt, msg)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: buf})
	}
	if res := apply(1, RegisterRequestType, &structs.RegisterRequest{Node: "web-1", Address: "192.0.2.1"}); res != nil {
		t.Fatalf("register: %v", res)
	}
	coord := &coordinate.Coordinate{Vec: []float64{0.001, -0.5, 0, 0, 0, 0, 0, 1e-9}, Error: 0.3, Adjustment: -0.0002, Height: 0.00001}
	res := apply(2, CoordinateBatchUpdateType, &CoordinateBatchUpdateRequest{Updates: []*structs.CoordinateEntry{
		{Node: "web-1", Coord: coord},
		{Node: "not-registered", Coord: coord},
	}})
	if res != nil {
		t.Fatalf("coordinate batch: %v, want nil", res)
	}
	r := f.Store().Read()
	defer r.Abort()
	idx, got, err := r.Coordinates(nil)
	want := []*structs.CoordinateEntry{{Node: "web-1", Coord: coord}}
	if err != nil || idx != 2 || !reflect.DeepEqual(got, want) {
		t.Errorf("Coordinates = %d, %+v, %v; want 2, %+v", idx, got, err, want)
	}
}
