package agent

import (
	"testing"

	"github.com/hashicorp/serf/coordinate"
)

func TestCoordinateMoved(t *testing.T) {
	origin := coordinate.NewCoordinate(coordinate.DefaultConfig())
	moved := func(f func(c *coordinate.Coordinate)) *coordinate.Coordinate {
		c := origin.Clone()
		f(c)
		return c
	}
	for _, tc := range []struct {
		name string
		c    *coordinate.Coordinate
		want bool
	}{
		{"same", origin.Clone(), false},
		{"only the error changed", moved(func(c *coordinate.Coordinate) { c.Error = 0.1 }), false},
		{"10µs along one axis", moved(func(c *coordinate.Coordinate) { c.Vec[3] = 10e-6 }), false},
		{"30µs on two axes, 42µs in all", moved(func(c *coordinate.Coordinate) { c.Vec[0], c.Vec[1] = 30e-6, 30e-6 }), false},
		{"1ms along one axis", moved(func(c *coordinate.Coordinate) { c.Vec[7] = -1e-3 }), true},
		{"40µs on two axes, 57µs in all", moved(func(c *coordinate.Coordinate) { c.Vec[0], c.Vec[1] = 40e-6, -40e-6 }), true},
		{"height", moved(func(c *coordinate.Coordinate) { c.Height += 100e-6 }), true},
		{"adjustment", moved(func(c *coordinate.Coordinate) { c.Adjustment = -100e-6 }), true},
		{"other dimensionality", &coordinate.Coordinate{Vec: make([]float64, 3), Height: origin.Height}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coordinateMoved(origin, tc.c); got != tc.want {
				t.Errorf("coordinateMoved(origin, %+v) = %v, want %v", *tc.c, got, tc.want)
			}
		})
	}
}
