package main

import (
	"slices"
	"strings"
)

// Targets of the data-plane issue, for the Trellis paths.
const (
	targetAddedP99    = 0.30e-3 // seconds
	targetMaxQPS      = 30400   // HAProxy 2.6, one HTTP hop, on this machine kind
	targetMCPUPer1k   = 100
	targetRSSMiB      = 20
	directPath        = "direct"
	trellisPathPrefix = "trellis"
)

// pathOrder is the order paths are shown in; others follow, sorted.
var pathOrder = []string{directPath, "haproxy", "trellis-l4", "trellis-l7"}

// proxiesOf names the processes a path goes through: the client-side
// proxy first, then the server-side one.
func proxiesOf(path string) []string {
	switch {
	case path == "haproxy":
		return []string{"haproxy"}
	case strings.HasPrefix(path, trellisPathPrefix):
		return []string{"client", "echo"}
	}
	return nil
}

// group is the medians of the runs of one phase, path and concurrency.
type group struct {
	Phase, Path string
	Conc        int
	N           int
	P           map[float64]float64 // median of each percentile, seconds
	QPS         float64             // median
	MinQPS      float64
	MaxQPS      float64
	Errors      int64              // sum over the runs
	MCPU        map[string]float64 // median mCPU per 1000 rps, by process
	Cores       map[string]float64 // median CPU share of a core, by process
	PeakRSS     map[string]float64 // highest peak RSS of any run, bytes
	Busy        float64            // median machine busy share
	Other       float64            // median cores used by other processes
}

// summary is every group, in display order.
type summary struct {
	groups []*group
}

func (s *summary) find(phase, path string, conc int) *group {
	for _, g := range s.groups {
		if g.Phase == phase && g.Path == path && g.Conc == conc {
			return g
		}
	}
	return nil
}

// phase is the groups of one phase, in display order.
func (s *summary) phase(phase string) []*group {
	var out []*group
	for _, g := range s.groups {
		if g.Phase == phase {
			out = append(out, g)
		}
	}
	return out
}

// added is g's percentile p less the direct path's at the same
// concurrency, and whether there is a direct figure to subtract.
func (s *summary) added(g *group, p float64) (float64, bool) {
	d := s.find(g.Phase, directPath, g.Conc)
	if d == nil || g.Path == directPath {
		return 0, false
	}
	return g.P[p] - d.P[p], true
}

func summarise(runs []*loadRun) *summary {
	type key struct {
		phase, path string
		conc        int
	}
	byKey := map[key][]*loadRun{}
	var keys []key
	for _, r := range runs {
		k := key{r.Phase, r.Path, r.Conc}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	rank := func(path string) int {
		if i := slices.Index(pathOrder, path); i >= 0 {
			return i
		}
		return len(pathOrder)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.phase != b.phase {
			return strings.Compare(b.phase, a.phase) // qps before max
		}
		if ra, rb := rank(a.path), rank(b.path); ra != rb {
			return ra - rb
		}
		if a.path != b.path {
			return strings.Compare(a.path, b.path)
		}
		return b.conc - a.conc // higher concurrency first
	})
	s := &summary{}
	for _, k := range keys {
		s.groups = append(s.groups, newGroup(k.phase, k.path, k.conc, byKey[k]))
	}
	return s
}

func newGroup(phase, path string, conc int, rs []*loadRun) *group {
	g := &group{Phase: phase, Path: path, Conc: conc, N: len(rs),
		P: map[float64]float64{}, MCPU: map[string]float64{}, Cores: map[string]float64{}, PeakRSS: map[string]float64{}}
	collect := func(f func(*loadRun) float64) []float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return v
	}
	for _, p := range percentiles {
		g.P[p] = median(collect(func(r *loadRun) float64 { return r.P[p] }))
	}
	qps := collect(func(r *loadRun) float64 { return r.QPS })
	g.QPS, g.MinQPS, g.MaxQPS = median(qps), slices.Min(qps), slices.Max(qps)
	g.Busy = median(collect(func(r *loadRun) float64 { return r.Busy }))
	g.Other = median(collect(func(r *loadRun) float64 { return r.Other }))
	for _, r := range rs {
		g.Errors += r.Errors
	}
	for _, p := range procs {
		g.MCPU[p] = median(collect(func(r *loadRun) float64 { return r.mCPUPer1k(p) }))
		// CPU seconds per second of load, from the achieved rate.
		g.Cores[p] = median(collect(func(r *loadRun) float64 {
			if r.Count == 0 {
				return 0
			}
			return r.CPU[p] * r.QPS / float64(r.Count)
		}))
		g.PeakRSS[p] = slices.Max(collect(func(r *loadRun) float64 { return r.HWM[p] }))
	}
	return g
}
