package agent

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// Every agent sends its own LAN coordinate to the servers, which keep it
// in the catalog for /v1/coordinate and ?near= sorting: once shortly after
// start, then every Options.CoordinateUpdateInterval when it has moved.

const (
	// defaultCoordinateInterval is Options.CoordinateUpdateInterval's
	// default.
	defaultCoordinateInterval = 15 * time.Second
	// maxFirstCoordinateDelay bounds the random delay of the first send,
	// which spreads out agents started together.
	maxFirstCoordinateDelay = 2 * time.Second
	// coordinateMinMove is the smallest move worth a raft write: the
	// largest change it can make to any estimated round-trip time.
	coordinateMinMove = 50 * time.Microsecond
	// coordinateResendAfter is how many unmoved intervals pass before the
	// coordinate is sent anyway. The servers drop a coordinate when they
	// do not know the node yet, or forget it when the node is deleted and
	// registered again; this bounds how long it stays missing.
	coordinateResendAfter = 8
)

// runCoordinateUpdates sends this agent's coordinate until Close. A send
// that fails is retried at the next interval.
func (a *Agent) runCoordinateUpdates() {
	defer a.wg.Done()
	interval := a.opts.CoordinateUpdateInterval
	timer := time.NewTimer(rand.N(min(interval, maxFirstCoordinateDelay)) + 1)
	defer timer.Stop()
	var last *coordinate.Coordinate // the last coordinate the servers took
	unmoved := 0
	for {
		select {
		case <-a.done:
			return
		case <-timer.C:
		}
		timer.Reset(interval)
		c, err := a.lan.Coordinate()
		if err != nil {
			a.logger.Debug("no coordinate to send", "error", err)
			continue
		}
		if last != nil && unmoved < coordinateResendAfter && !coordinateMoved(last, c) {
			unmoved++
			continue
		}
		if err := a.sendCoordinate(c); err != nil {
			level := a.logger.Warn
			if errors.Is(err, errNoServers) || errors.Is(err, server.ErrNotLeader) {
				level = a.logger.Debug // the cluster is forming: try again later
			}
			level("sending the node's coordinate", "error", err)
			continue
		}
		last, unmoved = c, 0
	}
}

// coordinateMoved reports whether moving from old to c changes some
// estimated round-trip time by coordinateMinMove or more. The change is at
// most the Euclidean move plus the changes of height and adjustment.
func coordinateMoved(old, c *coordinate.Coordinate) bool {
	if !old.IsCompatibleWith(c) {
		return true
	}
	var sq float64
	for i := range c.Vec {
		d := c.Vec[i] - old.Vec[i]
		sq += d * d
	}
	move := math.Sqrt(sq) + math.Abs(c.Height-old.Height) + math.Abs(c.Adjustment-old.Adjustment)
	return move*float64(time.Second) >= float64(coordinateMinMove)
}

// sendCoordinate stores this node's coordinate through raft: directly when
// this server leads (or runs alone, in dev mode), else through a server's
// PUT /v1/coordinate/update, which the servers pass on to the leader.
func (a *Agent) sendCoordinate(c *coordinate.Coordinate) error {
	e := &structs.CoordinateEntry{Node: a.nodeName, Coord: c}
	if a.srv != nil && (a.srv.IsLeader() || a.rpcClient == nil) {
		_, err := a.srv.Apply(fsm.CoordinateBatchUpdateType,
			&fsm.CoordinateBatchUpdateRequest{Updates: []*structs.CoordinateEntry{e}})
		return err
	}
	return a.remoteJSON(http.MethodPut, "/v1/coordinate/update", nil, e, nil)
}

// ServerCoordinates returns the LAN coordinates of this datacenter's live
// servers as gossip knows them: this agent's own, and the last that each
// other server sent it. Servers it has no coordinate for are left out.
func (a *Agent) ServerCoordinates() []structs.CoordinateEntry {
	var out []structs.CoordinateEntry
	for _, m := range a.lan.Members() {
		if m.Tags[tagRole] != roleServer || m.Tags[membership.TagDatacenter] != a.cfg.Datacenter ||
			m.Status != membership.StatusAlive {
			continue
		}
		var c *coordinate.Coordinate
		if m.Name == a.nodeName {
			c, _ = a.lan.Coordinate()
		} else {
			c, _ = a.lan.GetCachedCoordinate(m.Name)
		}
		if c != nil {
			out = append(out, structs.CoordinateEntry{Node: m.Name, Coord: c})
		}
	}
	slices.SortFunc(out, func(x, y structs.CoordinateEntry) int {
		return strings.Compare(strings.ToLower(x.Node), strings.ToLower(y.Node))
	})
	return out
}

// selfCoordinate is the agent's LAN coordinate for /v1/agent/self, or nil.
func (a *Agent) selfCoordinate() *coordinate.Coordinate {
	c, err := a.lan.Coordinate()
	if err != nil {
		return nil
	}
	return c
}
