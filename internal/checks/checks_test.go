package checks

import (
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestNewErrors(t *testing.T) {
	n := newFakeNotifier(t)
	tests := []struct {
		name    string
		def     *structs.CheckType
		opts    Options
		wantErr string
	}{
		{"nil definition", nil, Options{Notify: n}, "no definition"},
		{"nil notifier", &structs.CheckType{TTL: dur(time.Second)}, Options{}, "no notifier"},
		{"no type", &structs.CheckType{Interval: dur(time.Second)}, Options{Notify: n}, "names no check type"},
		{"alias without a source", &structs.CheckType{AliasService: "web"}, Options{Notify: n}, "without an AliasSource"},
		{"alias of a node", &structs.CheckType{AliasNode: "n2"}, Options{Notify: n, Aliases: newFakeAliases()}, "alias checks of a node are not supported"},
		{"http without interval", &structs.CheckType{HTTP: "http://127.0.0.1/"}, Options{Notify: n}, "http check needs an interval > 0"},
		{"tcp negative interval", &structs.CheckType{TCP: "127.0.0.1:1", Interval: dur(-time.Second)}, Options{Notify: n}, "tcp check needs an interval > 0"},
		{"script without interval", &structs.CheckType{Args: []string{"true"}}, Options{Notify: n, EnableScriptChecks: true}, "script check needs an interval > 0"},
		{"script disabled", &structs.CheckType{Args: []string{"true"}, Interval: dur(time.Second)}, Options{Notify: n}, "Scripts are disabled on this agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New("c1", tt.def, tt.opts)
			if err == nil {
				r.Stop()
				t.Fatalf("New succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"c1"`) {
				t.Errorf("err = %q, want it to name the check and contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNetworkTimeout(t *testing.T) {
	tests := []struct {
		timeout, interval, want time.Duration
	}{
		{0, time.Minute, DefaultTimeout},
		{0, time.Second, time.Second},
		{-time.Second, time.Minute, DefaultTimeout},
		{2 * time.Second, time.Minute, 2 * time.Second},
		{time.Minute, 5 * time.Second, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := networkTimeout(tt.timeout, tt.interval); got != tt.want {
			t.Errorf("networkTimeout(%s, %s) = %s, want %s", tt.timeout, tt.interval, got, tt.want)
		}
	}
}

// Checks run again every interval, not just once.
func TestIntervalRepeats(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n := newFakeNotifier(t)
	// An interval below MinInterval is raised to it, not refused.
	start(t, "db", &structs.CheckType{TCP: ln.Addr().String(), Interval: dur(time.Millisecond)}, Options{Notify: n})
	for i := 0; i < 3; i++ {
		if got := n.next(t); got.status != structs.HealthPassing {
			t.Fatalf("run %d: %s %q, want passing", i, got.status, got.output)
		}
	}
}

// Stop ends every goroutine a runner started, of every kind, with probes in
// flight or between runs.
func TestStopEndsGoroutines(t *testing.T) {
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer httpSrv.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	grpcAddr := startHealthServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	baseline := runtime.NumGoroutine()

	n := newFakeNotifier(t)
	iv := dur(20 * time.Millisecond)
	defs := map[string]*structs.CheckType{
		"http":   {HTTP: httpSrv.URL, Interval: iv},
		"slow":   {HTTP: slow.URL, Interval: dur(time.Hour)},
		"tcp":    {TCP: ln.Addr().String(), Interval: iv},
		"grpc":   {GRPC: grpcAddr, Interval: iv},
		"ttl":    {TTL: iv},
		"script": {Args: shScript("exit 0"), Interval: iv},
		"sleepy": {Args: shScript("sleep 60"), Interval: iv},
	}
	var runners []Runner
	for id, def := range defs {
		r, err := New(id, def, Options{Notify: n, EnableScriptChecks: true})
		if err != nil {
			t.Fatalf("New(%s): %v", id, err)
		}
		runners = append(runners, r)
	}
	// Let each quick check report at least once, so Stop meets them mid-cycle.
	seen := map[string]bool{}
	n.waitFor(t, "from every quick check", func(r result) bool {
		seen[r.checkID] = true
		return seen["http"] && seen["tcp"] && seen["grpc"] && seen["ttl"] && seen["script"]
	})
	for _, r := range runners {
		r.Stop()
	}
	for len(n.ch) > 0 {
		<-n.ch
	}
	waitGoroutines(t, baseline)
	if len(n.ch) != 0 {
		t.Errorf("a runner reported after Stop: %+v", <-n.ch)
	}
}
