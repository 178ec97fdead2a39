// Package cliflags holds what the trellis CLI commands share: the HTTP
// connection flags and the agent client built from them, flag parsing and
// error reporting, the dispatch of a noun's verbs ("kv get"), and tables.
package cliflags

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
)

// DefaultHTTPAddr is the agent address used when neither a flag nor an
// environment variable names one.
const DefaultHTTPAddr = "127.0.0.1:8500"

// HTTP is the set of flags that say how to reach the agent. Register them
// with Flags (and StaleFlag where reads may be served by any server), parse
// the flag set, then call Client.
type HTTP struct {
	addr       string
	token      string
	datacenter string
	stale      bool
}

// Flags registers -http-addr, -token and -datacenter on fs.
func (h *HTTP) Flags(fs *flag.FlagSet) {
	fs.StringVar(&h.addr, "http-addr", "",
		"The `address` of the agent's HTTP API, with or without http:// or https://. "+
			"Defaults to $TRELLIS_HTTP_ADDR, then $CONSUL_HTTP_ADDR, then "+DefaultHTTPAddr+".")
	fs.StringVar(&h.token, "token", "",
		"ACL token sent as X-Consul-Token. Defaults to $TRELLIS_HTTP_TOKEN, then $CONSUL_HTTP_TOKEN.")
	fs.StringVar(&h.datacenter, "datacenter", "",
		"Datacenter to query. Defaults to the agent's own.")
}

// StaleFlag registers -stale on fs.
func (h *HTTP) StaleFlag(fs *flag.FlagSet) {
	fs.BoolVar(&h.stale, "stale", false,
		"Allow any server to answer, not only the leader: faster, possibly out of date.")
}

// Addr returns the agent address to use: -http-addr, else the first
// non-empty of $TRELLIS_HTTP_ADDR and $CONSUL_HTTP_ADDR, else
// DefaultHTTPAddr. It is returned as given, scheme included if any.
func (h *HTTP) Addr() string {
	if h.addr != "" {
		return h.addr
	}
	if v := firstEnv("TRELLIS_HTTP_ADDR", "CONSUL_HTTP_ADDR"); v != "" {
		return v
	}
	return DefaultHTTPAddr
}

func (h *HTTP) tokenValue() string {
	if h.token != "" {
		return h.token
	}
	return firstEnv("TRELLIS_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")
}

// firstEnv returns the first non-empty of the named environment variables.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// splitAddr separates an optional http:// or https:// scheme, and the path
// prefix of an agent behind a reverse proxy, from addr.
func splitAddr(addr string) (scheme, hostport, prefix string, err error) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		scheme, rest = "http", addr
	}
	switch scheme {
	case "http", "https":
	default:
		return "", "", "", fmt.Errorf("http address %q: unknown scheme %q: want http or https", addr, scheme)
	}
	hostport, prefix, _ = strings.Cut(rest, "/")
	if hostport == "" {
		return "", "", "", fmt.Errorf("http address %q: missing host", addr)
	}
	if prefix = strings.TrimSuffix(prefix, "/"); prefix != "" {
		prefix = "/" + prefix
	}
	return scheme, hostport, prefix, nil
}

// Client builds an API client for the agent. Every request it makes is
// bound to ctx: cancelling ctx aborts requests in flight, blocking queries
// included. Call the returned close function when done, to drop idle
// connections.
func (h *HTTP) Client(ctx context.Context) (*api.Client, func(), error) {
	scheme, hostport, prefix, err := splitAddr(h.Addr())
	if err != nil {
		return nil, nil, err
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	cfg := &api.Config{
		Address:    hostport,
		Scheme:     scheme,
		PathPrefix: prefix,
		Datacenter: h.datacenter,
		Token:      h.tokenValue(),
		HttpClient: &http.Client{Transport: boundTo(ctx, base)},
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("http address %q: %w", h.Addr(), err)
	}
	return c, base.CloseIdleConnections, nil
}

// Connect is Client for a command: a client that cannot be built is
// reported on stderr, and ok is false (the command exits 1).
func (h *HTTP) Connect(ctx context.Context, stderr io.Writer) (c *api.Client, done func(), ok bool) {
	c, done, err := h.Client(ctx)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, nil, false
	}
	return c, done, true
}

// QueryOptions returns the read options the flags ask for.
func (h *HTTP) QueryOptions() *api.QueryOptions {
	return &api.QueryOptions{AllowStale: h.stale}
}

// boundTo returns a transport that sends every request through base under
// ctx, so that API calls which take no options (and the blocking queries
// inside api.Lock) end when the command is cancelled.
func boundTo(ctx context.Context, base http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return base.RoundTrip(r.WithContext(ctx))
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// IsTransport reports whether err is a failure to talk to the agent at all
// (refused, unreachable, cancelled), as opposed to an answer from it.
func IsTransport(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// Report prints err to w and returns exit code 1. A failure to reach the
// agent reads "Error querying agent: ..." and names the address; an error
// the agent answered reads "<msg>: ...".
func Report(w io.Writer, msg string, err error) int {
	if IsTransport(err) {
		fmt.Fprintf(w, "Error querying agent: %v\n", err)
	} else {
		fmt.Fprintf(w, "%s: %v\n", msg, err)
	}
	return 1
}
