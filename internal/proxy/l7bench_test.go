package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// Benchmarks of a sidecar pair: a client of web's upstream listener,
// through web's and db's sidecars as the generator renders them (mTLS
// between them: HTTP/1.1 for an http service, HTTP/2 for an http2 one,
// bytes for a tcp one) to db's app, against the app called
// directly, in the shape of the mesh's performance targets: fortio-like
// HTTP/1.1 keep-alive clients POSTing 1 KiB that the app echoes.
//
// Each benchmark runs b.N requests directly, then b.N through the pair,
// and reports:
//   - req/s: through the pair;
//   - added-p50-µs, added-p99-µs: the latency percentiles through the
//     pair minus those of the direct run;
//   - pair-allocs/req, pair-B/req: heap allocations of the run through
//     the pair minus those of the direct run, per request (the two
//     sidecars' allocations);
//   - pair-CPU-µs/req: the same for the process's CPU time (user and
//     system): the two sidecars' CPU. Half of it is one sidecar's
//     millicores per 1000 requests per second;
//   - pair-GC-µs/req: the part of it the garbage collector used (the
//     runtime's estimate).
//
// The Conc benchmarks are closed loop (each client sends its next
// request when it has the response: the pair's throughput); the Rate
// ones send 1000 requests per second in all, spread evenly over their
// clients (fortio -qps 1000), and take b.N ms: run them with
// -benchtime=5000x or so. Client, app and both sidecars share the
// machine's CPUs; BenchmarkSidecarProcesses runs the sidecars as
// processes of their own to measure each one's CPU and RSS.

// payloadSize is the request body the clients send (fortio
// -payload-size 1024).
const payloadSize = 1 << 10

// benchApp is db's application: it echoes the request body (fortio's
// echo server), or answers a short text to a request without one.
func benchApp(b *testing.B) net.Addr {
	hello := []byte("hello from the app")
	return benchAppWith(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if len(body) == 0 {
			body = hello
		}
		w.Header()["Content-Type"] = []string{"application/octet-stream"}
		w.Write(body)
	}))
}

// benchAppWith is an HTTP/1.1 and h2c application serving h.
func benchAppWith(b testing.TB, h http.Handler) net.Addr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return ln.Addr()
}

// benchPairL7 is web's and db's sidecars as the generator renders them
// for an http service (http2 if h2App: db's app then speaks h2c), db
// allowing every caller: HTTP/1.1 between the sidecars for http, HTTP/2
// for http2. It returns web's upstream listener for db.
func benchPairL7(b *testing.B, app net.Addr, h2App bool) net.Addr {
	protocol := "http"
	if h2App {
		protocol = "http2"
	}
	return benchPair(b, app, protocol)
}

// benchPair is the sidecar pair of services of the given protocol, db
// allowing every caller, as the generator renders them.
func benchPair(b testing.TB, app net.Addr, protocol string) net.Addr {
	authority := newCA(b, td)
	roots := []string{authority.root.CertPEM}
	appPort := app.(*net.TCPAddr).Port
	dbSnap := snapshot("db", authority.leaf(b, td, "db"), roots, appPort)
	dbSnap.Protocol = protocol
	dbSnap.DefaultAllow = true
	db := New(Options{})
	b.Cleanup(func() { db.Close() })
	if err := db.Apply(configOf(b, dbSnap)); err != nil {
		b.Fatal(err)
	}
	webSnap := snapshot("web", authority.leaf(b, td, "web"), roots, appPort)
	u := upstream("db", db.ListenerAddr(publicName()))
	u.Protocol = protocol
	webSnap.Upstreams = []proxycfg.Upstream{u}
	web := New(Options{})
	b.Cleanup(func() { web.Close() })
	if err := web.Apply(configOf(b, webSnap)); err != nil {
		b.Fatal(err)
	}
	return web.ListenerAddr(upstreamName(u))
}

// benchPairL4 is benchPair with tcp services: tcp_proxy listeners, mTLS
// between the sidecars.
func benchPairL4(b *testing.B, app net.Addr) net.Addr { return benchPair(b, app, "tcp") }

// load is a run of HTTP/1.1 keep-alive clients.
type load struct {
	conc    int
	qps     float64 // in all; 0: closed loop
	payload []byte  // POSTed if not empty, else GET
	newConn bool    // a connection per request
}

// loadResult is what a run measured.
type loadResult struct {
	lat     []time.Duration // sorted
	elapsed time.Duration
	cpu     time.Duration // the process's, user and system
	gcCPU   float64       // seconds of it the GC used, as runtime/metrics estimates
	mallocs uint64
	bytes   uint64
}

// run sends n requests to target and measures them, after a warm-up that
// opens the connections.
func (l load) run(b *testing.B, target net.Addr, n int) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: l.conc, DisableCompression: true, DisableKeepAlives: l.newConn}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := "http://" + target.String() + "/bench"
	send := func() error {
		method, body := http.MethodGet, io.Reader(nil)
		if len(l.payload) > 0 {
			method, body = http.MethodPost, bytes.NewReader(l.payload)
		}
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	var wg sync.WaitGroup
	for range l.conc {
		wg.Go(func() {
			for range 4 {
				if err := send(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	lat := make([][]time.Duration, l.conc)
	var period time.Duration // between two requests of a client
	if l.qps > 0 {
		period = time.Duration(float64(l.conc) / l.qps * float64(time.Second))
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	mallocs, heap := ms.Mallocs, ms.TotalAlloc
	cpu, gcCPU := processCPU(), gcCPUSeconds()
	start := time.Now()
	for i := range l.conc {
		quota := n / l.conc
		if i < n%l.conc {
			quota++
		}
		wg.Go(func() {
			lat[i] = make([]time.Duration, 0, quota)
			next := start.Add(period * time.Duration(i) / time.Duration(l.conc))
			for range quota {
				if period > 0 {
					time.Sleep(time.Until(next)) // pacing, as fortio -qps
					next = next.Add(period)
				}
				t0 := time.Now()
				if err := send(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start), cpu: processCPU() - cpu, gcCPU: gcCPUSeconds() - gcCPU}
	runtime.ReadMemStats(&ms)
	res.mallocs, res.bytes = ms.Mallocs-mallocs, ms.TotalAlloc-heap
	res.lat = slices.Concat(lat...)
	slices.Sort(res.lat)
	return res
}

// processCPU is the CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gcCPUSeconds is the CPU time the process's GC has used so far.
func gcCPUSeconds() float64 {
	s := []rtmetrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindFloat64 {
		return 0
	}
	return s[0].Value.Float64()
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// compare runs l against app, then through the pair's entry, and reports
// the figures described at the top of the file.
func (l load) compare(b *testing.B, app, entry net.Addr) {
	b.StopTimer()
	direct := l.run(b, app, b.N)
	b.StartTimer()
	through := l.run(b, entry, b.N)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/through.elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(pct(through.lat, 0.5)-pct(direct.lat, 0.5))/1e3, "added-p50-µs")
	b.ReportMetric(float64(pct(through.lat, 0.99)-pct(direct.lat, 0.99))/1e3, "added-p99-µs")
	b.ReportMetric((float64(through.mallocs)-float64(direct.mallocs))/n, "pair-allocs/req")
	b.ReportMetric((float64(through.bytes)-float64(direct.bytes))/n, "pair-B/req")
	b.ReportMetric(float64(through.cpu-direct.cpu)/1e3/n, "pair-CPU-µs/req")
	b.ReportMetric((through.gcCPU-direct.gcCPU)*1e6/n, "pair-GC-µs/req")
}

func benchmarkL7(b *testing.B, h2App bool, l load) {
	app := benchApp(b)
	l.compare(b, app, benchPairL7(b, app, h2App))
}

func benchmarkL4(b *testing.B, l load) {
	app := benchApp(b)
	l.compare(b, app, benchPairL4(b, app))
}

var kib = bytes.Repeat([]byte("x"), payloadSize)

func BenchmarkPairHTTP1(b *testing.B)       { benchmarkL7(b, false, load{conc: 1, payload: kib}) }
func BenchmarkPairHTTP1Conc16(b *testing.B) { benchmarkL7(b, false, load{conc: 16, payload: kib}) }
func BenchmarkPairH2CConc16(b *testing.B)   { benchmarkL7(b, true, load{conc: 16, payload: kib}) }
func BenchmarkPairHTTP1Rate1000C16(b *testing.B) {
	benchmarkL7(b, false, load{conc: 16, qps: 1000, payload: kib})
}
func BenchmarkPairHTTP1Rate1000C4(b *testing.B) {
	benchmarkL7(b, false, load{conc: 4, qps: 1000, payload: kib})
}
func BenchmarkPairTCP(b *testing.B)       { benchmarkL4(b, load{conc: 1, payload: kib}) }
func BenchmarkPairTCPConc16(b *testing.B) { benchmarkL4(b, load{conc: 16, payload: kib}) }
func BenchmarkPairTCPNewConnConc16(b *testing.B) {
	benchmarkL4(b, load{conc: 16, payload: kib, newConn: true})
}
func BenchmarkPairTCPRate1000C16(b *testing.B) {
	benchmarkL4(b, load{conc: 16, qps: 1000, payload: kib})
}

// BenchmarkSidecarProcesses runs db's and web's sidecars as processes of
// their own (this test binary, re-executed), as in a deployment, and
// measures each one's CPU and resident memory under load from this
// process: first 1000 requests per second from 16 clients for b.N ms,
// then closed loop from 16 clients for b.N requests. It reports, per
// sidecar, its millicores per 1000 requests per second at the fixed rate
// (mCPU/krps) and at full load (max-mCPU/krps), its RSS after each phase
// and its peak RSS (VmHWM), and the added latency and the throughput as
// the in-process benchmarks do. BENCH_L4=1 makes the services tcp.
// Run it with -benchtime=5000x or so.
func BenchmarkSidecarProcesses(b *testing.B) {
	if spec := os.Getenv(sidecarEnv); spec != "" {
		runBenchSidecar(b, spec)
		return
	}
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	app := benchApp(b)
	authority := newCA(b, td)
	roots := []string{authority.root.CertPEM}
	l4 := os.Getenv("BENCH_L4") == "1"
	db := startBenchSidecar(b, benchSidecarSpec{Role: "db", Leaf: authority.leaf(b, td, "db"), Roots: roots, App: app.String(), L4: l4})
	web := startBenchSidecar(b, benchSidecarSpec{Role: "web", Leaf: authority.leaf(b, td, "web"), Roots: roots, App: app.String(), DB: db.addr, L4: l4})
	entry, err := net.ResolveTCPAddr("tcp", web.addr)
	if err != nil {
		b.Fatal(err)
	}
	sidecars := []*benchSidecar{web, db}
	for _, s := range sidecars {
		b.ReportMetric(s.rss(b, "VmRSS"), s.role+"-idle-RSS-MiB")
	}

	b.StopTimer()
	rate := load{conc: 16, qps: 1000, payload: kib}
	direct := rate.run(b, app, b.N)
	cpu0 := []time.Duration{web.cpu(b), db.cpu(b)}
	b.StartTimer()
	through := rate.run(b, entry, b.N)
	b.StopTimer()
	for i, s := range sidecars {
		krps := float64(b.N) / through.elapsed.Seconds() / 1000
		b.ReportMetric(float64(s.cpu(b)-cpu0[i])/through.elapsed.Seconds()/1e6/krps, s.role+"-mCPU/krps")
		b.ReportMetric(s.rss(b, "VmRSS"), s.role+"-RSS-MiB")
	}
	b.ReportMetric(float64(pct(through.lat, 0.5)-pct(direct.lat, 0.5))/1e3, "added-p50-µs")
	b.ReportMetric(float64(pct(through.lat, 0.99)-pct(direct.lat, 0.99))/1e3, "added-p99-µs")

	full := load{conc: 16, payload: kib}
	cpu0 = []time.Duration{web.cpu(b), db.cpu(b)}
	max := full.run(b, entry, b.N)
	b.ReportMetric(float64(b.N)/max.elapsed.Seconds(), "max-req/s")
	for i, s := range sidecars {
		b.ReportMetric(float64(s.cpu(b)-cpu0[i])/1e3/float64(b.N), s.role+"-max-mCPU/krps")
		b.ReportMetric(s.rss(b, "VmRSS"), s.role+"-max-RSS-MiB")
		b.ReportMetric(s.rss(b, "VmHWM"), s.role+"-peak-RSS-MiB")
		b.ReportMetric(s.rss(b, "RssAnon"), s.role+"-anon-RSS-MiB")
	}
}

// sidecarEnv carries a sidecar process's spec, as JSON.
const sidecarEnv = "TRELLIS_BENCH_SIDECAR"

type benchSidecarSpec struct {
	Role  string // "db" (public listener to App) or "web" (upstream listener to DB)
	Leaf  *proxycfg.Leaf
	Roots []string
	App   string
	DB    string // db's public listener, for web
	L4    bool
}

// runBenchSidecar is the sidecar process: it applies its configuration,
// prints the address clients use, and runs until its stdin closes.
func runBenchSidecar(b *testing.B, raw string) {
	var spec benchSidecarSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		b.Fatal(err)
	}
	app, err := net.ResolveTCPAddr("tcp", spec.App)
	if err != nil {
		b.Fatal(err)
	}
	var cfg Config
	var entry string
	switch {
	case spec.L4:
		snap := snapshot(spec.Role, spec.Leaf, spec.Roots, app.Port)
		snap.DefaultAllow = true
		entry = publicName()
		if spec.Role == "web" {
			dbAddr, err := net.ResolveTCPAddr("tcp", spec.DB)
			if err != nil {
				b.Fatal(err)
			}
			snap.Upstreams = []proxycfg.Upstream{upstream("db", dbAddr)}
			entry = upstreamName(snap.Upstreams[0])
		}
		cfg = configOf(b, snap)
	case spec.Role == "web":
		dbAddr, err := net.ResolveTCPAddr("tcp", spec.DB)
		if err != nil {
			b.Fatal(err)
		}
		cfg = outboundTo(inboundConfig("web", spec.Leaf, spec.Roots, app, false, nil), "db", dbAddr)
		entry = "db"
	default:
		cfg = inboundConfig("db", spec.Leaf, spec.Roots, app, false, httpRBACAllowAll())
		entry = pubListener
	}
	p := New(Options{})
	defer p.Close()
	if err := p.Apply(cfg); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("sidecar %s\n", p.ListenerAddr(entry))
	io.Copy(io.Discard, os.Stdin)
}

// benchSidecar is a running sidecar process.
type benchSidecar struct {
	role string
	addr string // where its clients connect
	pid  int
}

func startBenchSidecar(b *testing.B, spec benchSidecarSpec) *benchSidecar {
	raw, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^BenchmarkSidecarProcesses$", "-test.benchtime=1x")
	cmd.Env = append(os.Environ(), sidecarEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "sidecar "); ok {
			go io.Copy(io.Discard, stdout)
			return &benchSidecar{role: spec.Role, addr: addr, pid: cmd.Process.Pid}
		}
	}
	b.Fatalf("sidecar %s did not start", spec.Role)
	return nil
}

// cpu is the CPU time the process has used (user and system).
func (s *benchSidecar) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command's closing parenthesis: state is the 3rd
	// field of the line, utime and stime the 14th and 15th.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks
}

// rss is a memory figure of /proc/<pid>/status (VmRSS, VmHWM), in MiB.
func (s *benchSidecar) rss(b *testing.B, field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, s.pid)
	return 0
}

// BenchmarkPairStreams holds 200 responses open through the L7 pair (the
// app sends a byte, then waits: a gRPC stream, an event stream, a long
// poll) and reports the memory each costs the process, client and app
// included (B/stream: heap and stacks in use), stacks apart. Each
// iteration uses a pair of its own.
func BenchmarkPairStreams(b *testing.B) {
	const n = 200
	var perStream, stackPerStream float64
	for b.Loop() {
		b.StopTimer()
		release := make(chan struct{})
		app := benchAppWith(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			<-release
		}))
		url := "http://" + benchPairL7(b, app, false).String() + "/stream"
		b.StartTimer()
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC() // twice: the pools drop what they kept
		runtime.ReadMemStats(&ms)
		before, stacks := ms.HeapInuse+ms.StackInuse, ms.StackInuse
		tr := &http.Transport{MaxIdleConnsPerHost: n}
		first := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				req, err := http.NewRequest(http.MethodGet, url, nil)
				if err != nil {
					first <- err
					return
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					first <- err
					return
				}
				defer resp.Body.Close()
				_, err = io.ReadFull(resp.Body, make([]byte, 1))
				first <- err
				io.Copy(io.Discard, resp.Body)
			})
		}
		for range n {
			if err := <-first; err != nil {
				b.Error(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		perStream += float64(ms.HeapInuse+ms.StackInuse-before) / n
		stackPerStream += float64(ms.StackInuse-stacks) / n
		close(release)
		wg.Wait()
		tr.CloseIdleConnections()
	}
	b.ReportMetric(perStream/float64(b.N), "B/stream")
	b.ReportMetric(stackPerStream/float64(b.N), "stack-B/stream")
}

// BenchmarkPairBulk downloads 1 MiB responses through the L7 pair, with a
// Content-Length and chunked.
func BenchmarkPairBulk(b *testing.B) {
	body := make([]byte, 1<<20)
	app := benchAppWith(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for i := 0; i < len(body); i += 8 << 10 {
				w.Write(body[i : i+8<<10])
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	entry := benchPairL7(b, app, false)
	tr := &http.Transport{}
	b.Cleanup(tr.CloseIdleConnections)
	for _, path := range []string{"/length", "/chunked"} {
		b.Run(path[1:], func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req, err := http.NewRequest(http.MethodGet, "http://"+entry.String()+path, nil)
				if err != nil {
					b.Fatal(err)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
