package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// render writes the markdown report: what was run, the table of medians
// with the targets row, the targets checked, the max-QPS runs, and every
// run.
func render(m meta, s *summary, runs []*loadRun) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# Data plane: fortio through two Trellis sidecars\n\n")
	w("%s, %s, commit %s, %s CPU: %s; fortio %s, %s.\n\n",
		m.get("date"), m.get("go"), m.get("commit"), m.get("nproc"), m.get("cpu"), m.get("fortio"), m.get("haproxy"))
	w("`bench/dataplane/run.sh` (DURATION=%s ROUNDS=%s MAXQPS_DURATION=%s MAXQPS_ROUNDS=%s): "+
		"`fortio load -qps %s -c {%s} -t %s -payload-size 1024 -r 0.00001` to a `fortio server` echo, "+
		"%s interleaved rounds over the paths, medians of the rounds; max QPS with `-qps 0 -c %s -t %s`, %s rounds. "+
		"Everything on loopback on the same machine: fortio, the echo server and the proxies share its CPUs.\n\n",
		m.get("duration"), m.get("rounds"), m.get("maxqps_duration"), m.get("maxqps_rounds"),
		m.get("qps"), strings.Join(strings.Fields(m.get("concs")), ","), m.get("duration"),
		m.get("rounds"), m.get("maxqps_conc"), m.get("maxqps_duration"), m.get("maxqps_rounds"))
	if env := m["sidecar_env"]; env != "" {
		w("The sidecars ran with `%s` in their environment.\n\n", env)
	}
	w("Paths: **direct** (fortio → echo); **haproxy** (one HAProxy hop, HTTP mode, keep-alive); " +
		"**trellis-l4** / **trellis-l7** (fortio → client sidecar's upstream listener → mTLS → echo's sidecar → echo, " +
		"with service-defaults protocol `tcp` / `http` for echo).")
	if l7 := m.get("l7_engine"); l7 == "no" {
		w(" The sidecar served the `http` listeners as TCP in this run (no `trellis_proxy_http_requests_total` " +
			"after a request): trellis-l7 measures the L7 configuration path, not HTTP processing.")
	} else if l7 == "yes" {
		w(" The sidecar served the `http` listeners as HTTP in this run (`trellis_proxy_http_requests_total` counted the probe).")
	}
	w("\n\n")
	w("Round r runs the paths starting from the r-th (rotated), so no path always follows the same one. ")
	other := make([]float64, len(runs))
	for i, r := range runs {
		other[i] = r.Other
	}
	w("Other work on the machine (CPU time of processes other than fortio, the echo server, the proxies and the agent; "+
		"column *other cores* in the last tables): median %.2f cores, highest %.2f, of %s. ",
		median(other), slices.Max(other), m.get("nproc"))
	w("Figures taken while the machine was busy with other work are lower (max QPS) and noisier (p99) than on a quiet one.\n\n")

	renderMain(&b, m, s)
	renderTargets(&b, m, s)
	renderMemory(&b, m)
	renderMax(&b, m, s)
	renderRuns(&b, runs)
	return b.String()
}

func ms(sec float64) string { return strconv.FormatFloat(sec*1e3, 'f', 3, 64) }

func signedMS(sec float64) string {
	if sec >= 0 {
		return "+" + ms(sec)
	}
	return ms(sec)
}

func mib(bytes float64) string { return strconv.FormatFloat(bytes/(1<<20), 'f', 1, 64) }

// thousands formats n with a comma between groups of three digits.
func thousands(n float64) string {
	s := strconv.FormatInt(int64(math.Round(n)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// proxyCells are the client-side and server-side proxy columns of g:
// mCPU per 1000 rps and peak RSS, "–" where the path has no such proxy.
func proxyCells(g *group) (cpu [2]string, rss [2]string) {
	cpu, rss = [2]string{"–", "–"}, [2]string{"–", "–"}
	for i, p := range proxiesOf(g.Path) {
		cpu[i] = strconv.FormatFloat(g.MCPU[p], 'f', 0, 64)
		rss[i] = mib(g.PeakRSS[p])
	}
	return cpu, rss
}

func renderMain(b *strings.Builder, m meta, s *summary) {
	maxConc := m.get("maxqps_conc")
	fmt.Fprintf(b, "## Medians at %s QPS\n\n", m.get("qps"))
	b.WriteString("Added = path − direct at the same concurrency (difference of the medians). " +
		"mCPU/1000 rps = CPU time of the proxy process (utime+stime from /proc) per request, in µs, " +
		"which is its CPU share in thousandths of a core at 1000 requests/s. Client-side is the client's sidecar " +
		"(haproxy on the haproxy path), server-side echo's sidecar. RSS: the highest VmHWM of the proxy in any run of the row. " +
		"Max QPS: median of the `-qps 0 -c " + maxConc + "` runs, on the row of that concurrency.\n\n")
	b.WriteString("| path | -c | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 | max QPS | " +
		"client-side mCPU/1000 rps | server-side mCPU/1000 rps | client-side RSS MiB | server-side RSS MiB |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, g := range s.phase("qps") {
		added := [3]string{"–", "–", "–"}
		for i, p := range []float64{50, 90, 99} {
			if d, ok := s.added(g, p); ok {
				added[i] = signedMS(d)
			}
		}
		maxQPS := ""
		if strconv.Itoa(g.Conc) == maxConc {
			if mg := s.find("max", g.Path, g.Conc); mg != nil {
				maxQPS = thousands(mg.QPS)
			}
		}
		cpu, rss := proxyCells(g)
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			g.Path, g.Conc, ms(g.P[50]), ms(g.P[90]), ms(g.P[99]), added[0], added[1], added[2],
			maxQPS, cpu[0], cpu[1], rss[0], rss[1])
	}
	fmt.Fprintf(b, "| **target** (trellis paths) | | | | | | | ≤ +%s | ≥ %s | ≤ %d | ≤ %d | ≤ %d | ≤ %d |\n\n",
		ms(targetAddedP99), thousands(targetMaxQPS), targetMCPUPer1k, targetMCPUPer1k, targetRSSMiB, targetRSSMiB)

	var warn []string
	for _, g := range s.groups {
		if g.Errors > 0 {
			warn = append(warn, fmt.Sprintf("%s -c %d (%s): %d requests without a 200", g.Path, g.Conc, g.Phase, g.Errors))
		}
		if q, err := strconv.ParseFloat(m.get("qps"), 64); err == nil && g.Phase == "qps" && g.QPS < 0.95*q {
			warn = append(warn, fmt.Sprintf("%s -c %d reached only %.0f QPS of %.0f", g.Path, g.Conc, g.QPS, q))
		}
	}
	if len(warn) > 0 {
		b.WriteString("**Check:** " + strings.Join(warn, "; ") + ".\n\n")
	}
}

// renderTargets checks the worst Trellis figure against each target.
func renderTargets(b *strings.Builder, m meta, s *summary) {
	type worst struct {
		v     float64
		where string
		set   bool
	}
	var p99, mcpu, rss worst
	var slowest *group // the Trellis path with the lowest max QPS
	higher := func(w *worst, v float64, where string) {
		if !w.set || v > w.v {
			*w = worst{v, where, true}
		}
	}
	for _, g := range s.groups {
		if !strings.HasPrefix(g.Path, trellisPathPrefix) {
			continue
		}
		where := fmt.Sprintf("%s -c %d", g.Path, g.Conc)
		if g.Phase == "max" {
			if slowest == nil || g.QPS < slowest.QPS {
				slowest = g
			}
			for _, p := range proxiesOf(g.Path) {
				higher(&rss, g.PeakRSS[p], where+" max QPS, "+p+" sidecar")
			}
			continue
		}
		if d, ok := s.added(g, 99); ok {
			higher(&p99, d, where)
		}
		for _, p := range proxiesOf(g.Path) {
			higher(&mcpu, g.MCPU[p], where+", "+p+" sidecar")
			higher(&rss, g.PeakRSS[p], where+", "+p+" sidecar")
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	b.WriteString("## Targets (worst Trellis figure)\n\n")
	b.WriteString("| target | worst | where | |\n|---|--:|---|---|\n")
	if p99.set {
		fmt.Fprintf(b, "| added p99 ≤ %s ms | %s ms | %s | %s |\n", ms(targetAddedP99), signedMS(p99.v), p99.where, verdict(p99.v <= targetAddedP99))
	}
	if g := slowest; g != nil {
		ref := ""
		if hg := s.find("max", "haproxy", g.Conc); hg != nil {
			ref = fmt.Sprintf(" (haproxy in this run: %s)", thousands(hg.QPS))
		}
		fmt.Fprintf(b, "| max QPS ≥ %s (HAProxy, one hop) | %s | %s -c %d%s | %s |\n",
			thousands(targetMaxQPS), thousands(g.QPS), g.Path, g.Conc, ref, verdict(g.QPS >= targetMaxQPS))
	}
	if mcpu.set {
		fmt.Fprintf(b, "| ≤ %d mCPU/1000 rps per sidecar | %.0f | %s | %s |\n", targetMCPUPer1k, mcpu.v, mcpu.where, verdict(mcpu.v <= targetMCPUPer1k))
	}
	if rss.set {
		fmt.Fprintf(b, "| ≤ %d MiB RSS per sidecar | %s MiB | %s | %s |\n", targetRSSMiB, mib(rss.v), rss.where, verdict(rss.v <= targetRSSMiB*(1<<20)))
	}
	b.WriteString("\n")
}

func renderMax(b *strings.Builder, m meta, s *summary) {
	gs := s.phase("max")
	if len(gs) == 0 {
		return
	}
	fmt.Fprintf(b, "## Max QPS (`-qps 0 -c %s -t %s`, %s rounds)\n\n", m.get("maxqps_conc"), m.get("maxqps_duration"), m.get("maxqps_rounds"))
	b.WriteString("Cores: CPU time per second of load, of the proxies, the echo server and fortio load. " +
		"Machine busy: user, system, irq and softirq time of all CPUs together, from /proc/stat; " +
		"other: user and system time of processes other than these and the agent (another job on the machine).\n\n")
	b.WriteString("| path | -c | QPS (median) | min – max | p50 ms | p99 ms | client-side cores | server-side cores | " +
		"client-side mCPU/1000 rps | server-side mCPU/1000 rps | echo server cores | fortio cores | machine busy | other cores |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, g := range gs {
		cores := [2]string{"–", "–"}
		for i, p := range proxiesOf(g.Path) {
			cores[i] = strconv.FormatFloat(g.Cores[p], 'f', 2, 64)
		}
		cpu, _ := proxyCells(g)
		fmt.Fprintf(b, "| %s | %d | %s | %s – %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %.0f %% | %.2f |\n",
			g.Path, g.Conc, thousands(g.QPS), thousands(g.MinQPS), thousands(g.MaxQPS), ms(g.P[50]), ms(g.P[99]),
			cores[0], cores[1], cpu[0], cpu[1], g.Cores["server"], g.Cores["load"], g.Busy*100, g.Other)
	}
	b.WriteString("\n")
}

// renderRuns lists every run, in the order they ran, so that the spread
// behind each median can be seen.
func renderRuns(b *strings.Builder, runs []*loadRun) {
	b.WriteString("## Every run\n\n<details><summary>")
	fmt.Fprintf(b, "%d runs in the order they ran", len(runs))
	b.WriteString("</summary>\n\n")
	b.WriteString("| phase | round | path | -c | QPS | p50 ms | p90 ms | p99 ms | p99.9 ms | non-200 | " +
		"client-side mCPU/1000 rps | server-side mCPU/1000 rps | machine busy | other cores |\n")
	b.WriteString("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range runs {
		cpu := [2]string{"–", "–"}
		for i, p := range proxiesOf(r.Path) {
			cpu[i] = strconv.FormatFloat(r.mCPUPer1k(p), 'f', 0, 64)
		}
		fmt.Fprintf(b, "| %s | %d | %s | %d | %s | %s | %s | %s | %s | %d | %s | %s | %.0f %% | %.2f |\n",
			r.Phase, r.Round, r.Path, r.Conc, thousands(r.QPS), ms(r.P[50]), ms(r.P[90]), ms(r.P[99]), ms(r.P[99.9]),
			r.Errors, cpu[0], cpu[1], r.Busy*100, r.Other)
	}
	b.WriteString("\n</details>\n")
}

// renderMemory shows the sidecars' resident memory idle and after the
// runs, split into anonymous memory and file-backed pages, as run.sh
// read it from /proc/<pid>/status and smaps_rollup: the file-backed part
// is mostly the trellis binary, which the sidecars share with the agent.
func renderMemory(b *strings.Builder, m meta) {
	rows := []struct{ name, key string }{
		{"client sidecar, idle", "mem_idle_client"},
		{"echo sidecar, idle", "mem_idle_echo"},
		{"client sidecar, after the runs", "mem_end_client"},
		{"echo sidecar, after the runs", "mem_end_echo"},
		{"haproxy, after the runs", "mem_end_haproxy"},
	}
	var lines []string
	for _, r := range rows {
		kv := map[string]string{}
		for _, f := range strings.Fields(m[r.key]) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		cell := func(k string) string {
			kib, err := strconv.ParseFloat(kv[k], 64)
			if err != nil {
				return "?"
			}
			return mib(kib * 1024)
		}
		if len(kv) == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("| %s | %s | %s | %s | %s |\n", r.name, cell("VmRSS"), cell("RssAnon"), cell("RssFile"), cell("Pss")))
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("## Memory (MiB)\n\n")
	b.WriteString("VmRSS, RssAnon (heap, stacks) and RssFile (mostly the mapped binary) from /proc/<pid>/status, " +
		"PSS (shared pages divided among the processes that map them: the two sidecars and the agent run one binary) " +
		"from /proc/<pid>/smaps_rollup; the peaks during the runs are in the table of medians. " +
		"The binary is built as `make build` does (static, without cgo). Idle is after the setup's probe requests, " +
		"once each sidecar had given back its binary's pages (2 s after its last configuration settled) and served " +
		"a probe since: the code that carrying a request uses is resident again.\n\n")
	b.WriteString("| process | RSS | anon | file | PSS |\n|---|--:|--:|--:|--:|\n")
	for _, l := range lines {
		b.WriteString(l)
	}
	b.WriteString("\n")
}
