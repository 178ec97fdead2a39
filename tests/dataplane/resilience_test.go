package dataplane

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// upstreamConfig is web's service-defaults with cfg as its override for
// the upstream db (Limits, PassiveHealthCheck).
func upstreamConfig(cfg map[string]any) map[string]any {
	cfg["Name"] = "db"
	return map[string]any{"Kind": "service-defaults", "Name": "web",
		"UpstreamConfig": map[string]any{"Overrides": []any{cfg}}}
}

// A service-router's retries hide an instance that fails: its failed
// attempts are retried on another instance (never the same), so that every
// request succeeds; a route without retries passes the failures on, and
// RetryOnStatusCodes retries only the codes it names.
func TestRetriesHideAFailingInstance(t *testing.T) {
	p := startHTTPPool(t, 3,
		// Outlier detection that never ejects keeps the failing instance
		// in rotation, so that every part of the test meets it.
		upstreamConfig(map[string]any{"PassiveHealthCheck": map[string]any{"EnforcingConsecutive5xx": 0}}),
		map[string]any{"Kind": "service-router", "Name": "db", "Routes": []any{
			map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/plain"}}},
			map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/codes"}},
				"Destination": map[string]any{"NumRetries": 2, "RetryOnStatusCodes": []int{503}}},
			map[string]any{"Destination": map[string]any{"NumRetries": 2, "RetryOn": []string{"5xx"}}},
		}})
	bad := p.apps[1] // db-2
	bad.SetStatus(http.StatusServiceUnavailable)
	retries := p.webProxy.Stats().Sum(statRetries, "cluster", dbCluster)

	// phase sends n requests for path and returns the replies other than
	// a healthy instance's 200, and how many requests db-2 got.
	phase := func(path string, n int) (failed []reply, badHits int) {
		t.Helper()
		before := bad.Requests()
		for range n {
			r := p.get(t, path)
			if r.code != http.StatusOK || r.body == "db-2" {
				failed = append(failed, r)
			}
		}
		return failed, bad.Requests() - before
	}

	// passedOn checks that each of db-2's requests on path failed with
	// db-2's own answer, code.
	passedOn := func(path string, n, code int) {
		t.Helper()
		failed, hits := phase(path, n)
		if hits == 0 || len(failed) != hits {
			t.Fatalf("%s: db-2 got %d requests, %d failed (%v); want it to get some, and each of them failed", path, hits, len(failed), failed)
		}
		for _, r := range failed {
			if r.code != code || r.body != "db-2" {
				t.Fatalf("%s: got %v, want db-2's own %d", path, r, code)
			}
		}
	}

	// Without retries, db-2's 503s reach the client.
	passedOn("/plain", 6, http.StatusServiceUnavailable)
	p.webProxy.WaitStat(statRetries, retries, "cluster", dbCluster)

	// Retrying on 503 hides them; each of db-2's failures was retried,
	// once.
	failed, hits := phase("/codes", 12)
	if len(failed) != 0 || hits == 0 {
		t.Fatalf("/codes: %d requests failed (%v), db-2 got %d; want none failed, db-2 tried", len(failed), failed, hits)
	}
	retries += float64(hits)
	p.webProxy.WaitStat(statRetries, retries, "cluster", dbCluster)

	// A 500 is not among the RetryOnStatusCodes: passed on, not retried.
	bad.SetStatus(http.StatusInternalServerError)
	passedOn("/codes", 6, http.StatusInternalServerError)
	p.webProxy.WaitStat(statRetries, retries, "cluster", dbCluster)

	// The catch-all route retries every 5xx.
	failed, hits = phase("/anything", 12)
	if len(failed) != 0 || hits == 0 {
		t.Fatalf("/anything: %d requests failed (%v), db-2 got %d; want none failed, db-2 tried", len(failed), failed, hits)
	}
	retries += float64(hits)
	p.webProxy.WaitStat(statRetries, retries, "cluster", dbCluster)
}

// Outlier detection (the downstream's PassiveHealthCheck) ejects an
// instance after MaxFailures 5xx in a row: it gets no request while
// ejected, the others get them all, and the sidecar counts the ejection.
func TestOutlierDetectionEjectsAFailingInstance(t *testing.T) {
	p := startHTTPPool(t, 3, upstreamConfig(map[string]any{"PassiveHealthCheck": map[string]any{
		"Interval": "1s", "MaxFailures": 3, "BaseEjectionTime": "30s",
		"EnforcingConsecutive5xx": 100, "MaxEjectionPercent": 100,
	}}))
	bad := p.apps[1] // db-2
	bad.SetStatus(http.StatusInternalServerError)

	// Round robin brings db-2 its three failures within nine requests;
	// the bound is for a policy that would not.
	before := bad.Requests()
	for i := 0; bad.Requests()-before < 3; i++ {
		if i == 30 {
			t.Fatalf("db-2 got %d of 30 requests", bad.Requests()-before)
		}
		if r := p.get(t, "/work"); r.code != http.StatusOK && !(r.code == http.StatusInternalServerError && r.body == "db-2") {
			t.Fatalf("GET /work: %v, want 200 or db-2's 500", r)
		}
	}
	p.webProxy.WaitStat(statEjections, 1, "cluster", dbCluster)
	p.webProxy.WaitStat(statEjectedActive, 1, "cluster", dbCluster)

	counts := p.counts()
	for range 30 {
		if r := p.get(t, "/work"); r.code != http.StatusOK || r.body == "db-2" {
			t.Fatalf("GET /work with db-2 ejected: %v", r)
		}
	}
	got := p.since(counts)
	if got[1] != 0 || got[0] == 0 || got[2] == 0 {
		t.Fatalf("with db-2 ejected, the instances got %v of 30 requests; want db-2 none, the others some", got)
	}
	if n := bad.Requests() - before; n != 3 {
		t.Fatalf("db-2 got %d requests in all, want the 3 that ejected it", n)
	}
}

// A circuit breaker of MaxConcurrentRequests 2 (the downstream's Limits)
// lets two requests at a time reach the upstream: the others are refused
// at once with 503 and x-envoy-overloaded, and counted; once the two
// end, requests pass again.
func TestCircuitBreakerCapsConcurrentRequests(t *testing.T) {
	p := startHTTPPool(t, 1, upstreamConfig(map[string]any{"Limits": map[string]any{"MaxConcurrentRequests": 2}}))
	app := p.apps[0]
	before := app.Requests()

	type result struct {
		r   reply
		err error
	}
	results := make(chan result, 6)
	release := app.Hold()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer release()
	for range 6 {
		wg.Go(func() {
			r, err := send(p.client, "GET", p.url+"/slow")
			results <- result{r, err}
		})
	}
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	held, refused := 0, 0
	for held < 2 || refused < 4 {
		select {
		case <-app.Held():
			if held++; held > 2 {
				t.Fatalf("%d requests reached the app at once, want 2", held)
			}
		case res := <-results:
			if res.err != nil || !isOverloaded(res.r) {
				t.Fatalf("while 2 requests are in flight: got %v %v, want 503 with x-envoy-overloaded: true and the overflow body", res.r, res.err)
			}
			refused++
		case <-timeout.C:
			t.Fatalf("within %v, %d requests reached the app and %d were refused; want 2 and 4", waitFor, held, refused)
		}
	}
	if n := app.Requests() - before; n != 2 {
		t.Fatalf("%d requests reached the app, want 2", n)
	}
	p.webProxy.WaitStat(statOverflow, 4, "cluster", dbCluster, "kind", "requests")

	release()
	for range 2 {
		if res := <-results; res.err != nil || res.r.code != http.StatusOK || res.r.body != "db-1" {
			t.Fatalf("a held request, released: %v %v", res.r, res.err)
		}
	}
	for i := range 5 {
		if r := p.get(t, fmt.Sprintf("/after/%d", i)); r.code != http.StatusOK {
			t.Fatalf("after the held requests ended: %v", r)
		}
	}
	p.webProxy.WaitStat(statOverflow, 4, "cluster", dbCluster, "kind", "requests")
}
