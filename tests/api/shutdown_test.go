package api_test

import (
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// wroteSignal is a RoundTripper that closes wrote once a request is on the
// wire.
type wroteSignal struct{ wrote chan struct{} }

func (s wroteSignal) RoundTrip(r *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(s.wrote) }}
	return http.DefaultTransport.RoundTrip(r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
}

// TestCloseAnswersBlockedQueries guards a fixed bug: Close waited for
// blocking queries to time out (10s, then cut them off with an EOF)
// because their contexts did not end with the server.
func TestCloseAnswersBlockedQueries(t *testing.T) {
	t.Parallel()
	a := start(t)
	_, err := a.c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil)
	must(t, err)
	_, meta, err := a.c.KV().Get("k", nil)
	must(t, err)

	sig := wroteSignal{make(chan struct{})}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.HTTPAddr
	cfg.HttpClient = &http.Client{Transport: sig}
	c, err := api.NewClient(cfg)
	must(t, err)
	type res struct {
		meta *api.QueryMeta
		err  error
	}
	done := make(chan res, 1)
	go func() {
		_, m, err := c.KV().Get("k", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		done <- res{m, err}
	}()
	<-sig.wrote
	// Close once the query is being served, waiting: a request not yet
	// read when Close comes was never in flight, and may be cut off.
	waitFor(t, 20*time.Second, func() error {
		r := a.do(t, "GET", "/v1/agent/metrics?format=prometheus", nil)
		if !strings.Contains(r.body, "trellis_http_blocking_queries 1") {
			return errorf("the blocking query is not waiting yet")
		}
		return nil
	})

	must(t, a.Close())
	r := <-done
	if r.err != nil {
		t.Fatalf("blocked query at Close: %v, want an answer", r.err)
	}
	if r.meta.LastIndex != meta.LastIndex {
		t.Errorf("index = %d, want %d unchanged", r.meta.LastIndex, meta.LastIndex)
	}
}
