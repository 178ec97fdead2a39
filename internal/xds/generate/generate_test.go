package generate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the generated resources")

const td = "11111111-2222-3333-4444-555555555555.consul"

func baseSnapshot(service, protocol string) *proxycfg.Snapshot {
	return &proxycfg.Snapshot{
		ProxyID:      service + "-sidecar-proxy",
		Service:      service,
		Datacenter:   "dc1",
		TrustDomain:  td,
		Address:      "10.0.0.1",
		Port:         21000,
		LocalAddress: "127.0.0.1",
		LocalPort:    8080,
		Protocol:     protocol,
		Leaf: &proxycfg.Leaf{
			CertPEM:       "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n",
			PrivateKeyPEM: "-----BEGIN EC PRIVATE KEY-----\nKEY\n-----END EC PRIVATE KEY-----\n",
			ValidBefore:   time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC),
		},
		Roots:   []string{"-----BEGIN CERTIFICATE-----\nROOT1\n-----END CERTIFICATE-----\n", "-----BEGIN CERTIFICATE-----\nROOT2\n-----END CERTIFICATE-----"},
		Version: 7,
	}
}

func ixns(dest string, srcs ...*configentry.SourceIntention) *configentry.ServiceIntentionsConfigEntry {
	return &configentry.ServiceIntentionsConfigEntry{Kind: configentry.ServiceIntentions, Name: dest, Sources: srcs}
}

func src(name, action string) *configentry.SourceIntention {
	return &configentry.SourceIntention{Name: name, Action: action}
}

func l7(name string, perms ...*configentry.IntentionPermission) *configentry.SourceIntention {
	return &configentry.SourceIntention{Name: name, Permissions: perms}
}

func perm(action string, h configentry.IntentionHTTPPermission) *configentry.IntentionPermission {
	return &configentry.IntentionPermission{Action: action, HTTP: &h}
}

func snapshots() map[string]*proxycfg.Snapshot {
	tcp := baseSnapshot("web", "tcp")
	tcp.DefaultAllow = false
	tcp.Intentions = []*configentry.ServiceIntentionsConfigEntry{
		ixns("web", src("frontend", configentry.ActionAllow), src("*", configentry.ActionDeny), src("legacy", configentry.ActionDeny)),
		ixns("*", src("monitor", configentry.ActionAllow)),
		ixns("other", src("frontend", configentry.ActionDeny)), // not ours
	}
	tcp.Upstreams = []proxycfg.Upstream{{
		Name: "db", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "tcp",
		Endpoints: []proxycfg.Endpoint{{Address: "10.0.0.2", Port: 21000, Weight: 1}, {Address: "10.0.0.3", Port: 21001, Weight: 0}},
	}}

	httpSnap := baseSnapshot("api", "http")
	httpSnap.DefaultAllow = true
	httpSnap.Intentions = []*configentry.ServiceIntentionsConfigEntry{ixns("api",
		src("legacy", configentry.ActionDeny),
		l7("web",
			perm(configentry.ActionAllow, configentry.IntentionHTTPPermission{PathPrefix: "/public/", Methods: []string{"GET", "HEAD"}}),
			perm(configentry.ActionDeny, configentry.IntentionHTTPPermission{PathRegex: "/admin/.*"}),
			perm(configentry.ActionDeny, configentry.IntentionHTTPPermission{PathExact: "/secret", Header: []configentry.IntentionHTTPHeaderPermission{
				{Name: "x-debug", Present: true},
				{Name: "x-user", Exact: "Bob", IgnoreCase: true, Invert: true},
			}}),
		),
		src("*", configentry.ActionAllow),
	)}
	httpSnap.Upstreams = []proxycfg.Upstream{{
		Name: "grpc-backend", Datacenter: "dc2", LocalBindAddress: "127.0.0.2", LocalBindPort: 9292, Protocol: "grpc",
		ConnectTimeout: 2 * time.Second,
		Endpoints:      []proxycfg.Endpoint{{Address: "10.1.0.2", Port: 21000, Weight: 3}},
	}}

	deny := baseSnapshot("db", "tcp")
	deny.DefaultAllow = false

	return map[string]*proxycfg.Snapshot{
		"tcp_one_upstream":     tcp,
		"http_l7_intentions":   httpSnap,
		"default_deny":         deny,
		"http_upstream_routes": httpUpstreamRoutes(),
		"least_request_limits": leastRequestLimits(),
		"grpc_service":         grpcService(),
	}
}

func intp(n int) *int                    { return &n }
func u32(n uint32) *uint32               { return &n }
func dur(d time.Duration) *time.Duration { return &d }

// httpUpstreamRoutes is an http service whose http upstream has a
// service-router and a ring_hash resolver hashing on a header (and a
// cookie and the source IP), reached on two local ports, and the same
// service in another datacenter.
func httpUpstreamRoutes() *proxycfg.Snapshot {
	s := baseSnapshot("web", "http")
	s.DefaultAllow = true
	s.LocalConnectTimeout = 1500 * time.Millisecond
	s.LocalRequestTimeout = 20 * time.Second
	api := proxycfg.Upstream{
		Name: "api", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "http", ConnectTimeout: 3 * time.Second,
		Endpoints:      []proxycfg.Endpoint{{Address: "10.0.0.2", Port: 21000, Weight: 2}, {Address: "10.0.0.3", Port: 21000, Weight: 1}},
		RequestTimeout: 10 * time.Second,
		LoadBalancer: &configentry.LoadBalancer{Policy: configentry.LBPolicyRingHash,
			RingHashConfig: &configentry.RingHashConfig{MinimumRingSize: 2048},
			HashPolicies: []configentry.HashPolicy{
				{Field: configentry.HashPolicyHeader, FieldValue: "x-user", Terminal: true},
				{Field: configentry.HashPolicyCookie, FieldValue: "sid", CookieConfig: &configentry.CookieConfig{TTL: time.Hour, Path: "/"}},
				{Field: configentry.HashPolicyCookie, FieldValue: "s2", CookieConfig: &configentry.CookieConfig{Session: true}},
				{Field: configentry.HashPolicyQueryParameter, FieldValue: "user"},
				{SourceIP: true},
			}},
		Routes: []configentry.ServiceRoute{
			{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathPrefix: "/admin",
				Header: []configentry.ServiceRouteHTTPMatchHeader{
					{Name: "x-debug", Present: true, Invert: true},
					{Name: "x-env", Exact: "prod"}, {Name: "x-pre", Prefix: "a"}, {Name: "x-suf", Suffix: "z"}, {Name: "x-re", Regex: "v[0-9]+"},
				},
				QueryParam: []configentry.ServiceRouteHTTPMatchQueryParam{{Name: "q", Exact: "1"}, {Name: "r", Present: true}, {Name: "s", Regex: "[a-z]+"}},
				Methods:    []string{"GET", "POST"}}},
				Destination: &configentry.ServiceRouteDestination{PrefixRewrite: "/", RequestTimeout: 2 * time.Second, IdleTimeout: 30 * time.Second,
					NumRetries: 3, RetryOnConnectFailure: true, RetryOn: []string{"5xx", "connect-failure", "reset"}, RetryOnStatusCodes: []uint32{503, 429},
					RequestHeaders:  &configentry.HTTPHeaderModifiers{Add: map[string]string{"x-b": "2", "x-a": "1"}, Set: map[string]string{"x-c": "3"}, Remove: []string{"x-d"}},
					ResponseHeaders: &configentry.HTTPHeaderModifiers{Set: map[string]string{"x-served-by": "api"}, Remove: []string{"server"}}}},
			{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathExact: "/health", Methods: []string{"HEAD"}}},
				Destination: &configentry.ServiceRouteDestination{RetryOn: []string{"unavailable"}}},
			{Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathRegex: "/v[0-9]+/.*"}}},
		},
	}
	second := api
	second.LocalBindPort = 9192
	remote := api
	remote.Datacenter, remote.LocalBindPort, remote.Endpoints = "dc2", 9193, nil
	s.Upstreams = []proxycfg.Upstream{api, second, remote}
	return s
}

// leastRequestLimits is a tcp service with a least_request upstream that
// has limits and a passive health check, and a maglev and a random one
// with neither.
func leastRequestLimits() *proxycfg.Snapshot {
	s := baseSnapshot("web", "tcp")
	s.DefaultAllow = true
	s.Upstreams = []proxycfg.Upstream{
		{Name: "db", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "tcp", ConnectTimeout: 250 * time.Millisecond,
			Endpoints:    []proxycfg.Endpoint{{Address: "10.0.0.2", Port: 21000, Weight: 1}},
			LoadBalancer: &configentry.LoadBalancer{Policy: configentry.LBPolicyLeastRequest, LeastRequestConfig: &configentry.LeastRequestConfig{ChoiceCount: 3}},
			Limits:       &proxycfg.Limits{MaxConnections: intp(100), MaxPendingRequests: intp(0), MaxConcurrentRequests: intp(50)},
			PassiveHealthCheck: &configentry.PassiveHealthCheck{Interval: 2 * time.Second, MaxFailures: 3, EnforcingConsecutive5xx: u32(80),
				MaxEjectionPercent: u32(50), BaseEjectionTime: dur(10 * time.Minute), ConsecutiveGatewayFailure: u32(2)}},
		{Name: "cache", Datacenter: "dc1", LocalBindPort: 9192, Protocol: "tcp",
			Endpoints:    []proxycfg.Endpoint{{Address: "10.0.0.4", Port: 21000, Weight: 1}},
			LoadBalancer: &configentry.LoadBalancer{Policy: configentry.LBPolicyMaglev}},
		{Name: "queue", Datacenter: "dc1", LocalBindPort: 9193, Protocol: "http",
			LoadBalancer: &configentry.LoadBalancer{Policy: configentry.LBPolicyRandom},
			Limits:       &proxycfg.Limits{MaxConcurrentRequests: intp(7)}},
	}
	return s
}

// grpcService is a grpc service with a grpc upstream and no router or
// resolver: the upstream's routes are the catch-all alone.
func grpcService() *proxycfg.Snapshot {
	s := baseSnapshot("greeter", "grpc")
	s.DefaultAllow = false
	s.Intentions = []*configentry.ServiceIntentionsConfigEntry{ixns("greeter",
		l7("web", perm(configentry.ActionAllow, configentry.IntentionHTTPPermission{PathPrefix: "/hello.Greeter/"})))}
	s.Upstreams = []proxycfg.Upstream{{
		Name: "store", Datacenter: "dc1", LocalBindPort: 9191, Protocol: "grpc",
		Endpoints: []proxycfg.Endpoint{{Address: "10.0.0.5", Port: 21000, Weight: 1}},
	}}
	return s
}

// render is the golden form: resources by type URL, each list sorted by
// name, as indented protojson.
func render(t *testing.T, res map[resource.Type][]types.Resource) []byte {
	t.Helper()
	out := map[string][]json.RawMessage{}
	for typ, rs := range res {
		rs = append([]types.Resource(nil), rs...)
		sort.Slice(rs, func(i, j int) bool { return cache.GetResourceName(rs[i]) < cache.GetResourceName(rs[j]) })
		list := []json.RawMessage{}
		for _, r := range rs {
			b, err := protojson.Marshal(r)
			if err != nil {
				t.Fatalf("marshal %s: %v", cache.GetResourceName(r), err)
			}
			list = append(list, b)
		}
		out[typ] = list
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// checkGolden compares res, rendered, with testdata/<name>.golden
// (rewritten first with -update) and returns the rendering.
func checkGolden(t *testing.T, name string, res map[resource.Type][]types.Resource) []byte {
	t.Helper()
	got := render(t, res)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("resources differ from %s (run with -update and review the diff):\n%s", path, got)
	}
	return got
}

func TestResourcesGolden(t *testing.T) {
	for name, snap := range snapshots() {
		t.Run(name, func(t *testing.T) {
			res, err := Resources(snap)
			if err != nil {
				t.Fatalf("Resources: %v", err)
			}
			for typ, rs := range res {
				for _, r := range rs {
					v := r.(interface {
						Validate() error
						ValidateAll() error
					})
					if err := v.Validate(); err != nil {
						t.Errorf("%s %q: Validate: %v", typ, cache.GetResourceName(r), err)
					}
					if err := v.ValidateAll(); err != nil {
						t.Errorf("%s %q: ValidateAll: %v", typ, cache.GetResourceName(r), err)
					}
				}
			}
			// The set must be consistent for go-control-plane: every EDS
			// cluster has its ClusterLoadAssignment.
			cs, err := cache.NewSnapshot("1", res)
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.Consistent(); err != nil {
				t.Errorf("Consistent: %v", err)
			}
			got := checkGolden(t, name, res)
			// Pure: the same snapshot gives the same resources.
			again, err := Resources(snap)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(render(t, again), got) {
				t.Errorf("second generation differs")
			}
		})
	}
}

func TestResourcesErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(s *proxycfg.Snapshot)
		want   string
	}{
		{"no leaf", func(s *proxycfg.Snapshot) { s.Leaf = nil }, "no leaf certificate"},
		{"no roots", func(s *proxycfg.Snapshot) { s.Roots = nil }, "no CA roots"},
		{"bad port", func(s *proxycfg.Snapshot) { s.Port = 0 }, "public listener port 0"},
		{"upstream port", func(s *proxycfg.Snapshot) {
			s.Upstreams = []proxycfg.Upstream{{Name: "db"}}
		}, `upstream "db": local bind port 0`},
		{"bad route regex", func(s *proxycfg.Snapshot) {
			s.Upstreams = []proxycfg.Upstream{{Name: "api", LocalBindPort: 9191, Protocol: "http", Routes: []configentry.ServiceRoute{
				{}, {Match: &configentry.ServiceRouteMatch{HTTP: &configentry.ServiceRouteHTTPMatch{PathRegex: "(("}}}}}}
		}, `upstream "api": service-router Routes[1]: PathRegex "(("`},
		{"bad regex", func(s *proxycfg.Snapshot) {
			s.Protocol = "http"
			s.Intentions = []*configentry.ServiceIntentionsConfigEntry{ixns("web", l7("x", perm("allow", configentry.IntentionHTTPPermission{PathRegex: "("})))}
		}, `PathRegex "("`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSnapshot("web", "tcp")
			tc.modify(s)
			_, err := Resources(s)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `proxy "web-sidecar-proxy"`) {
				t.Fatalf("err = %v, want one naming the proxy and containing %q", err, tc.want)
			}
		})
	}
}
