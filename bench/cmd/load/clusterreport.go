package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Consul 0.7.1's published figures for three 8-core servers: the
// reference column of the cluster table. The target for this benchmark's
// 2-core machine is to match them.
const (
	consul071KVPut    = 3780.0
	consul071KVPutP99 = 49 * float64(time.Millisecond)
)

func (r *clusterReport) rows() []row {
	o := r.opts
	lat := func(res *result) string {
		return fmt.Sprintf("%s / %s", ms(float64(res.pct(50))), ms(float64(res.pct(99))))
	}
	rows := []row{
		throughputRow(fmt.Sprintf("KV PUT/s, %d workers over %d servers (%d B values)", o.workers, len(r.names), o.valueSize),
			r.put.res.rate(), consul071KVPut, consul071KVPut),
		{"KV PUT latency p50 / p99, all servers", lat(r.put.res), "— / " + ms(consul071KVPutP99), "—", "—"},
	}
	if r.leaderPut != nil {
		rows = append(rows,
			row{fmt.Sprintf("KV PUT/s, %d workers on the leader", o.workers), rate(r.leaderPut.res.rate()), rate(consul071KVPut), "—",
				fmt.Sprintf("%.2f× / —", r.leaderPut.res.rate()/consul071KVPut)},
			infoRow("KV PUT latency p50 / p99, leader only", lat(r.leaderPut.res)))
	}
	rows = append(rows,
		infoRow("KV GET ?consistent/s, all servers", rate(r.get.res.rate())),
		infoRow("KV GET ?consistent latency p50 / p99", lat(r.get.res)),
	)
	if n := len(r.failovers); n > 0 {
		served := make([]time.Duration, n)
		elected := make([]time.Duration, n)
		rejoin := make([]time.Duration, n)
		var all []time.Duration
		for i, f := range r.failovers {
			served[i], elected[i], rejoin[i] = f.served, f.elected, f.rejoin
			if f.allServed > 0 {
				all = append(all, f.allServed)
			}
		}
		for _, s := range [][]time.Duration{served, elected, rejoin, all} {
			slices.Sort(s)
		}
		mm := func(s []time.Duration) string {
			return fmt.Sprintf("%s / %s", ms(float64(median(s))), ms(float64(s[len(s)-1])))
		}
		rounds := fmt.Sprintf("%d rounds", n)
		if r.failoverErr != nil {
			rounds = fmt.Sprintf("%d of %d rounds", n, r.opts.failovers)
		}
		rows = append(rows,
			infoRow(fmt.Sprintf("kill -9 leader → PUT served, median / max (%s)", rounds), mm(served)),
			infoRow("kill -9 leader → new leader named, median / max", mm(elected)),
			infoRow("kill -9 leader → PUT served through every survivor, median / max", allServedValue(all, n, mm)),
			infoRow("restart → caught up, median / max", mm(rejoin)),
		)
	} else if r.opts.failovers > 0 {
		rows = append(rows, infoRow("kill -9 leader → PUT served", "failed, see below"))
	}
	if r.afterPut != nil {
		rows = append(rows,
			infoRow("KV PUT/s, all servers, after the failovers", rate(r.afterPut.res.rate())),
			infoRow("KV PUT latency p50 / p99, after the failovers", lat(r.afterPut.res)))
	}
	rows = append(rows, infoRow("cluster start → leader serving writes", fmt.Sprintf("%s (%s)", ms(float64(r.formed)), r.firstLeader)))
	for i, name := range r.names {
		rows = append(rows, infoRow(fmt.Sprintf("RSS %s idle / after PUTs", name),
			fmt.Sprintf("%s / %s", mb(float64(r.idle[i].rss)), mb(float64(r.afterKV[i].rss)))))
	}
	return rows
}

// allServedValue reports the rounds in which every survivor served a PUT,
// saying how many did not.
func allServedValue(all []time.Duration, rounds int, mm func([]time.Duration) string) string {
	if len(all) == 0 {
		return "never"
	}
	v := mm(all)
	if len(all) < rounds {
		v += fmt.Sprintf(" (%d rounds never)", rounds-len(all))
	}
	return v
}

// median of a sorted slice: the mean of the middle two for even lengths.
func median(s []time.Duration) time.Duration {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

var clusterHeader = row{"metric", "Trellis", "Consul 0.7.1 (reference)", "target", "ratio/meets"}

func (r *clusterReport) table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	line := func(x row) {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t|\n", x.metric, x.value, x.reference, x.target, x.verdict)
	}
	line(clusterHeader)
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|\n")
	for _, x := range r.rows() {
		line(x)
	}
	tw.Flush()
	return b.String()
}

// notes gives what the table leaves out: per-server figures, CPU, the
// failover rounds, errors and the servers' warnings.
func (r *clusterReport) notes() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nReference: Consul 0.7.1, three 8-core servers (published). Here all %d servers, each a\n"+
		"separate process on %s, and the load generator share %d CPUs. MB = 10^6 bytes.\n",
		len(r.names), strings.Join(r.ips, ", "), runtime.NumCPU())
	fmt.Fprintf(&b, "Spread phases aim worker w at server w mod %d; followers forward to the leader.\n", len(r.names))

	phases := []*clusterPhase{r.put}
	if r.leaderPut != nil {
		phases = append(phases, r.leaderPut)
	}
	phases = append(phases, r.get)
	if r.afterPut != nil {
		phases = append(phases, r.afterPut)
	}
	fmt.Fprintf(&b, "\nBy server the workers aimed at:\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "| phase\t| server\t| role\t| workers\t| ops\t| p50\t| p99\t| max\t| errors\t|\n")
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|\n")
	for _, p := range phases {
		for _, s := range p.servers {
			if s.workers == 0 {
				continue
			}
			role := "follower"
			if s.leader {
				role = "leader"
			}
			var mx time.Duration
			if len(s.lat) > 0 {
				mx = s.lat[len(s.lat)-1]
			}
			fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %d\t| %s\t| %s\t| %s\t| %s\t| %d\t|\n", p.name, s.name, role, s.workers,
				commas(int64(len(s.lat))), ms(float64(percentile(s.lat, 50))), ms(float64(percentile(s.lat, 99))),
				ms(float64(mx)), s.errs)
		}
	}
	tw.Flush()

	fmt.Fprintf(&b, "\nMemory of each server (read %v after the cluster formed, and %v after the PUT phases), and its data dir\n"+
		"after the PUT phases. anon is heap and stacks; file is mapped files (the binary, the raft log's bolt file).\n\n", r.opts.settle, r.opts.settle)
	tw = tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "| server\t| idle RSS\t| anon / file\t| after PUTs RSS\t| anon / file\t| peak RSS\t| data dir\t|\n")
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|\n")
	for i, n := range r.names {
		idle, kv := r.idle[i], r.afterKV[i]
		fmt.Fprintf(tw, "| %s\t| %s\t| %s / %s\t| %s\t| %s / %s\t| %s\t| %s\t|\n", n,
			mb(float64(idle.rss)), mb(float64(idle.anon)), mb(float64(idle.file)),
			mb(float64(kv.rss)), mb(float64(kv.anon)), mb(float64(kv.file)), mb(float64(kv.hwm)), mb(float64(r.dataAfterKV[i])))
	}
	tw.Flush()

	fmt.Fprintf(&b, "\nCPU per phase (100%% = one CPU; %d CPUs). Other work competing for the CPUs lowers the figures.\n"+
		"On a shared VM the servers' CPU/op for the same phase has varied by up to half between runs (and between\n"+
		"phases of one run) with no other CPU use visible here: compare runs by CPU/op as well as by rate.\n\n", runtime.NumCPU())
	tw = tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "| phase\t| ops\t| wall\t|")
	for _, n := range r.names {
		fmt.Fprintf(tw, " %s CPU\t|", n)
	}
	fmt.Fprintf(tw, " servers CPU/op\t| load-gen CPU\t| other CPU\t|\n|---\t|---\t|---\t|")
	for range r.names {
		fmt.Fprintf(tw, "---\t|")
	}
	fmt.Fprintf(tw, "---\t|---\t|---\t|\n")
	for _, p := range phases {
		el := p.res.elapsed.Seconds()
		pct := func(d time.Duration) float64 { return 100 * d.Seconds() / el }
		fmt.Fprintf(tw, "| %s\t| %s\t| %.2f s\t|", p.name, commas(int64(p.res.ops)), el)
		for i, d := range p.cpu.servers {
			role := ""
			if p.servers[i].leader {
				role = " (L)"
			}
			fmt.Fprintf(tw, " %.0f%%%s\t|", pct(d), role)
		}
		fmt.Fprintf(tw, " %.1f µs\t| %.0f%%\t| %.0f%%\t|\n",
			float64(p.cpu.serversTotal().Microseconds())/float64(max(p.res.ops, 1)), pct(p.cpu.self), pct(p.cpu.other()))
	}
	tw.Flush()
	for _, p := range phases {
		if p.res.errs > 0 {
			fmt.Fprintf(&b, "%s: %d of %d operations failed; first: %v\n", p.name, p.res.errs, p.res.errs+p.res.ops, p.res.firstErr)
		}
	}

	if len(r.failovers) > 0 || r.failoverErr != nil {
		fmt.Fprintf(&b, "\nFailover rounds: kill -9 of the leader; each survivor probed every 10 ms (PUT, and GET /v1/status/leader)\n"+
			"from just before the signal. \"PUT served\" is the first success through any survivor (\"via\"), \"every survivor\"\n"+
			"the time by which both had served one (the follower forwarding to the new leader). The killed server is\n"+
			"restarted on the same data dir and ports and counted caught up once every server names the leader, the\n"+
			"leader has %d voters and the restarted server serves (?stale) a write made after its restart.\n\n", len(r.names))
		tw = tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "| round\t| killed\t| new leader\t| elected\t| PUT served\t| via\t| every survivor\t| failed PUTs\t| restart → listening\t| → caught up\t| leader after\t|\n")
		fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|\n")
		for i, f := range r.failovers {
			every := "never"
			if f.allServed > 0 {
				every = ms(float64(f.allServed))
			}
			fmt.Fprintf(tw, "| %d\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %d\t| %s\t| %s\t| %s\t|\n", i+1, f.killed, f.next,
				ms(float64(f.elected)), ms(float64(f.served)), f.via, every, f.errs, ms(float64(f.listening)), ms(float64(f.rejoin)), f.leaderAfter)
		}
		tw.Flush()
		errKinds := map[string]int{}
		for _, f := range r.failovers {
			for k, n := range f.errKinds {
				errKinds[k] += n
			}
		}
		if len(errKinds) > 0 {
			fmt.Fprintf(&b, "\nFailed PUTs before each survivor's first success, by error:\n\n")
		}
		for _, k := range slices.Sorted(maps.Keys(errKinds)) {
			fmt.Fprintf(&b, "- %d× %s\n", errKinds[k], k)
		}
		if r.failoverErr != nil {
			fmt.Fprintf(&b, "failover phase stopped: %v\n", r.failoverErr)
		}
	}

	fmt.Fprintf(&b, "\nServer warnings and errors over the run (log level warn):\n\n")
	any := false
	for _, l := range r.logs {
		if l.err != nil {
			fmt.Fprintf(&b, "- %s: reading its log: %v\n", l.name, l.err)
			any = true
			continue
		}
		for _, e := range l.top {
			fmt.Fprintf(&b, "- %s: %d× %s %s\n", l.name, e.n, e.level, e.msg)
			any = true
		}
		if l.other > 0 {
			fmt.Fprintf(&b, "- %s: %d more lines of %d other kinds\n", l.name, l.other, l.otherKinds)
		}
	}
	if !any {
		fmt.Fprintf(&b, "- none\n")
	}
	return b.String()
}

var loopbackAddr = regexp.MustCompile(`127\.0\.0\.\d+:\d+`)

// shortErr trims the request path out of a client error so that the same
// failure on different servers counts once.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "http://"); i >= 0 {
		if j := strings.Index(s[i:], ": "); j >= 0 {
			s = s[i+j+2:]
		}
	}
	s = loopbackAddr.ReplaceAllString(s, "IP:PORT")
	if len(s) > 240 {
		s = s[:100] + " … " + s[len(s)-140:]
	}
	return s
}

// markdown is the results file: the table with when and how it was made.
func (r *clusterReport) markdown(table string) string {
	var b strings.Builder
	gv := r.opts.goVersion
	if gv == "" {
		gv = "go version " + runtime.Version() + " (of the load generator)"
	}
	fmt.Fprintf(&b, "# Trellis cluster benchmark results\n\n")
	fmt.Fprintf(&b, "Generated by `bench/cluster.sh`; overwritten on each run. Figures, not pass/fail.\n\n")
	fmt.Fprintf(&b, "- date: %s\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- %s\n", strings.TrimSpace(gv))
	if rev := gitRevision(); rev != "" {
		fmt.Fprintf(&b, "- commit: %s\n", rev)
	}
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %s/%s; three servers and the load generator share them\n",
		runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- run took %s\n\n", time.Since(r.started).Round(time.Second))
	b.WriteString(table)
	b.WriteString(r.notes())
	return b.String()
}

// logSummary counts a server's warning and error lines by message.
type logSummary struct {
	name              string
	top               []logEntry // most frequent first
	other, otherKinds int        // lines and kinds beyond top
	err               error
}

type logEntry struct {
	level, msg string
	n          int
}

var (
	slogLevel = regexp.MustCompile(`\blevel=(WARN|ERROR)\b`)
	slogMsg   = regexp.MustCompile(`\bmsg=("(?:[^"\\]|\\.)*"|\S+)`)
	// Numbers, addresses and IDs vary between otherwise equal lines.
	logNoise = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)*(:\d+)?`)
)

// summarizeLog reads a server's log (text slog lines) and keeps the five
// most frequent warning and error messages, numbers masked.
func summarizeLog(name, path string) logSummary {
	s := logSummary{name: name}
	f, err := os.Open(path)
	if err != nil {
		s.err = err
		return s
	}
	defer f.Close()
	counts := map[logEntry]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		lv := slogLevel.FindStringSubmatch(line)
		if lv == nil {
			continue
		}
		msg := line
		if m := slogMsg.FindStringSubmatch(line); m != nil {
			msg = m[1]
			if u, err := strconv.Unquote(msg); err == nil {
				msg = u
			}
		}
		msg = logNoise.ReplaceAllString(msg, "N")
		if len(msg) > 140 {
			msg = msg[:140] + "…"
		}
		counts[logEntry{level: lv[1], msg: msg}]++
	}
	if err := sc.Err(); err != nil {
		s.err = err
	}
	var all []logEntry
	for e, n := range counts {
		e.n = n
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b logEntry) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.msg, b.msg)
	})
	const keep = 5
	for i, e := range all {
		if i < keep {
			s.top = append(s.top, e)
		} else {
			s.other += e.n
			s.otherKinds++
		}
	}
	return s
}
