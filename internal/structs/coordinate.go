package structs

import "github.com/hashicorp/serf/coordinate"

// CoordinateEntry is a node's network coordinate in one network segment
// ("" is the default, and in Trellis the only, segment). It is an entry of
// /v1/coordinate/nodes and /v1/coordinate/node/:node, the body of PUT
// /v1/coordinate/update, and the row the state store keeps.
//
// Coord is the serf Vivaldi coordinate; its JSON keys are Vec, Error,
// Adjustment and Height, as Consul's.
type CoordinateEntry struct {
	Node    string
	Segment string
	Coord   *coordinate.Coordinate
}

// CoordinateDatacenterMap is one entry of /v1/coordinate/datacenters: the
// coordinates of a datacenter's servers in one network area.
type CoordinateDatacenterMap struct {
	Datacenter  string
	AreaID      string
	Coordinates []CoordinateEntry
}
