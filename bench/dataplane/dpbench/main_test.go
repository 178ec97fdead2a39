package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeRun is one line of runs.tsv and the fortio JSON it names.
type fakeRun struct {
	phase, path   string
	round, conc   int
	qps           float64
	count, non200 int64
	p50, p99      float64 // seconds; p90 and p99.9 are derived
	clientTicks   int     // CPU ticks of the client sidecar (haproxy on its path)
	echoTicks     int
	hwmClientKiB  int
}

func writeRuns(t *testing.T, dir string, runs []fakeRun) {
	t.Helper()
	var tsv strings.Builder
	tsv.WriteString(strings.Join(tsvColumns, "\t") + "\n")
	for i, r := range runs {
		name := fmt.Sprintf("%03d.json", i)
		fr := map[string]any{
			"ActualQPS": r.qps,
			"RetCodes":  map[string]int64{"200": r.count - r.non200, "503": r.non200},
			"DurationHistogram": map[string]any{
				"Count": r.count,
				"Percentiles": []map[string]float64{
					{"Percentile": 50, "Value": r.p50}, {"Percentile": 90, "Value": (r.p50 + r.p99) / 2},
					{"Percentile": 99, "Value": r.p99}, {"Percentile": 99.9, "Value": r.p99 * 2},
				},
			},
		}
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		cpuClient, cpuHAProxy := r.clientTicks, 0
		if r.path == "haproxy" {
			cpuClient, cpuHAProxy = 0, r.clientTicks
		}
		row := map[string]string{
			"phase": r.phase, "round": strconv.Itoa(r.round), "path": r.path, "conc": strconv.Itoa(r.conc), "json": name,
			"cpu_client": strconv.Itoa(cpuClient), "cpu_echo": strconv.Itoa(r.echoTicks), "cpu_haproxy": strconv.Itoa(cpuHAProxy),
			"cpu_server": "100", "cpu_agent": "1", "cpu_load": "50",
			"hwm_client": strconv.Itoa(r.hwmClientKiB), "hwm_echo": "10240", "hwm_haproxy": "15000",
			// 2 CPUs at 100 ticks/s for 1 s: 200 ticks, 160 busy of
			// which 10 irq; the processes above used 151+client+echo.
			"busy": "160", "irq": "10", "steal": "0", "total": "200", "wall_ms": "1000",
		}
		cells := make([]string, len(tsvColumns))
		for i, c := range tsvColumns {
			cells[i] = row[c]
		}
		tsv.WriteString(strings.Join(cells, "\t") + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "runs.tsv"), []byte(tsv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := "date=2026-01-01\nnproc=2\nqps=1000\nconcs=16\nrounds=3\nmaxqps_conc=16\nl7_engine=no\n" +
		"mem_idle_client=VmRSS=20480 RssAnon=8192 RssFile=12288 Pss=16384\n"
	if err := os.WriteFile(filepath.Join(dir, "meta.txt"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
}

func report(t *testing.T, dir string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	out := filepath.Join(dir, "results.md")
	if code := run([]string{"report", "-dir", dir, "-out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("report exited %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != stdout.String() {
		t.Errorf("-out file differs from stdout")
	}
	return stdout.String()
}

// row is the markdown table row of the report that starts with prefix.
func row(t *testing.T, text, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no row starting %q in:\n%s", prefix, text)
	return ""
}

func TestReportMediansAddedAndTargets(t *testing.T) {
	dir := t.TempDir()
	var runs []fakeRun
	// Three rounds; the medians are the middle values: direct p99
	// 1.0 ms, trellis-l4 p99 1.2 ms (added +0.200), its client sidecar
	// 30 ticks = 0.3 s per 10,000 requests = 30 mCPU/1000 rps.
	for i, v := range []struct{ direct, l4 float64 }{{1.0e-3, 1.2e-3}, {0.9e-3, 5.0e-3}, {1.5e-3, 1.1e-3}} {
		round := i + 1
		runs = append(runs,
			fakeRun{phase: "qps", round: round, path: "direct", conc: 16, qps: 1000, count: 10000, p50: 0.1e-3, p99: v.direct},
			fakeRun{phase: "qps", round: round, path: "haproxy", conc: 16, qps: 1000, count: 10000, p50: 0.2e-3, p99: 1.1e-3, clientTicks: 30},
			fakeRun{phase: "qps", round: round, path: "trellis-l4", conc: 16, qps: 1000, count: 10000, p50: 0.3e-3, p99: v.l4,
				clientTicks: 10 * (round + 1), echoTicks: 15, hwmClientKiB: 20480 + 1024*round},
		)
	}
	runs = append(runs,
		fakeRun{phase: "max", round: 1, path: "haproxy", conc: 16, qps: 40000, count: 400000, p50: 0.3e-3, p99: 2e-3, clientTicks: 50},
		fakeRun{phase: "max", round: 1, path: "trellis-l4", conc: 16, qps: 25000, count: 250000, p50: 0.5e-3, p99: 3e-3,
			clientTicks: 40, echoTicks: 40, hwmClientKiB: 30000, non200: 7},
	)
	writeRuns(t, dir, runs)
	text := report(t, dir)

	for _, want := range []string{
		// path, -c, p50, p90 (mean of p50 and p99 per run; median), p99, added, max QPS, mCPU, RSS (max of rounds)
		"| direct | 16 | 0.100 | 0.550 | 1.000 | – | – | – |  | – | – | – | – |",
		"| haproxy | 16 | 0.200 | 0.650 | 1.100 | +0.100 | +0.100 | +0.100 | 40,000 | 30 | – | 14.6 | – |",
		"| trellis-l4 | 16 | 0.300 | 0.750 | 1.200 | +0.200 | +0.200 | +0.200 | 25,000 | 30 | 15 | 23.0 | 10.0 |",
	} {
		if got := row(t, text, want[:strings.Index(want[2:], "|")+3]); got != want {
			t.Errorf("row\n got %s\nwant %s", got, want)
		}
	}
	for _, want := range []string{
		"| added p99 ≤ 0.300 ms | +0.200 ms | trellis-l4 -c 16 | met |",
		"| max QPS ≥ 30,400 (HAProxy, one hop) | 25,000 | trellis-l4 -c 16 (haproxy in this run: 40,000) | **missed** |",
		"| ≤ 100 mCPU/1000 rps per sidecar | 30 | trellis-l4 -c 16, client sidecar | met |",
		"| ≤ 20 MiB RSS per sidecar | 29.3 MiB | trellis-l4 -c 16 max QPS, client sidecar | **missed** |",
		"| client sidecar, idle | 20.0 | 8.0 | 12.0 | 16.0 |",
		"trellis-l4 -c 16 (max): 7 requests without a 200",
		"served the `http` listeners as TCP",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	// other = (busy − irq)/100 s − the processes' CPU, over 1 s: for the
	// max-QPS trellis run 1.5 s − (1.51 s + 0.4 s + 0.4 s) < 0, shown as 0.
	if got := row(t, text, "| max | 1 | trellis-l4 |"); !strings.HasSuffix(got, "| 80 % | 0.00 |") {
		t.Errorf("every-run row %s: want machine busy 80 %% and other 0.00", got)
	}
}

func TestReportRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, tsv, want string
	}{
		{"missing column", "phase\tround\n", `header has no column "path"`},
		{"bad phase", strings.Join(tsvColumns, "\t") + "\n" +
			"warm\t1\tdirect\t16\tx.json\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\n", "column phase: \"warm\""},
		{"no runs", strings.Join(tsvColumns, "\t") + "\n", "no runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "runs.tsv"), []byte(tc.tsv), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"report", "-dir", dir}, &stdout, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1; stderr %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestPortsAreDistinct(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"ports", "5"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	seen := map[string]bool{}
	for _, p := range strings.Fields(stdout.String()) {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			t.Errorf("port %q is not a port number", p)
		}
		seen[p] = true
	}
	if len(seen) != 5 {
		t.Errorf("got ports %q, want 5 distinct", stdout.String())
	}
}
