package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is a Proxy's own Prometheus registry. Label values are resolved
// once per Apply (listenerMetrics, cluster.connectErrors), so that a
// connection only touches atomic counters.
type metrics struct {
	reg *prometheus.Registry

	conns, denied, tlsErrors *prometheus.CounterVec // {listener}
	active                   *prometheus.GaugeVec   // {listener}
	bytes                    *prometheus.CounterVec // {listener, direction}
	duration                 *prometheus.HistogramVec
	upstreamErrors           *prometheus.CounterVec // {cluster}
	applyOK, applyError      prometheus.Counter
}

// listenerMetrics are one listener's series, resolved.
type listenerMetrics struct {
	conns, denied, tlsErrors prometheus.Counter
	rx, tx                   prometheus.Counter
	active                   prometheus.Gauge
	duration                 prometheus.Observer
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_connections_total", Help: "Connections accepted, by listener.",
	}, []string{"listener"})
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_proxy_connections_active", Help: "Connections open right now, by listener.",
	}, []string{"listener"})
	m.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_connections_denied_total", Help: "Connections refused by intentions (RBAC), by listener.",
	}, []string{"listener"})
	m.tlsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_tls_errors_total", Help: "Failed inbound TLS handshakes (bad or no client certificate, SAN mismatch), by listener.",
	}, []string{"listener"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_upstream_connect_errors_total", Help: "Failed upstream dials and TLS handshakes, by cluster.",
	}, []string{"cluster"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_bytes_total", Help: "Bytes received from (rx) and sent to (tx) downstream clients, by listener.",
	}, []string{"listener", "direction"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trellis_proxy_connection_duration_seconds", Help: "Lifetime of accepted connections, by listener.",
		Buckets: []float64{.001, .01, .1, 1, 10, 60, 600, 3600},
	}, []string{"listener"})
	applies := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_config_applies_total", Help: "Configurations applied (ok) and refused (error).",
	}, []string{"result"})
	m.applyOK, m.applyError = applies.WithLabelValues("ok"), applies.WithLabelValues("error")
	m.reg.MustRegister(m.conns, m.active, m.denied, m.tlsErrors, m.upstreamErrors, m.bytes, m.duration, applies)
	return m
}

func (m *metrics) listener(name string) *listenerMetrics {
	return &listenerMetrics{
		conns:     m.conns.WithLabelValues(name),
		denied:    m.denied.WithLabelValues(name),
		tlsErrors: m.tlsErrors.WithLabelValues(name),
		rx:        m.bytes.WithLabelValues(name, "rx"),
		tx:        m.bytes.WithLabelValues(name, "tx"),
		active:    m.active.WithLabelValues(name),
		duration:  m.duration.WithLabelValues(name),
	}
}

// resolve gives c's listeners and clusters their series.
func (m *metrics) resolve(c *compiled) {
	for name, ls := range c.listeners {
		ls.m = m.listener(name)
	}
	for name, cl := range c.state.clusters {
		cl.connectErrors = m.upstreamErrors.WithLabelValues(name)
	}
}

// Metrics serves the proxy's metrics in the Prometheus exposition
// format (what Envoy's admin /stats?format=prometheus is to Envoy).
func (p *Proxy) Metrics() http.Handler {
	return promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{})
}

// Gatherer is the proxy's metrics registry, to be merged into another
// exposition.
func (p *Proxy) Gatherer() prometheus.Gatherer { return p.metrics.reg }
