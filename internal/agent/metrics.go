package agent

import (
	"bytes"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// metrics is the agent's Prometheus registry, served by /v1/agent/metrics
// in Prometheus text or Consul's JSON shape.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	blocked  prometheus.Gauge
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_http_requests_total", Help: "HTTP API requests by method, route and status code.",
	}, []string{"method", "route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trellis_http_request_duration_seconds", Help: "HTTP API request latency, blocking queries included.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 60, 600},
	}, []string{"method", "route"})
	m.blocked = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_http_blocking_queries", Help: "Blocking queries waiting for a change right now.",
	})
	count := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.latency, m.blocked,
		count("trellis_catalog_services", "Local services registered on this agent.", func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(len(a.services))
		}),
		count("trellis_catalog_checks", "Local checks registered on this agent.", func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(len(a.checks))
		}),
		count("trellis_raft_leader", "1 when this server leads its raft group.", func() float64 {
			if a.srv != nil && a.srv.IsLeader() {
				return 1
			}
			return 0
		}),
		count("trellis_raft_applied_index", "The last raft index applied to the state store.", func() float64 {
			v, _ := strconv.ParseFloat(a.raftStats()["applied_index"], 64)
			return v
		}),
		count("trellis_state_latest_index", "The highest index in the state store.", func() float64 {
			if a.store == nil {
				return 0
			}
			return float64(a.store.LatestIndex())
		}),
	)
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument counts requests by route; the route is the matched pattern,
// so label values stay bounded whatever paths clients send.
func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		route := r.Pattern
		if i := strings.IndexByte(route, ' '); i >= 0 {
			route = route[i+1:]
		}
		if route == "" {
			if strings.HasPrefix(r.URL.Path, "/v1/kv/") {
				route = "/v1/kv/{key...}"
			} else {
				route = "unmatched"
			}
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodHead:
		default:
			method = "other" // clients choose methods: keep the label bounded
		}
		m.requests.WithLabelValues(method, route, strconv.Itoa(rec.code)).Inc()
		m.latency.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
	})
}

// Metrics renders the registry: Prometheus text, or Consul's JSON shape
// (Gauges, Counters, Samples) that `consul` tooling reads.
func (a *Agent) Metrics(prom bool) (string, []byte, error) {
	families, err := a.metrics.reg.Gather()
	if err != nil {
		return "", nil, err
	}
	if prom {
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range families {
			if err := enc.Encode(f); err != nil {
				return "", nil, err
			}
		}
		return string(expfmt.NewFormat(expfmt.TypeTextPlain)), buf.Bytes(), nil
	}
	type gauge struct {
		Name   string
		Value  float64
		Labels map[string]string
	}
	type sample struct {
		Name   string
		Count  uint64
		Rate   float64
		Sum    float64
		Min    float64
		Max    float64
		Mean   float64
		Stddev float64
		Labels map[string]string
	}
	out := struct {
		Timestamp string
		Gauges    []gauge
		Points    []any
		Counters  []sample
		Samples   []sample
	}{Timestamp: time.Now().UTC().Truncate(10 * time.Second).Format("2006-01-02 15:04:05 +0000 UTC"),
		Gauges: []gauge{}, Points: []any{}, Counters: []sample{}, Samples: []sample{}}
	for _, f := range families {
		name := strings.ReplaceAll(f.GetName(), "_", ".")
		for _, mt := range f.GetMetric() {
			labels := labelMap(mt.GetLabel())
			switch f.GetType() {
			case dto.MetricType_GAUGE:
				out.Gauges = append(out.Gauges, gauge{name, mt.GetGauge().GetValue(), labels})
			case dto.MetricType_COUNTER:
				v := mt.GetCounter().GetValue()
				out.Counters = append(out.Counters, sample{Name: name, Count: uint64(v), Sum: v, Labels: labels})
			case dto.MetricType_HISTOGRAM:
				h := mt.GetHistogram()
				s := sample{Name: name, Count: h.GetSampleCount(), Sum: h.GetSampleSum(), Labels: labels}
				if s.Count > 0 {
					s.Mean = s.Sum / float64(s.Count)
				}
				out.Samples = append(out.Samples, s)
			case dto.MetricType_SUMMARY:
				sm := mt.GetSummary()
				s := sample{Name: name, Count: sm.GetSampleCount(), Sum: sm.GetSampleSum(), Labels: labels}
				if s.Count > 0 {
					s.Mean = s.Sum / float64(s.Count)
				}
				out.Samples = append(out.Samples, s)
			}
		}
	}
	out.Gauges = append(out.Gauges, gauge{Name: "trellis.runtime.num_goroutines", Value: float64(runtime.NumGoroutine()), Labels: map[string]string{}})
	b, err := jsonMarshal(out)
	return "application/json", b, err
}

func labelMap(pairs []*dto.LabelPair) map[string]string {
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		m[p.GetName()] = p.GetValue()
	}
	return m
}
