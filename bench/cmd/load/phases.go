package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// healthService is the service the health-query and DNS phases ask for;
// every instance has a passing check.
const healthService = "web"

// client is a keep-alive HTTP client for the agent's API.
type client struct {
	hc   *http.Client
	base string
}

func newClient(addr string, workers int) *client {
	// The default transport keeps two idle connections per host, so 16
	// workers would keep dialling; keep one per worker plus the blocking
	// query's.
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        workers + 4,
		MaxIdleConnsPerHost: workers + 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: "http://" + addr}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// do sends a request and reads the whole response, so the connection goes
// back to the pool. Status codes other than 200 are errors. When keep is
// set the body is returned.
func (c *client) do(ctx context.Context, method, path string, body []byte, keep bool) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var out []byte
	if keep || resp.StatusCode != http.StatusOK {
		out, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s %s: %s: %.200s", method, path, resp.Status, out)
	}
	return out, resp.Header, nil
}

// result is what one timed phase measured.
type result struct {
	name     string
	cpu      cpuTimes  // spent by the agent and this process during the phase
	rssAfter memStatus // the agent's, read as the phase ended
	ops      int       // successful operations
	errs     int
	firstErr error
	elapsed  time.Duration
	lat      []time.Duration // of successful operations, sorted
	// byWorker holds each worker's latencies and errors, in the order
	// they happened, for phases whose workers aim at different servers.
	byWorker     [][]time.Duration
	errsByWorker []int
}

func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// pct returns the p-th percentile (0 < p ≤ 100) latency, nearest rank.
func (r *result) pct(p float64) time.Duration {
	return percentile(r.lat, p)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// drive runs op on workers goroutines until total operations have been
// started or, when total is 0, until dur has passed, and times each one.
// op gets its worker's number and the operation's sequence number.
func drive(ctx context.Context, workers, total int, dur time.Duration, op func(ctx context.Context, w, i int) error) *result {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		lats  = make([][]time.Duration, workers)
		errs  = make([]int, workers)
		first = make([]error, workers)
	)
	start := time.Now()
	deadline := start.Add(dur)
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if total > 0 && i >= total {
					return
				}
				t0 := time.Now()
				if total == 0 && !t0.Before(deadline) {
					return
				}
				if err := op(ctx, w, i); err != nil {
					errs[w]++
					if first[w] == nil {
						first[w] = err
					}
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := &result{elapsed: time.Since(start), lat: slices.Concat(lats...), byWorker: lats, errsByWorker: errs}
	slices.Sort(r.lat)
	r.ops = len(r.lat)
	for w := range workers {
		r.errs += errs[w]
		if r.firstErr == nil {
			r.firstErr = first[w]
		}
	}
	return r
}

// check turns a phase in which nothing succeeded into an error: its figure
// would mean nothing.
func (r *result) check(phase string) error {
	if r.ops == 0 {
		return fmt.Errorf("%s: no operation succeeded (%d errors): %v", phase, r.errs, r.firstErr)
	}
	return nil
}

// The request bodies are written out here, minimal as a Consul client
// sends them, rather than marshalled from internal/structs, whose
// non-omitempty fields would add zero values a client never sends.
type regService struct {
	ID      string
	Service string
	Port    int
}

type regCheck struct {
	CheckID   string
	Name      string
	Status    string
	ServiceID string
}

type regRequest struct {
	Node    string
	Address string
	Service *regService `json:",omitempty"`
	Check   *regCheck   `json:",omitempty"`
}

func nodeName(n int) string { return fmt.Sprintf("bench-node-%04d", n) }

func nodeAddr(n int) string { return fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255) }

// registrationBodies returns the bodies of the catalog phase: instances
// spread perNode to a node, instance j of a node being service "svc-j".
func registrationBodies(instances, perNode int) ([][]byte, error) {
	bodies := make([][]byte, instances)
	for i := range bodies {
		n, j := i/perNode, i%perNode
		svc := fmt.Sprintf("svc-%03d", j)
		b, err := json.Marshal(regRequest{
			Node: nodeName(n), Address: nodeAddr(n),
			Service: &regService{ID: svc, Service: svc, Port: 20000 + j},
		})
		if err != nil {
			return nil, err
		}
		bodies[i] = b
	}
	return bodies, nil
}

func registerPhase(ctx context.Context, c *client, workers int, bodies [][]byte) *result {
	return drive(ctx, workers, len(bodies), 0, func(ctx context.Context, _, i int) error {
		_, _, err := c.do(ctx, http.MethodPut, "/v1/catalog/register", bodies[i], false)
		return err
	})
}

func kvKey(i, keys int) string { return fmt.Sprintf("/v1/kv/bench/kv/%05d", i%keys) }

func kvPutPhase(ctx context.Context, c *client, workers, ops, keys, size int) *result {
	value := bytes.Repeat([]byte("trellis-"), size/8+1)[:size]
	paths := make([]string, keys)
	for i := range paths {
		paths[i] = kvKey(i, keys)
	}
	return drive(ctx, workers, ops, 0, func(ctx context.Context, _, i int) error {
		_, _, err := c.do(ctx, http.MethodPut, paths[i%keys], value, false)
		return err
	})
}

func kvGetPhase(ctx context.Context, c *client, workers, ops, keys int) *result {
	paths := make([]string, keys)
	for i := range paths {
		paths[i] = kvKey(i, keys)
	}
	return drive(ctx, workers, ops, 0, func(ctx context.Context, _, i int) error {
		_, _, err := c.do(ctx, http.MethodGet, paths[i%keys], nil, false)
		return err
	})
}

// setupHealthService registers n instances of healthService, one on each of
// the first n catalog-phase nodes, each with a passing check, and checks
// that a passing-only health query returns all of them.
func setupHealthService(ctx context.Context, c *client, n int) error {
	for i := range n {
		b, err := json.Marshal(regRequest{
			Node: nodeName(i), Address: nodeAddr(i),
			Service: &regService{ID: healthService, Service: healthService, Port: 8080},
			Check: &regCheck{CheckID: "service:" + healthService, Name: "web alive",
				Status: "passing", ServiceID: healthService},
		})
		if err != nil {
			return err
		}
		if _, _, err := c.do(ctx, http.MethodPut, "/v1/catalog/register", b, false); err != nil {
			return fmt.Errorf("health setup: %w", err)
		}
	}
	body, _, err := c.do(ctx, http.MethodGet, "/v1/health/service/"+healthService+"?passing", nil, true)
	if err != nil {
		return fmt.Errorf("health setup: %w", err)
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(body, &entries); err != nil {
		return fmt.Errorf("health setup: decoding /v1/health/service/%s: %w", healthService, err)
	}
	if len(entries) != n {
		return fmt.Errorf("health setup: /v1/health/service/%s?passing returned %d entries, want %d", healthService, len(entries), n)
	}
	return nil
}

func healthPhase(ctx context.Context, c *client, workers int, dur time.Duration) *result {
	path := "/v1/health/service/" + healthService + "?passing"
	return drive(ctx, workers, 0, dur, func(ctx context.Context, _, _ int) error {
		_, _, err := c.do(ctx, http.MethodGet, path, nil, false)
		return err
	})
}

// dnsPhase sends SRV queries for healthService over UDP, one socket per
// worker, without EDNS, as dig +notcp would. It returns the phase and the
// answer count of one reply.
func dnsPhase(ctx context.Context, addr string, workers int, dur time.Duration) (*result, int, error) {
	name := healthService + ".service.consul."
	cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	conns := make([]*dns.Conn, workers)
	defer func() {
		for _, co := range conns {
			if co != nil {
				co.Close()
			}
		}
	}()
	for w := range conns {
		co, err := cl.Dial(addr)
		if err != nil {
			return nil, 0, fmt.Errorf("dns: dial %s: %w", addr, err)
		}
		conns[w] = co
	}
	query := func(co *dns.Conn) (*dns.Msg, error) {
		r, _, err := cl.ExchangeWithConn(new(dns.Msg).SetQuestion(name, dns.TypeSRV), co)
		if err != nil {
			return nil, err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			return nil, fmt.Errorf("dns: %s SRV: rcode %s, %d answers", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return r, nil
	}
	first, err := query(conns[0])
	if err != nil {
		return nil, 0, err
	}
	res := drive(ctx, workers, 0, dur, func(_ context.Context, w, _ int) error {
		_, err := query(conns[w])
		return err
	})
	return res, len(first.Answer), nil
}

// wakeupPhase times n blocking-query wake-ups: a GET /v1/kv/key?index=N
// is sent and, once it is on the wire and a short pause has let the agent
// park it, another connection writes the key. Each sample runs from just
// before the write is sent to the arrival of the blocked response, so it
// includes the write's commit. The pause paces the measurement; if the
// agent had not yet parked the query, it answers at once with the new
// index and the sample is the same path less the watch.
func wakeupPhase(ctx context.Context, c *client, n int, park time.Duration) (*result, error) {
	const path = "/v1/kv/bench/wake"
	if _, _, err := c.do(ctx, http.MethodPut, path, []byte("0"), false); err != nil {
		return nil, fmt.Errorf("wake-up: %w", err)
	}
	_, h, err := c.do(ctx, http.MethodGet, path, nil, false)
	if err != nil {
		return nil, fmt.Errorf("wake-up: %w", err)
	}
	idx, err := strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("wake-up: X-Consul-Index %q: %w", h.Get("X-Consul-Index"), err)
	}

	type answer struct {
		at  time.Time
		idx uint64
		err error
	}
	res := &result{}
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		wrote := make(chan struct{})
		var once sync.Once
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(wrote) }) }}
		got := make(chan answer, 1)
		go func() {
			q := fmt.Sprintf("%s?index=%d&wait=10s", path, idx)
			_, h, err := c.do(httptrace.WithClientTrace(ctx, trace), http.MethodGet, q, nil, false)
			a := answer{at: time.Now(), err: err}
			if err == nil {
				a.idx, a.err = strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64)
			}
			got <- a
		}()
		select {
		case <-wrote:
		case a := <-got:
			// Answered before the write: a bug in the agent or the
			// request failed; either way not a wake-up.
			got <- a
		}
		time.Sleep(park)
		t0 := time.Now()
		_, _, werr := c.do(ctx, http.MethodPut, path, []byte(strconv.Itoa(i+1)), false)
		a := <-got
		switch {
		case werr != nil:
			a.err = fmt.Errorf("wake-up write: %w", werr)
		case a.err == nil && a.idx <= idx:
			a.err = fmt.Errorf("wake-up: blocked query returned index %d, not above %d", a.idx, idx)
		case a.err == nil && a.at.Before(t0):
			a.err = fmt.Errorf("wake-up: blocked query returned (index %d) before the write was sent", a.idx)
		}
		if a.err != nil {
			res.errs++
			if res.firstErr == nil {
				res.firstErr = a.err
			}
			// Re-read the index so the next round blocks again.
			if _, h, err := c.do(ctx, http.MethodGet, path, nil, false); err == nil {
				if v, err := strconv.ParseUint(h.Get("X-Consul-Index"), 10, 64); err == nil {
					idx = v
				}
			}
			continue
		}
		res.lat = append(res.lat, a.at.Sub(t0))
		idx = a.idx
	}
	res.elapsed = time.Since(start)
	slices.Sort(res.lat)
	res.ops = len(res.lat)
	return res, ctx.Err()
}

// waitWritable polls a KV write until the agent accepts it (it has a
// leader) or the deadline passes.
func waitWritable(ctx context.Context, c *client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for {
		if _, _, err = c.do(ctx, http.MethodPut, "/v1/kv/bench/ready", []byte("1"), false); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent not accepting writes within %v: %w", timeout, errors.Join(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
