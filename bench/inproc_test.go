package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// clientsPerCPU makes RunParallel run 16 clients on a 2-CPU machine, as
// the loopback harness does.
const clientsPerCPU = 8

// BenchmarkAgent drives one in-process dev agent over HTTP on loopback, so
// that -cpuprofile sees the server's CPU (and the clients', which share
// the process: look at the trellis frames). It reports ns/op per request;
// it asserts only that requests succeed.
//
//	go test ./bench -run '^$' -bench 'Agent/KVPut' -cpuprofile kvput.prof
func BenchmarkAgent(b *testing.B) {
	a := agenttest.Start(b, agenttest.Options{})
	c := newBenchClient(a.HTTPAddr)
	b.Cleanup(c.hc.CloseIdleConnections)
	waitWritable(b, c)

	b.Run("CatalogRegister", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(clientsPerCPU)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				body := fmt.Sprintf(`{"Node":"reg-node-%d","Address":"10.1.%d.%d","Service":{"ID":"svc-%d","Service":"svc-%d","Port":%d}}`,
					i/100, i/100%256, i/100/256, i%100, i%100, 20000+i%100)
				c.mustDo(b, http.MethodPut, "/v1/catalog/register", []byte(body))
			}
		})
	})

	value := bytes.Repeat([]byte("trellis-"), 128) // 1 KiB
	const keys = 1000
	b.Run("KVPut", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(clientsPerCPU)
		b.SetBytes(int64(len(value)))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.mustDo(b, http.MethodPut, fmt.Sprintf("/v1/kv/bench/kv/%05d", n.Add(1)%keys), value)
			}
		})
	})

	b.Run("KVGet", func(b *testing.B) {
		for i := range keys {
			c.mustDo(b, http.MethodPut, fmt.Sprintf("/v1/kv/bench/kv/%05d", i), value)
		}
		var n atomic.Int64
		b.SetParallelism(clientsPerCPU)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.mustDo(b, http.MethodGet, fmt.Sprintf("/v1/kv/bench/kv/%05d", n.Add(1)%keys), nil)
			}
		})
	})

	b.Run("HealthService", func(b *testing.B) {
		registerWeb(b, c)
		b.SetParallelism(clientsPerCPU)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.mustDo(b, http.MethodGet, "/v1/health/service/web?passing", nil)
			}
		})
	})

	b.Run("DNSSRV", func(b *testing.B) {
		registerWeb(b, c)
		cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		b.SetParallelism(clientsPerCPU)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			co, err := cl.Dial(a.DNSAddr)
			if err != nil {
				b.Error(err)
				return
			}
			defer co.Close()
			for pb.Next() {
				r, _, err := cl.ExchangeWithConn(new(dns.Msg).SetQuestion("web.service.consul.", dns.TypeSRV), co)
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					b.Errorf("web.service.consul SRV: %v %v", err, r)
					return
				}
			}
		})
	})
}

// webInstances is how many instances of "web", each with a passing check,
// the health and DNS benchmarks query.
const webInstances = 100

// registerWeb registers the "web" instances and checks that a
// passing-only health query sees them all. Registering again is
// idempotent, so each b.N round may call it.
func registerWeb(b *testing.B, c *benchClient) {
	for i := range webInstances {
		body := fmt.Sprintf(`{"Node":"web-node-%d","Address":"10.2.0.%d","Service":{"ID":"web","Service":"web","Port":8080},`+
			`"Check":{"CheckID":"service:web","Name":"web alive","Status":"passing","ServiceID":"web"}}`, i, i)
		c.mustDo(b, http.MethodPut, "/v1/catalog/register", []byte(body))
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(c.mustDo(b, http.MethodGet, "/v1/health/service/web?passing", nil), &entries); err != nil || len(entries) != webInstances {
		b.Fatalf("health/service/web?passing: %d entries, err %v; want %d", len(entries), err, webInstances)
	}
}

type benchClient struct {
	hc   *http.Client
	base string
}

func newBenchClient(addr string) *benchClient {
	// One idle connection per client goroutine, or they keep dialling.
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	return &benchClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: "http://" + addr}
}

func (c *benchClient) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %.200s", method, path, resp.Status, out)
	}
	return out, nil
}

// mustDo is safe to call from RunParallel goroutines: b.Error, not Fatal.
func (c *benchClient) mustDo(b *testing.B, method, path string, body []byte) []byte {
	out, err := c.do(context.Background(), method, path, body)
	if err != nil {
		b.Error(err)
	}
	return out
}

// waitWritable polls a KV write until the agent has a leader and accepts
// it, or fails after 30 seconds.
func waitWritable(b *testing.B, c *benchClient) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.do(context.Background(), http.MethodPut, "/v1/kv/bench/ready", []byte("1"))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent not accepting writes after 30s: %v", err)
		}
		<-time.After(50 * time.Millisecond) // poll interval
	}
}
