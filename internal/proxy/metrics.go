package proxy

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// metrics is a Proxy's own Prometheus registry. Label values are resolved
// once per Apply (listenerMetrics, clusterMetrics), so that connections
// and requests only touch atomic counters. The series of a cluster are
// deleted when an Apply removes it; those that balancers keep (outlier
// ejections, pending requests) are read from them at each scrape
// (balanceCollector).
type metrics struct {
	reg *prometheus.Registry

	conns, denied, tlsErrors *prometheus.CounterVec // {listener}
	tlsEmpty                 *prometheus.CounterVec // {listener}
	active                   *prometheus.GaugeVec   // {listener}
	bytes                    *prometheus.CounterVec // {listener, direction}
	duration                 *prometheus.HistogramVec
	upstreamErrors           *prometheus.CounterVec // {cluster}
	applyOK, applyError      prometheus.Counter

	requests, requestsDenied *prometheus.CounterVec   // {listener}
	responses                *prometheus.CounterVec   // {listener, code}
	requestDuration          *prometheus.HistogramVec // {listener}
	retries                  *prometheus.CounterVec   // {cluster}
	overflow                 *prometheus.CounterVec   // {cluster, kind}
	upstreamActive           *prometheus.GaugeVec     // {cluster}
	upgrades                 *prometheus.CounterVec   // {listener, result}
}

// listenerMetrics are one listener's series, resolved.
type listenerMetrics struct {
	conns, denied, tlsErrors prometheus.Counter
	tlsEmpty                 prometheus.Counter
	rx, tx                   prometheus.Counter
	active                   prometheus.Gauge
	duration                 prometheus.Observer

	requests, requestsDenied prometheus.Counter
	requestDuration          prometheus.Observer
	responses                *codeCounters
	upgradesRefused          prometheus.Counter
	upgradesTunneled         prometheus.Counter
}

// clusterMetrics are one cluster's series, resolved.
type clusterMetrics struct {
	connectErrors                                prometheus.Counter
	retries                                      prometheus.Counter
	active                                       prometheus.Gauge
	overflowRequests, overflowRetries            prometheus.Counter
	overflowConnections, overflowPendingRequests prometheus.Counter
}

// codeCounters resolves a listener's response counter of each status
// code once, when first seen.
type codeCounters struct {
	vec      *prometheus.CounterVec
	listener string
	byCode   [500]atomic.Pointer[counterRef] // status 100..599
}

type counterRef struct{ c prometheus.Counter }

func (cc *codeCounters) inc(code int) {
	if code < 100 || code > 599 {
		cc.vec.WithLabelValues(cc.listener, strconv.Itoa(code)).Inc()
		return
	}
	slot := &cc.byCode[code-100]
	ref := slot.Load()
	if ref == nil {
		ref = &counterRef{cc.vec.WithLabelValues(cc.listener, strconv.Itoa(code))}
		slot.Store(ref)
	}
	ref.c.Inc()
}

func newMetrics(p *Proxy) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_connections_total", Help: "Connections accepted, by listener.",
	}, []string{"listener"})
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_proxy_connections_active", Help: "Connections open right now, by listener.",
	}, []string{"listener"})
	m.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_connections_denied_total", Help: "Connections refused by intentions (network RBAC), by listener.",
	}, []string{"listener"})
	m.tlsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_tls_errors_total", Help: "Failed inbound TLS handshakes (bad or no client certificate, SAN mismatch), by listener; connections closed before sending a byte are not counted.",
	}, []string{"listener"})
	m.tlsEmpty = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_tls_empty_connections_total",
		Help: "Inbound connections to TLS listeners closed before sending any byte, as TCP health checks do, by listener.",
	}, []string{"listener"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_upstream_connect_errors_total", Help: "Failed upstream dials and TLS handshakes, by cluster.",
	}, []string{"cluster"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_bytes_total",
		Help: "Bytes received from (rx) and sent to (tx) downstream clients, by listener: the payload of tcp_proxy listeners, the bytes on the wire of HTTP listeners.",
	}, []string{"listener", "direction"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trellis_proxy_connection_duration_seconds", Help: "Lifetime of accepted connections, by listener.",
		Buckets: []float64{.001, .01, .1, 1, 10, 60, 600, 3600},
	}, []string{"listener"})
	applies := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_config_applies_total", Help: "Configurations applied (ok) and refused (error).",
	}, []string{"result"})
	m.applyOK, m.applyError = applies.WithLabelValues("ok"), applies.WithLabelValues("error")
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_http_requests_total", Help: "HTTP requests received, by listener.",
	}, []string{"listener"})
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_http_responses_total", Help: "HTTP responses sent downstream, by listener and status code.",
	}, []string{"listener", "code"})
	m.requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trellis_proxy_http_request_duration_seconds", Help: "Time from a request's headers to the end of its response, by listener.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"listener"})
	m.requestsDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_http_requests_denied_total", Help: "HTTP requests refused by intentions (HTTP RBAC, 403), by listener.",
	}, []string{"listener"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_upstream_retries_total", Help: "Upstream request retries, by cluster.",
	}, []string{"cluster"})
	m.overflow = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_upstream_overflow_total", Help: "Circuit-breaker overflows, by cluster and kind: requests and retries refused (max_requests; max_retries or the retry budget), upstream connections not opened at max_connections (an HTTP request then waits for one as a pending request), requests refused at max_pending_requests.",
	}, []string{"cluster", "kind"})
	m.upstreamActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_proxy_upstream_requests_active", Help: "Upstream HTTP requests in flight, by cluster.",
	}, []string{"cluster"})
	m.upgrades = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_proxy_http_upgrades_total", Help: "HTTP/1.1 upgrade requests (WebSocket), by listener and result: tunneled (the upstream answered 101), refused (403: the listener's upgrade_configs do not list the protocol).",
	}, []string{"listener", "result"})
	m.reg.MustRegister(m.conns, m.active, m.denied, m.tlsErrors, m.tlsEmpty, m.upstreamErrors, m.bytes, m.duration, applies,
		m.requests, m.responses, m.requestDuration, m.requestsDenied, m.retries, m.overflow, m.upstreamActive, m.upgrades,
		newBalanceCollector(p))
	return m
}

func (m *metrics) listener(name string) *listenerMetrics {
	return &listenerMetrics{
		conns:            m.conns.WithLabelValues(name),
		denied:           m.denied.WithLabelValues(name),
		tlsErrors:        m.tlsErrors.WithLabelValues(name),
		tlsEmpty:         m.tlsEmpty.WithLabelValues(name),
		rx:               m.bytes.WithLabelValues(name, "rx"),
		tx:               m.bytes.WithLabelValues(name, "tx"),
		active:           m.active.WithLabelValues(name),
		duration:         m.duration.WithLabelValues(name),
		requests:         m.requests.WithLabelValues(name),
		requestsDenied:   m.requestsDenied.WithLabelValues(name),
		requestDuration:  m.requestDuration.WithLabelValues(name),
		responses:        &codeCounters{vec: m.responses, listener: name},
		upgradesRefused:  m.upgrades.WithLabelValues(name, "refused"),
		upgradesTunneled: m.upgrades.WithLabelValues(name, "tunneled"),
	}
}

func (m *metrics) cluster(name string) *clusterMetrics {
	return &clusterMetrics{
		connectErrors:           m.upstreamErrors.WithLabelValues(name),
		retries:                 m.retries.WithLabelValues(name),
		active:                  m.upstreamActive.WithLabelValues(name),
		overflowRequests:        m.overflow.WithLabelValues(name, "requests"),
		overflowRetries:         m.overflow.WithLabelValues(name, "retries"),
		overflowConnections:     m.overflow.WithLabelValues(name, "connections"),
		overflowPendingRequests: m.overflow.WithLabelValues(name, "pending"),
	}
}

// resolve gives st's listeners and clusters their series.
func (m *metrics) resolve(st *state) {
	for name, ls := range st.listeners {
		ls.m = m.listener(name)
	}
	for name, cl := range st.clusters {
		cl.m = m.cluster(name)
	}
}

// forgetCluster deletes the series of a cluster that an Apply removed,
// so that a proxy whose upstreams come and go does not keep them all.
// Requests still in flight on it count in series no longer exported.
func (m *metrics) forgetCluster(name string) {
	m.upstreamErrors.DeleteLabelValues(name)
	m.retries.DeleteLabelValues(name)
	m.upstreamActive.DeleteLabelValues(name)
	for _, kind := range []string{"requests", "retries", "connections", "pending"} {
		m.overflow.DeleteLabelValues(name, kind)
	}
}

// forgetListener deletes the series of a listener that an Apply
// removed, as forgetCluster does for clusters.
func (m *metrics) forgetListener(name string) {
	only := prometheus.Labels{"listener": name}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.conns, m.denied, m.tlsErrors, m.tlsEmpty, m.active, m.bytes, m.duration,
		m.requests, m.requestsDenied, m.responses, m.requestDuration, m.upgrades} {
		v.DeletePartialMatch(only)
	}
}

// balanceCollector exports what the clusters' balancers count, at each
// scrape: the series of a cluster go with its balancer.
type balanceCollector struct {
	p                                *Proxy
	ejections, ejectionsActive, pend *prometheus.Desc
}

func newBalanceCollector(p *Proxy) *balanceCollector {
	return &balanceCollector{
		p: p,
		ejections: prometheus.NewDesc("trellis_proxy_outlier_ejections_total",
			"Hosts ejected by outlier detection, by cluster.", []string{"cluster"}, nil),
		ejectionsActive: prometheus.NewDesc("trellis_proxy_outlier_ejections_active",
			"Hosts ejected by outlier detection right now, by cluster.", []string{"cluster"}, nil),
		pend: prometheus.NewDesc("trellis_proxy_upstream_requests_pending",
			"Upstream HTTP requests waiting for a connection (max_connections reached), by cluster.", []string{"cluster"}, nil),
	}
}

func (c *balanceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ejections
	ch <- c.ejectionsActive
	ch <- c.pend
}

func (c *balanceCollector) Collect(ch chan<- prometheus.Metric) {
	for name, b := range *c.p.balancers.Load() {
		s := b.bc.Stats()
		ch <- prometheus.MustNewConstMetric(c.ejections, prometheus.CounterValue, float64(s.EjectionsTotal), name)
		ch <- prometheus.MustNewConstMetric(c.ejectionsActive, prometheus.GaugeValue, float64(s.EjectionsActive), name)
		ch <- prometheus.MustNewConstMetric(c.pend, prometheus.GaugeValue, float64(s.InUse[balance.PendingRequests]), name)
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
