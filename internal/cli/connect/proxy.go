package connect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	"github.com/trellis-mesh/trellis/internal/procmem"
	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsclient"
)

// DefaultGRPCAddr is the agent's xDS address used when neither a flag nor
// an environment variable names one.
const DefaultGRPCAddr = "127.0.0.1:8502"

const proxyHelp = `
Usage: trellis connect proxy [options] (-sidecar-for SERVICE-ID | -proxy-id ID)

  Runs Trellis's built-in sidecar proxy for a connect-proxy service
  registered with the local agent: it takes its listeners, clusters,
  endpoints and certificates from the agent's xDS server (-grpc-addr) and
  runs until interrupted.

  -sidecar-for names the service the proxy fronts; the agent must hold
  exactly one connect-proxy for it. -proxy-id names the proxy service
  itself.

  The admin listener (-admin-bind) serves /ready: 200 once a
  configuration is applied, else 503; and /stats: the proxy's metrics
  (connections, bytes, denials, TLS and upstream errors, configuration
  applies) in the Prometheus text format.

  The proxy runs on one core, beside the application it serves, as
  Linkerd's proxy does by default; GOMAXPROCS=N in its environment lets it
  use N. The Go runtime's GOGC and GOMEMLIMIT apply too: GOGC=50 trades
  about twice the garbage collector's CPU for a few MiB less memory,
  GOGC=200 the other way round.

      $ trellis connect proxy -sidecar-for web-1
`

// dataPlane is what the command runs: *proxy.Proxy.
type dataPlane interface {
	xdsclient.Applier
	Ready() bool
	Close() error
	Gatherer() prometheus.Gatherer // its metrics, served on /stats
}

// proxyCommand leaves the Go runtime's garbage collector at its
// defaults, measured against the alternatives (a sidecar pair on 2
// cores, 1 KiB POSTs at 1000 requests/s from 16 clients, then closed
// loop): with GOGC=100 each sidecar's live heap is about 5 MB and its
// anonymous RSS 14.5 MiB under load, GC about 10% of its CPU. GOGC=50
// saves 3 MiB and doubles the GC's CPU; GOGC=200 halves it for 5 MiB
// more, GOGC=400 for 15 MiB more. A memory limit low enough to matter
// (GOMEMLIMIT) would make the GC run flat out, up to half the CPU, in a
// sidecar whose connections legitimately need more, and the sidecar
// cannot know what its host grants it. Operators set GOGC and
// GOMEMLIMIT in the environment, which the runtime reads itself.
//
// It runs on one core unless GOMAXPROCS says otherwise (see
// sidecarProcs).
func proxyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if n, ok := sidecarProcs(os.LookupEnv); ok {
		runtime.GOMAXPROCS(n)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runProxy(ctx, args, stdout, stderr, func(o proxy.Options) dataPlane { return proxy.New(o) })
}

// sidecarProcs says how many cores the sidecar's goroutines run on, when
// the environment does not set GOMAXPROCS (which the runtime applies
// itself): one. A sidecar serves one application, beside it; measured on
// 2 cores (a sidecar pair, fortio and its echo server), one core cut the
// CPU per request at full load by a third for HTTP and a tenth for TCP,
// raised the pair's highest HTTP rate by 15-30% and left latency at 1000
// requests/s as it was: a goroutine handed a request no longer wakes
// another thread, and the application keeps the other core. The runtime
// takes GOMAXPROCS only as a number above zero, ignoring anything else,
// and so does this.
func sidecarProcs(lookupEnv func(string) (string, bool)) (int, bool) {
	if v, ok := lookupEnv("GOMAXPROCS"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return 0, false
		}
	}
	return 1, true
}

// runProxy is the command, with the data plane it runs made by newProxy.
// It returns when ctx ends, once the xDS client, the admin listener and
// the data plane are closed.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer, newProxy func(proxy.Options) dataPlane) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("connect proxy")
	h.Flags(fs)
	grpcAddr := grpcAddrFlag(fs)
	sidecarFor := fs.String("sidecar-for", "", "The `ID` of the service whose sidecar proxy to run.")
	proxyID := fs.String("proxy-id", "", "The `ID` of the connect-proxy service to run.")
	adminBind := fs.String("admin-bind", "127.0.0.1:19000", "The loopback `address` of the admin listener (port 0: any).")
	logLevel := fs.String("log-level", "info", "Log `level`: debug, info, warn or error.")
	if code, ok := cliflags.Parse(fs, args, proxyHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "Invalid -log-level %q: want debug, info, warn or error\n", *logLevel)
		return 1
	}
	if err := checkProxyNamed(*sidecarFor, *proxyID); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := checkLoopback(*adminBind); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	id := *proxyID
	if *sidecarFor != "" {
		client, done, ok := h.Connect(ctx, stderr)
		if !ok {
			return 1
		}
		svc, err := lookupSidecar(client, *sidecarFor)
		done()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		id = svc.ID
	}

	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("proxy", id)
	dp := newProxy(proxy.Options{Logger: logger})
	defer dp.Close()
	applied := make(chan struct{}, 1)
	rel := newReleaser(logger)
	xc, err := xdsclient.New(xdsclient.Options{
		Target: grpcAddrOf(*grpcAddr), NodeID: id, Applier: appliedSignal{Applier: dp, applied: applied}, Logger: logger,
	})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer xc.Close()
	ln, err := net.Listen("tcp", *adminBind)
	if err != nil {
		fmt.Fprintf(stderr, "Error listening on admin address %s: %v\n", *adminBind, err)
		return 1
	}
	admin := &http.Server{Handler: adminHandler(dp, rel.reg), ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		releaseWhenQuiet(ctx, applied, releaseQuiet, rel.release)
	}()
	go func() {
		defer wg.Done()
		if err := admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin listener stopped", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		_ = xc.Run(ctx) // returns nil when ctx ends, its only way to end
	}()
	fmt.Fprintf(stdout, "==> Trellis connect proxy %s started; admin on http://%s\n", id, ln.Addr())
	<-ctx.Done()
	_ = admin.Close()
	wg.Wait()
	return 0
}

// appliedSignal tells a channel of each configuration the data plane
// accepts; the channel holds one, and a full one loses nothing worth
// telling.
type appliedSignal struct {
	xdsclient.Applier
	applied chan<- struct{}
}

func (a appliedSignal) Apply(cfg proxy.Config) error {
	err := a.Applier.Apply(cfg)
	if err == nil {
		select {
		case a.applied <- struct{}{}:
		default:
		}
	}
	return err
}

// releaseQuiet is how long the configuration must stay unchanged before
// the sidecar gives back what applying it took: endpoints and
// certificates come in several responses one after the other.
const releaseQuiet = 2 * time.Second

// releaseWhenQuiet calls release once no configuration was applied for
// quiet after one was, until ctx ends.
func releaseWhenQuiet(ctx context.Context, applied <-chan struct{}, quiet time.Duration, release func()) {
	t := time.NewTimer(quiet)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-applied:
			t.Reset(quiet)
		case <-t.C:
			release()
		}
	}
}

// releaser gives back what starting, and each new configuration, took
// and running does not need: the pages of the binary that initialisation
// and configuring touched (see package procmem), and the heap's free
// pages: the garbage of initialisation and flag parsing the first time,
// and of decoding each configuration and of the traffic before it. A
// started sidecar holds about 35 MiB resident; after this about 10 MiB
// when idle. All of the binary's resident pages go, and those that
// carrying traffic uses come back as it uses them: a few hundred minor
// page faults, a forced garbage collection and a read of
// /proc/self/smaps, each time the configuration settles (at most once
// per releaseQuiet).
//
// The heap is given back every time, not only the first: a sidecar
// whose traffic changed kind (an L7 service made tcp, fewer upstreams)
// would otherwise keep the heap its old traffic grew until its next
// garbage collection, which a sidecar that allocates little runs only
// when the runtime forces one, every two minutes.
type releaser struct {
	logger        *slog.Logger
	reg           *prometheus.Registry
	releases      prometheus.Counter
	releasedBytes prometheus.Counter
}

func newReleaser(logger *slog.Logger) *releaser {
	r := &releaser{
		logger: logger,
		reg:    prometheus.NewRegistry(),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_proxy_memory_releases_total",
			Help: "Times the proxy gave back the pages of its binary that starting or configuring touched, once its configuration settled.",
		}),
		releasedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_proxy_memory_released_bytes_total",
			Help: "Resident bytes of the binary's read-only mappings when the proxy gave them back.",
		}),
	}
	r.reg.MustRegister(r.releases, r.releasedBytes)
	return r
}

func (r *releaser) release() {
	debug.FreeOSMemory()
	n, err := procmem.ReleaseExecutable()
	if err != nil {
		r.logger.Warn("could not release the executable's pages", "error", err)
		return
	}
	r.releases.Inc()
	r.releasedBytes.Add(float64(n))
	r.logger.Debug("released the executable's pages", "bytes", n)
}

// grpcAddrFlag defines -grpc-addr on fs; grpcAddrOf resolves its value.
func grpcAddrFlag(fs *flag.FlagSet) *string {
	return fs.String("grpc-addr", "",
		"The `address` of the agent's gRPC (xDS) port. Defaults to $TRELLIS_GRPC_ADDR, then $CONSUL_GRPC_ADDR, then "+DefaultGRPCAddr+".")
}

// checkProxyNamed checks that exactly one of -sidecar-for and -proxy-id
// is set.
func checkProxyNamed(sidecarFor, proxyID string) error {
	switch {
	case sidecarFor == "" && proxyID == "":
		return errors.New("One of -sidecar-for or -proxy-id must be set")
	case sidecarFor != "" && proxyID != "":
		return errors.New("Only one of -sidecar-for and -proxy-id may be set")
	}
	return nil
}

// grpcAddrOf returns the xDS address to dial: flag, then
// $TRELLIS_GRPC_ADDR, then $CONSUL_GRPC_ADDR, then DefaultGRPCAddr, with
// an http:// scheme (Consul's form for a plaintext port) removed.
func grpcAddrOf(flagValue string) string {
	addr := flagValue
	for _, env := range []string{"TRELLIS_GRPC_ADDR", "CONSUL_GRPC_ADDR"} {
		if addr == "" {
			addr = os.Getenv(env)
		}
	}
	if addr == "" {
		addr = DefaultGRPCAddr
	}
	return strings.TrimPrefix(addr, "http://")
}

// checkLoopback refuses an admin address off loopback: the admin
// endpoints are unauthenticated.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("Invalid -admin-bind %q: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("Invalid -admin-bind %q: must be a loopback address", addr)
	}
	return nil
}

// lookupSidecar returns the one connect-proxy the local agent holds for
// the service with ID sidecarFor (compared without case, as Consul
// does). The messages are Consul's.
func lookupSidecar(client *api.Client, sidecarFor string) (*api.AgentService, error) {
	svcs, err := client.Agent().Services()
	if err != nil {
		return nil, fmt.Errorf("Failed looking up sidecar proxy info for %s: %s", sidecarFor, err)
	}
	var found []*api.AgentService
	for _, s := range svcs {
		if s.Kind == api.ServiceKindConnectProxy && s.Proxy != nil && strings.EqualFold(s.Proxy.DestinationServiceID, sidecarFor) {
			found = append(found, s)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].ID < found[j].ID })
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("No sidecar proxy registered for %s", sidecarFor)
	case 1:
		return found[0], nil
	default:
		ids := make([]string, len(found))
		for i, s := range found {
			ids[i] = s.ID
		}
		return nil, fmt.Errorf("More than one sidecar proxy registered for %s.\n"+
			"    Start proxy with -proxy-id and one of the following IDs: %s", sidecarFor, strings.Join(ids, ", "))
	}
}

// adminHandler serves the admin endpoints: GET /ready answers 200 "LIVE"
// once dp runs a configuration, 503 before; GET /stats is dp's metrics
// and the command's own.
func adminHandler(dp dataPlane, own prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !dp.Ready() {
			http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "LIVE")
	})
	mux.Handle("GET /stats", promhttp.HandlerFor(prometheus.Gatherers{dp.Gatherer(), own}, promhttp.HandlerOpts{}))
	return mux
}
