package proxy

import (
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	dto "github.com/prometheus/client_model/go"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// metric sums the series of family name whose labels include want (label,
// value pairs); a histogram counts its observations. Absent is 0.
func metric(t *testing.T, p *Proxy, name string, want ...string) float64 {
	t.Helper()
	mfs, err := p.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(want); i += 2 {
				if !hasLabel(m, want[i], want[i+1]) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// waitMetric polls until metric(...) is want; the proxy updates some
// series (duration, active) after the client saw its connection end.
func waitMetric(t *testing.T, p *Proxy, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		got := metric(t, p, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		<-tick.C
	}
}

func TestMetricsRoundTrip(t *testing.T) {
	m := newMesh(t)
	const msg = "count these bytes"
	if got, err := roundTrip(dialTCP(t, m.upstream), msg); err != nil || got != msg {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	up, pub := upstreamName(m.webSnap.Upstreams[0]), publicName()
	for _, c := range []struct {
		p      *Proxy
		ln     string
		name   string
		labels []string
		want   float64
	}{
		{m.web, up, "trellis_proxy_connections_total", nil, 1},
		{m.web, up, "trellis_proxy_bytes_total", []string{"direction", "rx"}, float64(len(msg))},
		{m.web, up, "trellis_proxy_bytes_total", []string{"direction", "tx"}, float64(len(msg))},
		{m.web, up, "trellis_proxy_connection_duration_seconds", nil, 1},
		{m.web, up, "trellis_proxy_connections_active", nil, 0},
		{m.db, pub, "trellis_proxy_connections_total", nil, 1},
		{m.db, pub, "trellis_proxy_bytes_total", []string{"direction", "rx"}, float64(len(msg))},
		{m.db, pub, "trellis_proxy_bytes_total", []string{"direction", "tx"}, float64(len(msg))},
		{m.db, pub, "trellis_proxy_connection_duration_seconds", nil, 1},
		{m.db, pub, "trellis_proxy_connections_active", nil, 0},
		{m.db, pub, "trellis_proxy_connections_denied_total", nil, 0},
		{m.db, pub, "trellis_proxy_tls_errors_total", nil, 0},
	} {
		waitMetric(t, c.p, c.want, c.name, append([]string{"listener", c.ln}, c.labels...)...)
	}
	for _, p := range []*Proxy{m.web, m.db} {
		if n := metric(t, p, "trellis_proxy_config_applies_total", "result", "ok"); n != 1 {
			t.Errorf("config applies ok = %v, want 1", n)
		}
		if n := metric(t, p, "trellis_proxy_upstream_connect_errors_total"); n != 0 {
			t.Errorf("upstream connect errors = %v, want 0", n)
		}
	}
}

// An open connection is active until it ends.
func TestMetricsActive(t *testing.T) {
	m := newMesh(t)
	c := dialTCP(t, m.upstream)
	echoOnce(t, c, "open")
	up := upstreamName(m.webSnap.Upstreams[0])
	waitMetric(t, m.web, 1, "trellis_proxy_connections_active", "listener", up)
	waitMetric(t, m.db, 1, "trellis_proxy_connections_active", "listener", publicName())
	c.Close()
	waitMetric(t, m.web, 0, "trellis_proxy_connections_active", "listener", up)
	waitMetric(t, m.db, 0, "trellis_proxy_connections_active", "listener", publicName())
}

func TestMetricsDenied(t *testing.T) {
	authority := newCA(t, td)
	app := newEcho(t)
	snap := snapshot("db", authority.leaf(t, td, "db"), []string{authority.root.CertPEM}, app.port())
	p := newProxy(t, configOf(t, snap)) // default deny
	if !refused(dialPublic(t, addr(t, p, publicName()), authority.leaf(t, td, "web"), authority.pool())) {
		t.Fatal("connection not refused")
	}
	waitMetric(t, p, 1, "trellis_proxy_connections_denied_total", "listener", publicName())
	waitMetric(t, p, 1, "trellis_proxy_connections_total", "listener", publicName())
	waitMetric(t, p, 0, "trellis_proxy_connections_active", "listener", publicName())
	if n := metric(t, p, "trellis_proxy_tls_errors_total"); n != 0 {
		t.Errorf("tls errors = %v, want 0", n)
	}
}

func TestMetricsBadClientCert(t *testing.T) {
	authority := newCA(t, td)
	app := newEcho(t)
	snap := snapshot("db", authority.leaf(t, td, "db"), []string{authority.root.CertPEM}, app.port())
	snap.DefaultAllow = true
	p := newProxy(t, configOf(t, snap))
	pub := addr(t, p, publicName())
	other := newCA(t, td)
	for i, leaf := range []*proxycfg.Leaf{
		other.leaf(t, td, "web"), // other CA
		nil,                      // no certificate
		authority.leaf(t, "99999999-2222-3333-4444-555555555555.consul", "web"),
	} {
		if !refused(dialPublic(t, pub, leaf, authority.pool())) {
			t.Fatalf("case %d: connection not refused", i)
		}
		waitMetric(t, p, float64(i+1), "trellis_proxy_tls_errors_total", "listener", publicName())
	}
	if n := metric(t, p, "trellis_proxy_connections_denied_total"); n != 0 {
		t.Errorf("denied = %v, want 0", n)
	}
}

func TestMetricsUpstreamConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr()
	ln.Close()
	authority := newCA(t, td)
	snap := snapshot("web", authority.leaf(t, td, "web"), []string{authority.root.CertPEM}, newEcho(t).port())
	snap.Upstreams = []proxycfg.Upstream{upstream("db", dead)}
	p := newProxy(t, configOf(t, snap))
	if got, _ := roundTrip(dialTCP(t, addr(t, p, upstreamName(snap.Upstreams[0]))), "ping"); got == "ping" {
		t.Fatal("round trip to a dead endpoint succeeded")
	}
	waitMetric(t, p, 1, "trellis_proxy_upstream_connect_errors_total")
}

func TestMetricsApplyError(t *testing.T) {
	m := newMesh(t)
	if err := m.web.Apply(Config{Listeners: []*listenerv3.Listener{{}}}); err == nil {
		t.Fatal("Apply accepted a listener without a name")
	}
	if n := metric(t, m.web, "trellis_proxy_config_applies_total", "result", "error"); n != 1 {
		t.Errorf("applies error = %v, want 1", n)
	}
	if n := metric(t, m.web, "trellis_proxy_config_applies_total", "result", "ok"); n != 1 {
		t.Errorf("applies ok = %v, want 1", n)
	}
}

func TestMetricsHandler(t *testing.T) {
	p := New(Options{})
	defer p.Close()
	rec := httptest.NewRecorder()
	p.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/stats", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, want := range []string{
		`trellis_proxy_config_applies_total{result="ok"} 0`,
		`trellis_proxy_config_applies_total{result="error"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("body lacks %q:\n%s", want, rec.Body)
		}
	}
}
