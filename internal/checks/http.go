package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// httpProbe sends one request per run. A 2xx answer is passing, 429 Too Many
// Requests is warning (the service is up but shedding load), anything else is
// critical.
type httpProbe struct {
	method  string
	url     string
	header  http.Header
	host    string
	body    string
	timeout time.Duration

	transport *http.Transport
	client    *http.Client
}

func newHTTPProbe(def *structs.CheckType, timeout time.Duration) *httpProbe {
	method := def.Method
	if method == "" {
		method = http.MethodGet
	}
	header := make(http.Header, len(def.Header)+2)
	var host string
	for k, vs := range def.Header {
		if http.CanonicalHeaderKey(k) == "Host" {
			// net/http ignores a Host entry in the header map; the request's
			// Host field is what goes on the wire.
			if len(vs) > 0 {
				host = vs[0]
			}
			continue
		}
		for _, v := range vs {
			header.Add(k, v)
		}
	}
	if _, ok := header["User-Agent"]; !ok {
		header.Set("User-Agent", "Consul Health Check")
	}
	if _, ok := header["Accept"]; !ok {
		header.Set("Accept", "text/plain, text/*, */*")
	}

	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		// Each run opens a fresh connection, so a probe sees what a new client
		// would, and no idle connection outlives the runner.
		DisableKeepAlives: true,
		ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: def.TLSSkipVerify, //nolint:gosec // the check definition asks for it
			ServerName:         def.TLSServerName,
		},
	}
	return &httpProbe{
		method:    method,
		url:       def.HTTP,
		header:    header,
		host:      host,
		body:      def.Body,
		timeout:   timeout,
		transport: transport,
		client:    &http.Client{Transport: transport},
	}
}

func (p *httpProbe) probe(ctx context.Context) (string, string) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	var body io.Reader
	if p.body != "" {
		body = strings.NewReader(p.body)
	}
	req, err := http.NewRequestWithContext(ctx, p.method, p.url, body)
	if err != nil {
		return structs.HealthCritical, err.Error()
	}
	req.Header = p.header.Clone()
	if p.host != "" {
		req.Host = p.host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return structs.HealthCritical, err.Error()
	}
	defer resp.Body.Close()

	// Keep-alives are off, so the rest of the body need not be drained.
	// A read error (say, the timeout mid-body) leaves what was read; the
	// status code still decides the result.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxOutputSize))
	output := fmt.Sprintf("HTTP %s %s: %s Output: %s", p.method, p.url, resp.Status, b)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return structs.HealthPassing, output
	case resp.StatusCode == http.StatusTooManyRequests:
		return structs.HealthWarning, output
	default:
		return structs.HealthCritical, output
	}
}

func (p *httpProbe) close() { p.transport.CloseIdleConnections() }
