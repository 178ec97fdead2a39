package proxy

import (
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// Benchmarks of the L7 path: a client of web's upstream listener, through
// web and db's sidecars (mTLS, HTTP/2 between them) to db's app, against
// the app called directly. They report requests per second and the
// latency percentiles the sidecar pair adds.

func benchApp(b *testing.B, h2 bool) net.Addr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	body := []byte("hello from the app")
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(body)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	b.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return ln.Addr()
}

func benchPair(b *testing.B, h2App bool) (app, upstream net.Addr) {
	app = benchApp(b, h2App)
	authority := newCA(b, td)
	roots := []string{authority.root.CertPEM}
	db := New(Options{})
	b.Cleanup(func() { db.Close() })
	if err := db.Apply(inboundConfig("db", authority.leaf(b, td, "db"), roots, app, h2App, httpRBACAllowAll())); err != nil {
		b.Fatal(err)
	}
	web := New(Options{})
	b.Cleanup(func() { web.Close() })
	cfg := outboundTo(inboundConfig("web", authority.leaf(b, td, "web"), roots, app, false, nil), "db", db.ListenerAddr(pubListener))
	if err := web.Apply(cfg); err != nil {
		b.Fatal(err)
	}
	return app, web.ListenerAddr("db")
}

// run sends b.N GETs from conc clients over keep-alive HTTP/1.1 and
// returns the sorted latencies.
func runLoad(b *testing.B, target net.Addr, conc int) []time.Duration {
	tr := &http.Transport{MaxIdleConnsPerHost: conc}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	url := "http://" + target.String() + "/bench"
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	var next sync.Mutex
	n := 0
	b.ResetTimer()
	for i := range conc {
		wg.Go(func() {
			for {
				next.Lock()
				if n >= b.N {
					next.Unlock()
					return
				}
				n++
				next.Unlock()
				start := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i] = append(lat[i], time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	return all
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

func benchmarkPair(b *testing.B, h2App bool, conc int) {
	app, upstream := benchPair(b, h2App)
	direct := runLoad(b, app, conc)
	start := time.Now()
	b.ResetTimer()
	through := runLoad(b, upstream, conc)
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(pct(through, 0.5)-pct(direct, 0.5))/1e3, "added-p50-µs")
	b.ReportMetric(float64(pct(through, 0.99)-pct(direct, 0.99))/1e3, "added-p99-µs")
}

func BenchmarkPairHTTP1(b *testing.B)       { benchmarkPair(b, false, 1) }
func BenchmarkPairHTTP1Conc32(b *testing.B) { benchmarkPair(b, false, 32) }
func BenchmarkPairH2CConc32(b *testing.B)   { benchmarkPair(b, true, 32) }
