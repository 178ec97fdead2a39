package agent

import (
	"cmp"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Several datacenters: every server is also in the WAN pool, whose members
// are the servers of all datacenters, named "<node>.<dc>". A server finds
// another datacenter's servers there, and sorts datacenters by the
// round-trip times that the WAN coordinates estimate.

// areaWAN is the AreaID of the one network area Consul's open-source
// servers are in, as /v1/coordinate/datacenters reports it.
const areaWAN = "WAN"

// wanServers returns the WAN pool's server members, alive or not, by
// datacenter. A client agent, or a server without a WAN pool, has none.
func (a *Agent) wanServers() map[string][]membership.Member {
	if a.wan == nil {
		return nil
	}
	out := make(map[string][]membership.Member)
	for _, m := range a.wan.Members() {
		dc := m.Tags[membership.TagDatacenter]
		if m.Tags[tagRole] != roleServer || dc == "" || m.Status == membership.StatusLeft {
			continue
		}
		out[dc] = append(out[dc], m)
	}
	return out
}

// datacenterServers returns the RPC addresses of datacenter dc's live
// servers, in random order so that requests spread over them.
func (a *Agent) datacenterServers(dc string) []string {
	var addrs []string
	for _, m := range a.wanServers()[dc] {
		if m.Status == membership.StatusAlive && m.Tags[tagPort] != "" {
			addrs = append(addrs, net.JoinHostPort(m.Addr, m.Tags[tagPort]))
		}
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs
}

// Datacenters lists the datacenters this server knows: its own first, then
// the others by the median estimated round-trip time to their servers,
// as Consul sorts /v1/catalog/datacenters.
func (a *Agent) Datacenters() []string {
	self, _ := a.wanCoordinate()
	rtts := make(map[string][]time.Duration)
	for dc, members := range a.wanServers() {
		rtts[dc] = nil
		for _, m := range members {
			if c, ok := a.wan.GetCachedCoordinate(m.Name); ok && self != nil && c.IsCompatibleWith(self) {
				rtts[dc] = append(rtts[dc], self.DistanceTo(c))
			}
		}
	}
	return orderDatacenters(a.cfg.Datacenter, rtts)
}

// orderDatacenters puts own first, then the others by the median of their
// servers' round-trip times; datacenters with none measured yet come last,
// and ties go by name.
func orderDatacenters(own string, rtts map[string][]time.Duration) []string {
	type dcDist struct {
		name string
		rtt  time.Duration
	}
	var dcs []dcDist
	for dc, list := range rtts {
		if dc == own {
			continue
		}
		d := dcDist{name: dc, rtt: time.Duration(math.MaxInt64)}
		if len(list) > 0 {
			list = slices.Clone(list)
			slices.Sort(list)
			d.rtt = list[len(list)/2]
		}
		dcs = append(dcs, d)
	}
	slices.SortFunc(dcs, func(x, y dcDist) int {
		return cmp.Or(cmp.Compare(x.rtt, y.rtt), strings.Compare(x.name, y.name))
	})
	out := []string{own}
	for _, d := range dcs {
		out = append(out, d.name)
	}
	return out
}

// DatacenterCoordinates returns each datacenter's servers with their WAN
// coordinates, in the order of Datacenters. Without a WAN pool it is this
// datacenter's servers with their LAN coordinates.
func (a *Agent) DatacenterCoordinates() []structs.CoordinateDatacenterMap {
	if a.wan == nil {
		return []structs.CoordinateDatacenterMap{{
			Datacenter: a.cfg.Datacenter, AreaID: areaWAN, Coordinates: a.ServerCoordinates(),
		}}
	}
	byDC := a.wanServers()
	self, _ := a.wanCoordinate()
	var out []structs.CoordinateDatacenterMap
	for _, dc := range a.Datacenters() {
		entries := []structs.CoordinateEntry{}
		for _, m := range byDC[dc] {
			var c *coordinate.Coordinate
			if m.Name == a.wan.Name() {
				c = self
			} else {
				c, _ = a.wan.GetCachedCoordinate(m.Name)
			}
			if c != nil {
				entries = append(entries, structs.CoordinateEntry{Node: m.Name, Coord: c})
			}
		}
		slices.SortFunc(entries, func(x, y structs.CoordinateEntry) int { return strings.Compare(x.Node, y.Node) })
		out = append(out, structs.CoordinateDatacenterMap{Datacenter: dc, AreaID: areaWAN, Coordinates: entries})
	}
	return out
}

// wanCoordinate is this server's own WAN coordinate.
func (a *Agent) wanCoordinate() (*coordinate.Coordinate, error) {
	if a.wan == nil {
		return nil, nil
	}
	return a.wan.Coordinate()
}
