package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Consul 1.22 in dev mode, measured the same way on the same 2-core
// machine kind: the reference column of the table.
const (
	consulRegs     = 4100.0
	consulKVPut    = 9800.0
	consulKVGet    = 19000.0
	consulHealth   = 1400.0
	consulDNS      = 2700.0
	consulWakeup   = 2.2 * float64(time.Millisecond)
	consulIdleRSS  = 94e6
	consulRSS10k   = 220e6
	targetDNS      = 13500.0
	targetWakeup   = float64(time.Millisecond)
	targetIdleRSS  = 31e6
	targetRSS10k   = 110e6
	throughputGain = 2.0
)

// report is everything one run measured.
type report struct {
	started    time.Time
	opts       *options
	idle       memStatus
	after10k   memStatus
	final      memStatus
	regs       *result
	kvPut      *result
	kvGet      *result
	health     *result
	dns        *result
	dnsAnswers int
	wakeup     *result
	// startup is from starting the process to its first accepted write.
	startup time.Duration
}

// measure starts the agent, runs every phase in order and stops it.
func measure(ctx context.Context, o *options, logw io.Writer) (*report, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "load: "+format+"\n", args...)
	}
	rep := &report{started: time.Now(), opts: o}
	bodies, err := registrationBodies(o.instances, o.perNode)
	if err != nil {
		return nil, err
	}

	launched := time.Now()
	p, err := startAgent(ctx, o.agentBin, logw, o.startWait)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	httpAddr, dnsAddr := p.addrs()
	logf("agent pid %d, HTTP %s, DNS %s", p.pid(), httpAddr, dnsAddr)
	c := newClient(httpAddr, o.workers)
	defer c.close()
	if err := waitWritable(ctx, c, o.startWait); err != nil {
		return nil, err
	}
	rep.startup = time.Since(launched)
	logf("serving writes %v after launch", rep.startup)

	if rep.idle, err = settleAndReadMem(ctx, p.pid(), o.settle); err != nil {
		return nil, err
	}
	logf("idle RSS %s", mb(float64(rep.idle.rss)))

	// phase runs one timed phase, charging it the CPU that the agent and
	// this process spent meanwhile, and refuses a phase where nothing
	// succeeded.
	phase := func(name string, dst **result, fn func() (*result, error)) error {
		before, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		res, err := fn()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: interrupted: %w", name, err)
		}
		after, err := readCPU(p.pid())
		if err != nil {
			return err
		}
		if res.rssAfter, err = readMem(p.pid()); err != nil {
			return err
		}
		res.name = name
		res.cpu = after.sub(before)
		*dst = res
		return res.check(name)
	}
	noErr := func(r *result) (*result, error) { return r, nil }

	logf("catalog: registering %d instances with %d workers", o.instances, o.workers)
	if err := phase("catalog register", &rep.regs, func() (*result, error) {
		return noErr(registerPhase(ctx, c, o.workers, bodies))
	}); err != nil {
		return nil, err
	}
	if rep.after10k, err = settleAndReadMem(ctx, p.pid(), o.settle); err != nil {
		return nil, err
	}
	logf("RSS after %d instances %s", o.instances, mb(float64(rep.after10k.rss)))

	logf("kv: %d PUTs of %d-byte values over %d keys", o.kvOps, o.valueSize, o.kvKeys)
	if err := phase("kv put", &rep.kvPut, func() (*result, error) {
		return noErr(kvPutPhase(ctx, c, o.workers, o.kvOps, o.kvKeys, o.valueSize))
	}); err != nil {
		return nil, err
	}
	logf("kv: %d GETs", o.kvOps)
	if err := phase("kv get", &rep.kvGet, func() (*result, error) {
		return noErr(kvGetPhase(ctx, c, o.workers, o.kvOps, o.kvKeys))
	}); err != nil {
		return nil, err
	}

	logf("health: %d instances of %q, querying for %v", o.healthN, healthService, o.duration)
	if err := setupHealthService(ctx, c, o.healthN); err != nil {
		return nil, err
	}
	if err := phase("health query", &rep.health, func() (*result, error) {
		return noErr(healthPhase(ctx, c, o.workers, o.duration))
	}); err != nil {
		return nil, err
	}

	logf("dns: SRV queries for %v", o.duration)
	if err := phase("dns srv", &rep.dns, func() (res *result, err error) {
		res, rep.dnsAnswers, err = dnsPhase(ctx, dnsAddr, o.workers, o.duration)
		return res, err
	}); err != nil {
		return nil, err
	}

	logf("wake-up: %d blocking-query wake-ups", o.wakeups)
	if err := phase("wake-up", &rep.wakeup, func() (*result, error) {
		return wakeupPhase(ctx, c, o.wakeups, 2*time.Millisecond)
	}); err != nil {
		return nil, err
	}
	if rep.final, err = readMem(p.pid()); err != nil {
		return nil, err
	}
	return rep, nil
}

// settleAndReadMem lets the agent go quiet for d, then reads its memory.
// The pause is where the reading is taken, not a wait for an event.
func settleAndReadMem(ctx context.Context, pid int, d time.Duration) (memStatus, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return memStatus{}, ctx.Err()
	case <-t.C:
	}
	return readMem(pid)
}

// row is one line of the table. Higher is better unless lower is set.
type row struct {
	metric    string
	value     string
	reference string
	target    string
	verdict   string
}

func throughputRow(metric string, got, ref, target float64) row {
	return row{metric, rate(got), rate(ref), "≥ " + rate(target), verdict(got/ref, got >= target)}
}

func lowerRow(metric string, got, ref, target float64, format func(float64) string, strict bool) row {
	meets := got <= target
	op := "≤ "
	if strict {
		meets, op = got < target, "< "
	}
	return row{metric, format(got), format(ref), op + format(target), verdict(got/ref, meets)}
}

// startupRow reports the dev agent's start time against the issue's "under
// a second"; Consul's figure was not measured.
func startupRow(d time.Duration) row {
	v := "no"
	if d < time.Second {
		v = "yes"
	}
	return row{"dev agent start → first write accepted", ms(float64(d)), "—", "< 1000.00 ms", v}
}

func infoRow(metric, value string) row { return row{metric, value, "—", "—", "—"} }

func verdict(ratio float64, meets bool) string {
	v := "no"
	if meets {
		v = "yes"
	}
	return fmt.Sprintf("%.2f× / %s", ratio, v)
}

func (r *report) rows() []row {
	o := r.opts
	lat := func(res *result) string {
		return fmt.Sprintf("%s / %s", ms(float64(res.pct(50))), ms(float64(res.pct(99))))
	}
	return []row{
		throughputRow(fmt.Sprintf("catalog registrations/s (%d instances)", o.instances), r.regs.rate(), consulRegs, throughputGain*consulRegs),
		throughputRow(fmt.Sprintf("KV PUT/s (%d B values)", o.valueSize), r.kvPut.rate(), consulKVPut, throughputGain*consulKVPut),
		infoRow("KV PUT latency p50 / p99", lat(r.kvPut)),
		throughputRow("KV GET/s", r.kvGet.rate(), consulKVGet, throughputGain*consulKVGet),
		infoRow("KV GET latency p50 / p99", lat(r.kvGet)),
		throughputRow(fmt.Sprintf("health/service?passing queries/s (%d instances)", o.healthN), r.health.rate(), consulHealth, throughputGain*consulHealth),
		infoRow("health query latency p50 / p99", lat(r.health)),
		throughputRow("DNS SRV queries/s (UDP)", r.dns.rate(), consulDNS, targetDNS),
		lowerRow("blocking-query wake-up, median (lower is better)", float64(r.wakeup.pct(50)), consulWakeup, targetWakeup, ms, true),
		infoRow("blocking-query wake-up, p99", ms(float64(r.wakeup.pct(99)))),
		startupRow(r.startup),
		lowerRow("idle RSS (lower is better)", float64(r.idle.rss), consulIdleRSS, targetIdleRSS, mb, false),
		lowerRow(fmt.Sprintf("RSS after %d instances (lower is better)", o.instances), float64(r.after10k.rss), consulRSS10k, targetRSS10k, mb, false),
	}
}

var header = row{"metric", "Trellis", "Consul 1.22 (reference)", "target", "ratio/meets"}

// table renders the rows as a Markdown table, aligned for a terminal.
func (r *report) table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	line := func(x row) {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t|\n", x.metric, x.value, x.reference, x.target, x.verdict)
	}
	line(header)
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|\n")
	for _, x := range r.rows() {
		line(x)
	}
	tw.Flush()
	return b.String()
}

// notes lists what the table leaves out: errors and the conditions.
func (r *report) notes() string {
	var b strings.Builder
	o := r.opts
	fmt.Fprintf(&b, "\nratio is Trellis / Consul; for the lower-is-better rows below 1 is better.\n")
	fmt.Fprintf(&b, "%d workers per phase; health and DNS phases ran %v each; DNS replies carried %d SRV answers (no EDNS, 512-byte UDP). MB = 10^6 bytes.\n",
		o.workers, o.duration, r.dnsAnswers)
	fmt.Fprintf(&b, "%d wake-ups timed. Peak agent RSS (VmHWM) over the run: %s; RSS at the end: %s.\n",
		r.wakeup.ops, mb(float64(r.final.hwm)), mb(float64(r.final.rss)))
	fmt.Fprintf(&b, "\nPer phase, CPU time of the agent, of the load generator and of anything else on the machine\n"+
		"(%d CPUs; 100%% = one CPU). Other work competing for the CPUs lowers the figures above.\n\n", runtime.NumCPU())
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "| phase\t| ops\t| wall\t| agent CPU/op\t| agent CPU\t| load-gen CPU\t| other CPU\t| agent RSS after\t| errors\t|\n")
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|\n")
	for _, p := range []*result{r.regs, r.kvPut, r.kvGet, r.health, r.dns, r.wakeup} {
		pct := func(d time.Duration) float64 { return 100 * d.Seconds() / p.elapsed.Seconds() }
		fmt.Fprintf(tw, "| %s\t| %s\t| %.2f s\t| %.1f µs\t| %.0f%%\t| %.0f%%\t| %.0f%%\t| %s\t| %d\t|\n",
			p.name, commas(int64(p.ops)), p.elapsed.Seconds(),
			float64(p.cpu.agent.Microseconds())/float64(max(p.ops, 1)),
			pct(p.cpu.agent), pct(p.cpu.self), pct(p.cpu.other()),
			mb(float64(p.rssAfter.rss)), p.errs)
	}
	tw.Flush()
	for _, p := range []*result{r.regs, r.kvPut, r.kvGet, r.health, r.dns, r.wakeup} {
		if p.errs > 0 {
			fmt.Fprintf(&b, "%s: %d of %d operations failed; first: %v\n", p.name, p.errs, p.errs+p.ops, p.firstErr)
		}
	}
	return b.String()
}

// markdown is the results file: the table with when and how it was made.
func (r *report) markdown(o *options, table string) string {
	var b strings.Builder
	gv := o.goVersion
	if gv == "" {
		gv = "go version " + runtime.Version() + " (of the load generator)"
	}
	fmt.Fprintf(&b, "# Trellis benchmark results\n\n")
	fmt.Fprintf(&b, "Generated by `bench/run.sh`; overwritten on each run. Figures, not pass/fail.\n\n")
	fmt.Fprintf(&b, "- date: %s\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- %s\n", strings.TrimSpace(gv))
	if rev := gitRevision(); rev != "" {
		fmt.Fprintf(&b, "- commit: %s\n", rev)
	}
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %s/%s; agent and load generator share them\n\n",
		runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH)
	b.WriteString(table)
	b.WriteString(r.notes())
	return b.String()
}

func gitRevision() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func rate(v float64) string { return commas(int64(v+0.5)) + "/s" }

func ms(ns float64) string { return fmt.Sprintf("%.2f ms", ns/1e6) }

func mb(bytes float64) string { return fmt.Sprintf("%.1f MB", bytes/1e6) }

func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
