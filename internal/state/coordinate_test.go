package state

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func testCoord(x float64) *coordinate.Coordinate {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0] = x
	return c
}

func registerNode(t *testing.T, s *Store, idx uint64, node string) {
	t.Helper()
	if err := s.EnsureRegistration(idx, &structs.RegisterRequest{Node: node, Address: "192.0.2.1"}); err != nil {
		t.Fatalf("register %s: %v", node, err)
	}
}

func readCoordinates(t *testing.T, s *Store) (uint64, []*structs.CoordinateEntry) {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	idx, out, err := r.Coordinates(nil)
	if err != nil {
		t.Fatalf("Coordinates: %v", err)
	}
	return idx, out
}

func TestCoordinateBatchUpdate(t *testing.T) {
	s := New()
	registerNode(t, s, 1, "node-a")
	registerNode(t, s, 2, "Node-B")

	err := s.CoordinateBatchUpdate(3, []*structs.CoordinateEntry{
		{Node: "node-a", Coord: testCoord(0.1)},
		{Node: "node-b", Coord: testCoord(0.2)},     // the catalog spells it Node-B
		{Node: "unknown", Coord: testCoord(0.3)},    // skipped: not in the catalog
		{Node: "node-a", Segment: "s1", Coord: nil}, // skipped: no coordinate
		{Node: "node-a", Segment: "s2", Coord: testCoord(0.4)},
	})
	if err != nil {
		t.Fatalf("CoordinateBatchUpdate: %v", err)
	}
	idx, got := readCoordinates(t, s)
	if idx != 3 {
		t.Errorf("index = %d, want 3", idx)
	}
	want := []*structs.CoordinateEntry{
		{Node: "node-a", Coord: testCoord(0.1)},
		{Node: "node-a", Segment: "s2", Coord: testCoord(0.4)},
		{Node: "Node-B", Coord: testCoord(0.2)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Coordinates =\n%s\nwant\n%s", dumpCoords(got), dumpCoords(want))
	}

	r := s.Read()
	c, err := r.Coordinate("NODE-A", "")
	r.Abort()
	if err != nil || !reflect.DeepEqual(c, testCoord(0.1)) {
		t.Errorf("Coordinate(NODE-A) = %v, %v; want %v", c, err, testCoord(0.1))
	}

	// The same coordinate again changes nothing, so the index stays.
	if err := s.CoordinateBatchUpdate(4, []*structs.CoordinateEntry{{Node: "node-a", Coord: testCoord(0.1)}}); err != nil {
		t.Fatal(err)
	}
	if idx, _ := readCoordinates(t, s); idx != 3 {
		t.Errorf("index after an identical update = %d, want 3", idx)
	}
	// An update for unknown nodes only changes nothing either.
	if err := s.CoordinateBatchUpdate(5, []*structs.CoordinateEntry{{Node: "gone", Coord: testCoord(1)}}); err != nil {
		t.Fatal(err)
	}
	if idx, got := readCoordinates(t, s); idx != 3 || len(got) != 3 {
		t.Errorf("after an unknown node's update: index %d, %d entries; want 3, 3", idx, len(got))
	}
	if err := s.CoordinateBatchUpdate(6, []*structs.CoordinateEntry{{Node: "node-a", Coord: testCoord(0.5)}}); err != nil {
		t.Fatal(err)
	}
	r = s.Read()
	idx, mine, err := r.NodeCoordinates(nil, "node-a")
	r.Abort()
	if err != nil || idx != 6 || len(mine) != 2 || !reflect.DeepEqual(mine[0].Coord, testCoord(0.5)) || mine[1].Segment != "s2" {
		t.Errorf("NodeCoordinates(node-a) = %d, %s, %v; want index 6, the new coordinate then s2", idx, dumpCoords(mine), err)
	}
}

// The store keeps its own copy: a caller changing its coordinate after the
// update must not change the stored one.
func TestCoordinateBatchUpdateCopies(t *testing.T) {
	s := New()
	registerNode(t, s, 1, "n")
	c := testCoord(0.1)
	if err := s.CoordinateBatchUpdate(2, []*structs.CoordinateEntry{{Node: "n", Coord: c}}); err != nil {
		t.Fatal(err)
	}
	c.Vec[0] = 99
	r := s.Read()
	defer r.Abort()
	if got, _ := r.Coordinate("n", ""); got.Vec[0] != 0.1 {
		t.Errorf("stored Vec[0] = %v after the caller changed its copy, want 0.1", got.Vec[0])
	}
}

func TestDeleteNodeDeletesCoordinates(t *testing.T) {
	s := New()
	registerNode(t, s, 1, "a")
	registerNode(t, s, 2, "b")
	err := s.CoordinateBatchUpdate(3, []*structs.CoordinateEntry{
		{Node: "a", Coord: testCoord(1)}, {Node: "a", Segment: "x", Coord: testCoord(2)}, {Node: "b", Coord: testCoord(3)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(4, "A"); err != nil {
		t.Fatal(err)
	}
	idx, got := readCoordinates(t, s)
	if idx != 4 || len(got) != 1 || got[0].Node != "b" {
		t.Errorf("after deleting a: index %d, %s; want index 4 and b alone", idx, dumpCoords(got))
	}
	// Deleting a node without coordinates leaves the index alone.
	registerNode(t, s, 5, "c")
	if err := s.DeleteNode(6, "c"); err != nil {
		t.Fatal(err)
	}
	if idx, _ := readCoordinates(t, s); idx != 4 {
		t.Errorf("index after deleting a node without coordinates = %d, want 4", idx)
	}
	// A re-registered node starts without a coordinate.
	registerNode(t, s, 7, "a")
	r := s.Read()
	defer r.Abort()
	if c, _ := r.Coordinate("a", ""); c != nil {
		t.Errorf("re-registered a has coordinate %v, want none", c)
	}
}

func TestCoordinatesSnapshotRoundTrip(t *testing.T) {
	s := New()
	registerNode(t, s, 1, "a")
	registerNode(t, s, 2, "b")
	err := s.CoordinateBatchUpdate(3, []*structs.CoordinateEntry{
		{Node: "a", Coord: &coordinate.Coordinate{Vec: []float64{0.001, -0.002, 0, 0, 0, 0, 0, 0.5}, Error: 0.25, Adjustment: -0.0001, Height: 0.00002}},
		{Node: "b", Segment: "seg", Coord: testCoord(0.3)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	counts, err := Inspect(bytes.NewReader(buf.Bytes()))
	if err != nil || counts[tableCoordinates] != 2 {
		t.Errorf("Inspect = %v, %v; want 2 coordinates", counts, err)
	}

	restored := New()
	ws := memdb.NewWatchSet()
	ws.Add(restored.AbandonCh())
	if err := restored.Restore(&buf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if ws.Watch(time.After(5 * time.Second)) {
		t.Error("Restore did not wake readers")
	}
	wantIdx, want := readCoordinates(t, s)
	gotIdx, got := readCoordinates(t, restored)
	if gotIdx != wantIdx || !reflect.DeepEqual(got, want) {
		t.Errorf("restored coordinates = %d %s, want %d %s", gotIdx, dumpCoords(got), wantIdx, dumpCoords(want))
	}
	if li := restored.LatestIndex(); li != 3 {
		t.Errorf("restored LatestIndex = %d, want 3", li)
	}
	// Restored rows are indexed: deleting the node still finds them.
	if err := restored.DeleteNode(4, "b"); err != nil {
		t.Fatal(err)
	}
	if _, got := readCoordinates(t, restored); len(got) != 1 || got[0].Node != "a" {
		t.Errorf("after deleting b from the restored store: %s, want a alone", dumpCoords(got))
	}
}

func TestCoordinatesBlockingIndex(t *testing.T) {
	s := New()
	registerNode(t, s, 1, "a")

	watch := func() memdb.WatchSet {
		ws := memdb.NewWatchSet()
		r := s.Read()
		defer r.Abort()
		if _, _, err := r.Coordinates(ws); err != nil {
			t.Fatal(err)
		}
		return ws
	}
	// The writes have returned, so a watch they fire is closed by now.
	fired := func(ws memdb.WatchSet) bool {
		for ch := range ws {
			select {
			case <-ch:
				return true
			default:
			}
		}
		return false
	}

	// Until the first coordinate is written there is no index row to
	// watch, and memdb watches its neighbourhood instead: start with one.
	if err := s.CoordinateBatchUpdate(2, []*structs.CoordinateEntry{{Node: "a", Coord: testCoord(1)}}); err != nil {
		t.Fatal(err)
	}
	ws := watch()
	registerNode(t, s, 3, "b") // not a coordinate change
	if err := s.CoordinateBatchUpdate(4, []*structs.CoordinateEntry{
		{Node: "nobody", Coord: testCoord(1)}, // skipped
		{Node: "a", Coord: testCoord(1)},      // unchanged
	}); err != nil {
		t.Fatal(err)
	}
	if fired(ws) {
		t.Error("coordinates watch fired on a node registration, a skipped and an unchanged update")
	}
	if err := s.CoordinateBatchUpdate(5, []*structs.CoordinateEntry{{Node: "b", Coord: testCoord(2)}}); err != nil {
		t.Fatal(err)
	}
	if !fired(ws) {
		t.Error("coordinates watch did not fire on an update")
	}

	ws = watch()
	if err := s.DeleteNode(6, "a"); err != nil {
		t.Fatal(err)
	}
	if !fired(ws) {
		t.Error("coordinates watch did not fire when a node with a coordinate was deleted")
	}
	if idx, _ := readCoordinates(t, s); idx != 6 {
		t.Errorf("index = %d, want 6", idx)
	}
}

func dumpCoords(list []*structs.CoordinateEntry) string {
	var b bytes.Buffer
	for _, e := range list {
		b.WriteString("  " + e.Node + "/" + e.Segment + " ")
		if e.Coord != nil {
			fmt.Fprintf(&b, "%v", *e.Coord)
		} else {
			b.WriteString("<nil>")
		}
		b.WriteString("\n")
	}
	return b.String()
}
