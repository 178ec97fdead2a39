package cliflags

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func parseHTTP(t *testing.T, args ...string) *HTTP {
	t.Helper()
	var h HTTP
	fs := NewFlagSet("test")
	h.Flags(fs)
	h.StaleFlag(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return &h
}

func TestAddrPrecedence(t *testing.T) {
	tests := []struct {
		name            string
		flag            []string
		trellis, consul string
		want            string
	}{
		{name: "default", want: "127.0.0.1:8500"},
		{name: "consul env", consul: "10.0.0.2:8500", want: "10.0.0.2:8500"},
		{name: "trellis env over consul env", trellis: "10.0.0.1:8500", consul: "10.0.0.2:8500", want: "10.0.0.1:8500"},
		{name: "empty trellis env falls through", trellis: "", consul: "10.0.0.2:8500", want: "10.0.0.2:8500"},
		{name: "flag over env", flag: []string{"-http-addr", "10.0.0.3:1"}, trellis: "10.0.0.1:8500", consul: "10.0.0.2:8500", want: "10.0.0.3:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TRELLIS_HTTP_ADDR", tt.trellis)
			t.Setenv("CONSUL_HTTP_ADDR", tt.consul)
			if got := parseHTTP(t, tt.flag...).Addr(); got != tt.want {
				t.Errorf("Addr() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSplitAddr(t *testing.T) {
	tests := []struct {
		in, scheme, hostport, prefix string
		wantErr                      bool
	}{
		{in: "127.0.0.1:8500", scheme: "http", hostport: "127.0.0.1:8500"},
		{in: "http://127.0.0.1:8500", scheme: "http", hostport: "127.0.0.1:8500"},
		{in: "http://127.0.0.1:8500/", scheme: "http", hostport: "127.0.0.1:8500"},
		{in: "https://consul.example:8501", scheme: "https", hostport: "consul.example:8501"},
		{in: "https://proxy.example/consul/", scheme: "https", hostport: "proxy.example", prefix: "/consul"},
		{in: "unix:///tmp/sock", wantErr: true},
		{in: "http://", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			scheme, hp, prefix, err := splitAddr(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("splitAddr(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
			}
			if err == nil && (scheme != tt.scheme || hp != tt.hostport || prefix != tt.prefix) {
				t.Errorf("splitAddr(%q) = %q, %q, %q; want %q, %q, %q", tt.in, scheme, hp, prefix, tt.scheme, tt.hostport, tt.prefix)
			}
		})
	}
}

// TestClientEnvAgainstAgent checks that the address chosen by precedence
// is the one dialled: the live agent is reached only through the variable
// that should win, the others name a closed port.
func TestClientEnvAgainstAgent(t *testing.T) {
	a, _ := clitest.Agent(t)
	dead := clitest.DeadAddr(t)
	tests := []struct {
		name            string
		flag            []string
		trellis, consul string
		wantOK          bool
	}{
		{name: "trellis env wins", trellis: a.HTTPAddr, consul: dead, wantOK: true},
		{name: "trellis env wins over working consul env", trellis: dead, consul: a.HTTPAddr, wantOK: false},
		{name: "consul env used when trellis unset", consul: "http://" + a.HTTPAddr, wantOK: true},
		{name: "flag wins", flag: []string{"-http-addr", "http://" + a.HTTPAddr}, trellis: dead, consul: dead, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TRELLIS_HTTP_ADDR", tt.trellis)
			t.Setenv("CONSUL_HTTP_ADDR", tt.consul)
			h := parseHTTP(t, tt.flag...)
			c, done, err := h.Client(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			_, err = c.Agent().Self()
			if tt.wantOK && err != nil {
				t.Fatalf("Self via %q: %v", h.Addr(), err)
			}
			if !tt.wantOK {
				if err == nil || !IsTransport(err) || !strings.Contains(err.Error(), dead) {
					t.Fatalf("Self via %q: error %v, want a transport error naming %s", h.Addr(), err, dead)
				}
			}
		})
	}
}

func TestClientBoundToContext(t *testing.T) {
	a, _ := clitest.Agent(t)
	ctx, cancel := context.WithCancel(t.Context())
	h := parseHTTP(t, "-http-addr", a.HTTPAddr)
	c, done, err := h.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	cancel()
	_, err = c.Agent().Self()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("request after cancel: %v, want context.Canceled", err)
	}
}

// TestTokenAndDatacenterSent checks what goes on the wire, with a server
// that records the requests it gets.
func TestTokenAndDatacenterSent(t *testing.T) {
	var mu sync.Mutex
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Clone(context.Background())
		mu.Unlock()
		io.WriteString(w, "[]")
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name            string
		flag            []string
		trellis, consul string
		want            string
	}{
		{name: "flag", flag: []string{"-token", "f"}, trellis: "t", consul: "c", want: "f"},
		{name: "trellis env", trellis: "t", consul: "c", want: "t"},
		{name: "consul env", consul: "c", want: "c"},
		{name: "none", want: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TRELLIS_HTTP_TOKEN", tt.trellis)
			t.Setenv("CONSUL_HTTP_TOKEN", tt.consul)
			c, done, err := parseHTTP(t, append(tt.flag, "-http-addr", srv.URL, "-datacenter", "dc9")...).Client(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			if _, _, err := c.Catalog().Nodes(nil); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if tok := got.Header.Get("X-Consul-Token"); tok != tt.want {
				t.Errorf("X-Consul-Token = %q, want %q", tok, tt.want)
			}
			if got.URL.Path != "/v1/catalog/nodes" {
				t.Errorf("path = %q", got.URL.Path)
			}
			if dc := got.URL.Query().Get("dc"); dc != "dc9" {
				t.Errorf("dc = %q, want dc9", dc)
			}
		})
	}
}

func TestReport(t *testing.T) {
	var b bytes.Buffer
	if code := Report(&b, "Error listing nodes", errors.New("Unexpected response code: 500 (boom)")); code != 1 {
		t.Errorf("code = %d, want 1", code)
	}
	if got, want := b.String(), "Error listing nodes: Unexpected response code: 500 (boom)\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParse(t *testing.T) {
	mk := func() *flag.FlagSet {
		fs := NewFlagSet("x")
		fs.Bool("detailed", false, "Detail.")
		return fs
	}
	var out, errb bytes.Buffer
	if code, ok := Parse(mk(), []string{"-h"}, "Usage: x", &out, &errb); ok || code != 0 {
		t.Errorf("-h: code %d ok %v, want 0 false", code, ok)
	}
	if !strings.Contains(out.String(), "Usage: x") || !strings.Contains(out.String(), "-detailed") {
		t.Errorf("-h printed %q", out.String())
	}
	out.Reset()
	if code, ok := Parse(mk(), []string{"-bogus"}, "Usage: x", &out, &errb); ok || code != 1 {
		t.Errorf("-bogus: code %d ok %v, want 1 false", code, ok)
	}
	if !strings.Contains(errb.String(), "flag provided but not defined: -bogus") || out.Len() != 0 {
		t.Errorf("-bogus: stdout %q stderr %q", out.String(), errb.String())
	}
}

func TestDispatch(t *testing.T) {
	verbs := []Verb{{Name: "get", Synopsis: "Gets", Run: func(_ context.Context, args []string, stdout, _ io.Writer) int {
		io.WriteString(stdout, strings.Join(args, ","))
		return 3
	}}}
	run := func(args ...string) clitest.Result {
		return clitest.Run(t, func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
			return Dispatch(ctx, "thing", "Does things.", verbs, args, stdout, stderr)
		}, args...)
	}
	if r := run("get", "a", "b"); r.Code != 3 || r.Stdout != "a,b" {
		t.Errorf("get: %+v", r)
	}
	if r := run(); r.Code != 1 || !strings.Contains(r.Stderr, "Usage: trellis thing <subcommand>") || !strings.Contains(r.Stderr, "get    Gets") {
		t.Errorf("no verb: %+v", r)
	}
	if r := run("-h"); r.Code != 0 || !strings.Contains(r.Stdout, "Usage: trellis thing") {
		t.Errorf("-h: %+v", r)
	}
	if r := run("nope"); r.Code != 1 || !strings.Contains(r.Stderr, `unknown subcommand "nope"`) {
		t.Errorf("unknown: %+v", r)
	}
}

func TestKeyValue(t *testing.T) {
	var kv KeyValue
	for _, s := range []string{"a=1", "b=x=y", "a=2"} {
		if err := kv.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if kv.Map["a"] != "2" || kv.Map["b"] != "x=y" || len(kv.Map) != 2 {
		t.Errorf("map = %v", kv.Map)
	}
	if err := kv.Set("novalue"); err == nil {
		t.Error("Set(novalue) succeeded")
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	tb := NewTable(&b)
	io.WriteString(tb, "Name\tTags\n")
	io.WriteString(tb, "a-long-name\t\n")
	io.WriteString(tb, "b\tx,y\n")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "Name         Tags\na-long-name\nb            x,y\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestPathPrefix(t *testing.T) {
	paths := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		io.WriteString(w, "[]")
	}))
	defer srv.Close()
	c, done, err := parseHTTP(t, "-http-addr", srv.URL+"/behind/proxy").Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if _, _, err := c.Catalog().Nodes(nil); err != nil {
		t.Fatal(err)
	}
	if p := <-paths; p != "/behind/proxy/v1/catalog/nodes" {
		t.Errorf("path = %q", p)
	}
}
