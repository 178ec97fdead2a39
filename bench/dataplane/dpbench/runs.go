package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The columns run.sh writes to runs.tsv, one line per fortio run. CPU
// columns are utime+stime clock ticks of each process over the run (of
// fortio load itself: the script's reaped children), hwm columns the
// process's peak RSS in KiB during the run (VmHWM, reset with clear_refs
// before it), busy (user, nice, system, irq, softirq), irq (irq and
// softirq), steal and total the machine's ticks from /proc/stat over the
// run, wall_ms its length.
var tsvColumns = []string{
	"phase", "round", "path", "conc", "json",
	"cpu_client", "cpu_echo", "cpu_haproxy", "cpu_server", "cpu_agent", "cpu_load",
	"hwm_client", "hwm_echo", "hwm_haproxy",
	"busy", "irq", "steal", "total", "wall_ms",
}

// The processes whose CPU run.sh samples: the two sidecars, haproxy,
// fortio's echo server, the agent and the fortio load generator.
var procs = []string{"client", "echo", "haproxy", "server", "agent", "load"}

// loadRun is one fortio run with what run.sh sampled around it.
type loadRun struct {
	Phase string // "qps" (fixed rate) or "max" (-qps 0)
	Round int
	Path  string
	Conc  int

	QPS    float64             // achieved
	Count  int64               // requests timed
	Errors int64               // requests that did not get a 200
	P      map[float64]float64 // percentile → seconds

	CPU   map[string]float64 // process → CPU seconds over the run
	HWM   map[string]float64 // process → peak RSS, bytes
	Busy  float64            // machine: busy share of all CPUs, 0..1
	Other float64            // machine: cores in user and system time of processes not in procs
}

// mCPUPer1k is proc's CPU per 1000 requests/s: CPU-seconds × 10⁶ per
// request, which equals its CPU share in thousandths of a core when it
// serves 1000 requests a second.
func (r *loadRun) mCPUPer1k(proc string) float64 {
	if r.Count == 0 {
		return 0
	}
	return r.CPU[proc] * 1e6 / float64(r.Count)
}

// fortioResult is the part of `fortio load -json` the report reads.
type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]int64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
}

// loadRuns reads dir/runs.tsv and each run's fortio JSON.
func loadRuns(dir string, clkTck float64) ([]*loadRun, error) {
	name := filepath.Join(dir, "runs.tsv")
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []*loadRun
	var col map[string]int
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Split(sc.Text(), "\t")
		if col == nil {
			col = make(map[string]int)
			for i, c := range fields {
				col[c] = i
			}
			for _, c := range tsvColumns {
				if _, ok := col[c]; !ok {
					return nil, fmt.Errorf("%s: header has no column %q", name, c)
				}
			}
			continue
		}
		if len(fields) != len(col) {
			return nil, fmt.Errorf("%s:%d: %d fields, header has %d", name, line, len(fields), len(col))
		}
		r, err := parseRun(dir, clkTck, func(c string) string { return fields[col[c]] })
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		runs = append(runs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%s: no runs", name)
	}
	return runs, nil
}

func parseRun(dir string, clkTck float64, get func(string) string) (*loadRun, error) {
	num := func(c string) (float64, error) {
		v, err := strconv.ParseFloat(get(c), 64)
		if err != nil {
			return 0, fmt.Errorf("column %s: %q is not a number", c, get(c))
		}
		return v, nil
	}
	r := &loadRun{Phase: get("phase"), Path: get("path"), CPU: map[string]float64{}, HWM: map[string]float64{}}
	if r.Phase != "qps" && r.Phase != "max" {
		return nil, fmt.Errorf("column phase: %q is neither qps nor max", r.Phase)
	}
	var err error
	if r.Round, err = strconv.Atoi(get("round")); err != nil {
		return nil, fmt.Errorf("column round: %q is not a number", get("round"))
	}
	if r.Conc, err = strconv.Atoi(get("conc")); err != nil {
		return nil, fmt.Errorf("column conc: %q is not a number", get("conc"))
	}
	for _, p := range procs {
		ticks, err := num("cpu_" + p)
		if err != nil {
			return nil, err
		}
		r.CPU[p] = ticks / clkTck
	}
	for _, p := range []string{"client", "echo", "haproxy"} {
		kib, err := num("hwm_" + p)
		if err != nil {
			return nil, err
		}
		r.HWM[p] = kib * 1024
	}
	busy, err := num("busy")
	if err != nil {
		return nil, err
	}
	total, err := num("total")
	if err != nil {
		return nil, err
	}
	if total > 0 {
		r.Busy = busy / total
	}
	wallMS, err := num("wall_ms")
	if err != nil {
		return nil, err
	}
	irq, err := num("irq")
	if err != nil {
		return nil, err
	}
	if wallMS > 0 {
		// irq and softirq time (loopback traffic's, much of it) is
		// not charged to any process's utime+stime.
		other := (busy - irq) / clkTck
		for _, p := range procs {
			other -= r.CPU[p]
		}
		r.Other = max(other, 0) / (wallMS / 1e3)
	}

	js := filepath.Join(dir, get("json"))
	b, err := os.ReadFile(js)
	if err != nil {
		return nil, err
	}
	var fr fortioResult
	if err := json.Unmarshal(b, &fr); err != nil {
		return nil, fmt.Errorf("%s: %w", js, err)
	}
	r.QPS = fr.ActualQPS
	r.Count = fr.DurationHistogram.Count
	r.Errors = r.Count - fr.RetCodes["200"]
	r.P = make(map[float64]float64)
	for _, p := range fr.DurationHistogram.Percentiles {
		r.P[p.Percentile] = p.Value
	}
	for _, want := range percentiles {
		if _, ok := r.P[want]; !ok {
			return nil, fmt.Errorf("%s: no p%g (run fortio with -p %s)", js, want, percentileFlag())
		}
	}
	return r, nil
}

// The percentiles the report shows; run.sh passes them to fortio's -p.
var percentiles = []float64{50, 90, 99, 99.9}

func percentileFlag() string {
	s := make([]string, len(percentiles))
	for i, p := range percentiles {
		s[i] = strconv.FormatFloat(p, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

// meta is run.sh's key=value description of the run (machine, versions,
// durations).
type meta map[string]string

func loadMeta(dir string) (meta, error) {
	name := filepath.Join(dir, "meta.txt")
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	m := meta{}
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: %q is not key=value", name, i+1, line)
		}
		m[k] = v
	}
	return m, nil
}

// get is m[k], or "?" when run.sh did not record it.
func (m meta) get(k string) string {
	if v, ok := m[k]; ok && v != "" {
		return v
	}
	return "?"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
