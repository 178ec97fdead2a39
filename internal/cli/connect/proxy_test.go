package connect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy"
)

const within = 20 * time.Second // a deadline, not a delay

// fakeProxy is a data plane that accepts every configuration.
type fakeProxy struct {
	applied atomic.Int32
	closed  atomic.Bool
	got     chan struct{} // receives after each Apply, never blocks
}

func (f *fakeProxy) Apply(cfg proxy.Config) error {
	f.applied.Add(1)
	select {
	case f.got <- struct{}{}:
	default:
	}
	return nil
}
func (f *fakeProxy) Ready() bool                   { return f.applied.Load() > 0 }
func (f *fakeProxy) Close() error                  { f.closed.Store(true); return nil }
func (f *fakeProxy) Gatherer() prometheus.Gatherer { return prometheus.NewRegistry() }

// syncBuffer is a buffer written by the command's goroutine and read by
// the test's, which it tells about each write.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer  // guarded by mu
	wrote chan struct{} // receives after each write, never blocks
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitMatch waits for re to match what was written, and returns the match.
func (s *syncBuffer) waitMatch(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		if m := re.FindStringSubmatch(s.String()); m != nil {
			return m
		}
		select {
		case <-s.wrote:
		case <-deadline:
			t.Fatalf("no output matching %s; got %q", re, s.String())
		}
	}
}

var started = regexp.MustCompile(`==> Trellis connect proxy (\S+) started; admin on (http://\S+)\n`)

// registerWeb registers web-1 with a sidecar, web-1-sidecar-proxy.
func registerWeb(t *testing.T, c *api.Client) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startProxy runs the command with args; stop cancels it and returns its
// exit code, once it returned (cleanup stops it too).
func startProxy(t *testing.T, newProxy func(proxy.Options) dataPlane, args ...string) (stdout, stderr *syncBuffer, stop func() int) {
	t.Helper()
	stdout, stderr = newSyncBuffer(), newSyncBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- runProxy(ctx, args, stdout, stderr, newProxy) }()
	stop = sync.OnceValue(func() int {
		cancel()
		return <-code
	})
	t.Cleanup(func() { stop() })
	return stdout, stderr, stop
}

// getStats returns the admin listener's /stats response and body.
func getStats(t *testing.T, admin string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// waitStat polls the admin listener's /stats until re matches it.
func waitStat(t *testing.T, admin string, re *regexp.Regexp) {
	t.Helper()
	meshtest.Eventually(t, within, func() error {
		if _, body := getStats(t, admin); !re.Match(body) {
			return fmt.Errorf("/stats does not match %s:\n%s", re, body)
		}
		return nil
	})
}

func getReady(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get(admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The proxy finds its ID from the service it fronts, gets its
// configuration from the agent's xDS server, and reports ready.
func TestProxySidecarForAgainstDevAgent(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-grpc-port", "0"}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	registerWeb(t, c)

	fake := &fakeProxy{got: make(chan struct{}, 1)}
	stdout, stderr, stop := startProxy(t, func(proxy.Options) dataPlane { return fake },
		"-sidecar-for", "web-1", "-http-addr", a.HTTPAddr, "-grpc-addr", a.GRPCAddrs()[0], "-admin-bind", "127.0.0.1:0")
	m := stdout.waitMatch(t, started)
	if m[1] != "web-1-sidecar-proxy" {
		t.Fatalf("proxy ID %q, want web-1-sidecar-proxy", m[1])
	}
	select {
	case <-fake.got:
	case <-time.After(within):
		t.Fatalf("no configuration applied; stderr:\n%s", stderr.String())
	}
	if code := getReady(t, m[2]); code != http.StatusOK {
		t.Errorf("/ready: %d after a configuration was applied, want 200", code)
	}
	// Once the configuration settled, the binary's startup pages go.
	waitStat(t, m[2], regexp.MustCompile(`(?m)^trellis_proxy_memory_releases_total [1-9]`))
	waitStat(t, m[2], regexp.MustCompile(`(?m)^trellis_proxy_memory_released_bytes_total [1-9]`))
	if code := stop(); code != 0 {
		t.Errorf("exit %d after cancel, want 0; stderr:\n%s", code, stderr.String())
	}
	if !fake.closed.Load() {
		t.Error("data plane not closed")
	}
}

func TestProxySidecarForErrors(t *testing.T) {
	a, c := clitest.Agent(t)
	registerWeb(t, c)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Kind: api.ServiceKindConnectProxy, ID: "web-1-other-proxy", Name: "web-other-proxy", Port: 21001,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web-1"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db-1", Name: "db", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown service", []string{"-sidecar-for", "nope"}, "No sidecar proxy registered for nope\n"},
		{"service without sidecar", []string{"-sidecar-for", "db-1"}, "No sidecar proxy registered for db-1\n"},
		{"two sidecars", []string{"-sidecar-for", "web-1"}, "More than one sidecar proxy registered for web-1.\n" +
			"    Start proxy with -proxy-id and one of the following IDs: web-1-other-proxy, web-1-sidecar-proxy\n"},
		{"agent down", []string{"-sidecar-for", "web-1", "-http-addr", clitest.DeadAddr(t)}, "Failed looking up sidecar proxy info for web-1: "},
		{"no proxy named", nil, "One of -sidecar-for or -proxy-id must be set\n"},
		{"both named", []string{"-sidecar-for", "web-1", "-proxy-id", "x"}, "Only one of -sidecar-for and -proxy-id may be set\n"},
		{"admin off loopback", []string{"-proxy-id", "x", "-admin-bind", "0.0.0.0:0"}, `Invalid -admin-bind "0.0.0.0:0": must be a loopback address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"proxy", "-http-addr", a.HTTPAddr, "-admin-bind", "127.0.0.1:0"}, tc.args...)
			r := clitest.Run(t, Command(strings.NewReader("")), args...)
			if r.Code != 1 || !strings.HasPrefix(r.Stderr, tc.want) || r.Stdout != "" {
				t.Errorf("got %+v, want exit 1 and stderr starting with %q", r, tc.want)
			}
		})
	}
}

// With the real (here: stub) proxy and no agent to configure it, the
// command starts, is not ready, and stops on cancel.
func TestProxyStartsAndStops(t *testing.T) {
	stdout, stderr, stop := startProxy(t, func(o proxy.Options) dataPlane { return proxy.New(o) },
		"-proxy-id", "web-1-sidecar-proxy", "-grpc-addr", clitest.DeadAddr(t), "-admin-bind", "127.0.0.1:0")
	m := stdout.waitMatch(t, started)
	if code := getReady(t, m[2]); code != http.StatusServiceUnavailable {
		t.Errorf("/ready: %d before any configuration, want 503", code)
	}
	resp, body := getStats(t, m[2])
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/stats: %d %q, want 200 and Prometheus text", resp.StatusCode, ct)
	}
	if want := `trellis_proxy_config_applies_total{result="ok"} 0`; !strings.Contains(string(body), want) {
		t.Errorf("/stats lacks %q:\n%s", want, body)
	}
	if code := stop(); code != 0 {
		t.Errorf("exit %d after cancel, want 0; stderr:\n%s", code, stderr.String())
	}
}

// The sidecar gives back memory once its configuration has settled:
// quiet for the whole delay after the last applied configuration, once
// per run of them, never before the first, and not after it stopped.
// The bubble's clock is fake: its sleeps take no time.
func TestReleaseWhenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		applied := make(chan struct{}, 1)
		var releases atomic.Int32
		done := make(chan struct{})
		go func() {
			defer close(done)
			releaseWhenQuiet(ctx, applied, time.Second, func() { releases.Add(1) })
		}()
		expect := func(want int32, when string) {
			t.Helper()
			synctest.Wait()
			if got := releases.Load(); got != want {
				t.Fatalf("%s: %d releases, want %d", when, got, want)
			}
		}
		time.Sleep(time.Hour)
		expect(0, "an hour before any configuration")
		applied <- struct{}{}
		time.Sleep(time.Second - time.Nanosecond)
		expect(0, "just before the delay")
		applied <- struct{}{} // the delay starts again
		time.Sleep(time.Second - time.Nanosecond)
		expect(0, "just before the delay after the second configuration")
		time.Sleep(time.Nanosecond)
		expect(1, "at the delay")
		time.Sleep(time.Hour)
		expect(1, "an hour later, with no new configuration")
		applied <- struct{}{}
		time.Sleep(time.Second)
		expect(2, "a delay after a new configuration")
		cancel()
		<-done
		applied <- struct{}{}
		time.Sleep(time.Hour)
		expect(2, "after the command stopped")
	})
}

// Every release gives the heap's free pages back, not only the first:
// garbage made after the first release (by traffic, or by decoding a
// new configuration) is returned by the next one. A live ballast keeps
// the runtime's heap goal above what the heap holds, so that the
// background scavenger leaves the garbage's pages alone and only the
// release can return them.
func TestReleaserReturnsTheHeapEachTime(t *testing.T) {
	r := newReleaser(slog.New(slog.DiscardHandler))
	r.release()

	const size = 32 << 20
	ballast := make([]byte, size)
	makeGarbage(size)
	runtime.GC()
	heldFree := func() uint64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapIdle - ms.HeapReleased
	}
	before := heldFree()
	if before < size/2 {
		t.Fatalf("the heap holds %d free bytes after the garbage was collected, want at least %d", before, size/2)
	}
	r.release()
	after := heldFree()
	runtime.KeepAlive(ballast)
	if after > size/8 {
		t.Errorf("the second release left %d free bytes in the heap (%d before it), want at most %d", after, before, size/8)
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "trellis_proxy_memory_releases_total" {
			counted = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if counted != 2 {
		t.Errorf("trellis_proxy_memory_releases_total: %v, want 2", counted)
	}
}

// makeGarbage allocates n bytes in 1 MiB pieces, writes every byte, so
// that the pages are resident as traffic's buffers are, and drops them.
//
//go:noinline
func makeGarbage(n int) {
	pieces := make([][]byte, 0, n>>20)
	for range n >> 20 {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		pieces = append(pieces, b)
	}
	runtime.KeepAlive(pieces)
}

// Each configuration the data plane accepts is told, and a rejected
// one is not.
func TestAppliedSignal(t *testing.T) {
	applied := make(chan struct{}, 1)
	fp := &fakeProxy{got: make(chan struct{}, 1)}
	a := appliedSignal{Applier: fp, applied: applied}
	for range 2 { // the second finds the channel full, and does not block
		if err := a.Apply(proxy.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(applied) != 1 {
		t.Fatalf("%d signals after two applies, want 1 (the channel holds one)", len(applied))
	}
	<-applied
	r := appliedSignal{Applier: rejecting{}, applied: applied}
	if err := r.Apply(proxy.Config{}); err == nil {
		t.Fatal("no error from the rejecting data plane")
	}
	if len(applied) != 0 {
		t.Error("a rejected configuration was signalled")
	}
}

type rejecting struct{}

func (rejecting) Apply(proxy.Config) error { return errors.New("rejected") }

// The sidecar runs on one core unless GOMAXPROCS names a number of
// cores the runtime takes.
func TestSidecarProcs(t *testing.T) {
	for _, tc := range []struct {
		env    map[string]string
		n      int
		change bool
	}{
		{env: nil, n: 1, change: true},
		{env: map[string]string{"GOMAXPROCS": ""}, n: 1, change: true},
		{env: map[string]string{"GOMAXPROCS": "4"}, change: false},
		{env: map[string]string{"GOMAXPROCS": "0"}, n: 1, change: true},  // the runtime ignores it
		{env: map[string]string{"GOMAXPROCS": "-2"}, n: 1, change: true}, // and this
		{env: map[string]string{"GOMAXPROCS": "two"}, n: 1, change: true},
		{env: map[string]string{"GOGC": "200"}, n: 1, change: true},
	} {
		n, change := sidecarProcs(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if n != tc.n || change != tc.change {
			t.Errorf("env %v: got (%d, %v), want (%d, %v)", tc.env, n, change, tc.n, tc.change)
		}
	}
}
