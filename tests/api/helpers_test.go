// Package api_test drives a real, in-process Trellis agent with Consul's
// official Go client (github.com/hashicorp/consul/api), checking that the
// /v1 HTTP API behaves as Consul documents it. Where the client hides a
// detail (status codes, headers, lowercase JSON keys) the tests use raw
// HTTP.
package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// testAgent is a running agent and a client for it.
type testAgent struct {
	*agenttest.Agent
	c    *api.Client
	base string // "http://127.0.0.1:port"
}

// start starts an agent for one test.
func start(t *testing.T, opts ...agenttest.Options) *testAgent {
	t.Helper()
	var o agenttest.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	a := agenttest.Start(t, o)
	return &testAgent{Agent: a, c: newClient(t, a.HTTPAddr), base: "http://" + a.HTTPAddr}
}

func newClient(t *testing.T, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("api.NewClient: %v", err)
	}
	return c
}

// waitFor polls cond until it returns nil or the deadline passes, then
// fails the test with cond's last error.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-time.After(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

// response is a raw HTTP answer.
type response struct {
	code   int
	header http.Header
	body   string
}

// do sends a raw request to the agent. body may be nil, a string or bytes.
func (a *testAgent) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		t.Fatalf("do: unsupported body type %T", body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// expect fails the test unless the response has the wanted status code.
func (r response) expect(t *testing.T, what string, code int) response {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: status %d, want %d; body %q", what, r.code, code, r.body)
	}
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// nodeName is the name agenttest gives every agent.
const nodeName = "test-node"

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
