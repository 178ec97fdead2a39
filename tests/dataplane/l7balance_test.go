package dataplane

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// resolver is db's service-resolver with load balancer lb.
func resolver(lb map[string]any) map[string]any {
	return map[string]any{"Kind": "service-resolver", "Name": "db", "LoadBalancer": lb}
}

// At L7 each request is balanced, not each connection: requests on one
// client connection are spread round robin (the default policy) over
// db's instances.
func TestL7RoundRobinPerRequest(t *testing.T) {
	p := startHTTPPool(t, 3)
	conn := dialHTTP(t, p.url[len("http://"):])
	const n = 30
	got := map[string]int{}
	for i := range n {
		r, err := conn.do("GET", fmt.Sprintf("/item/%d", i))
		if err != nil || r.code != http.StatusOK {
			t.Fatalf("request %d: %v %v", i, r, err)
		}
		got[r.body]++
	}
	// Round robin gives each of 3 instances n/3 of n sequential
	// requests.
	for _, s := range p.dbs {
		if c := got[s.ID]; c < n/3-1 || c > n/3+1 {
			t.Errorf("%s got %d of %d requests on one connection, want %d±1: %v", s.ID, c, n, n/3, got)
		}
	}
}

// least_request (service-resolver) sends requests away from an instance
// that holds the ones it got: round robin would send it a third.
func TestL7LeastRequestAvoidsABusyInstance(t *testing.T) {
	// With 4 draws, a request goes to the busy instance only when every
	// draw is it (1 in 81), so that the bound below holds but for a
	// vanishing chance.
	p := startHTTPPool(t, 3, resolver(map[string]any{"Policy": "least_request",
		"LeastRequestConfig": map[string]any{"ChoiceCount": 4}}))
	busy := p.apps[0] // db-1
	type result struct {
		r   reply
		err error
	}
	const n = 30
	results := make(chan result, n)
	release := busy.Hold()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer release()
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	// One request at a time: each either is answered (by db-2 or db-3)
	// or stays in flight at db-1.
	held := 0
	for i := range n {
		wg.Go(func() {
			r, err := send(p.client, "GET", fmt.Sprintf("%s/item/%d", p.url, i))
			results <- result{r, err}
		})
		select {
		case <-busy.Held():
			held++
		case res := <-results:
			if res.err != nil || res.r.code != http.StatusOK || res.r.body == "db-1" {
				t.Fatalf("request %d: %v %v", i, res.r, res.err)
			}
		case <-timeout.C:
			t.Fatalf("request %d: neither answered nor held within %v", i, waitFor)
		}
	}
	if held > 5 {
		t.Fatalf("db-1, holding every request it got, got %d of %d; want the first and few others (round robin: %d)", held, n, n/3)
	}
	release()
	for range held {
		if res := <-results; res.err != nil || res.r.code != http.StatusOK || res.r.body != "db-1" {
			t.Fatalf("a request held by db-1, released: %v %v", res.r, res.err)
		}
	}
}

// ring_hash with a header hash policy (service-resolver) sends every
// request with the same x-user to the same instance, and different users
// to different instances.
func TestL7RingHashSticksAKeyToAnInstance(t *testing.T) {
	p := startHTTPPool(t, 3, resolver(map[string]any{"Policy": "ring_hash",
		"HashPolicies": []any{map[string]any{"Field": "header", "FieldValue": "x-user"}}}))
	owner := map[string]string{} // user → instance
	for round := range 4 {
		for u := range 20 {
			user := fmt.Sprintf("user-%d", u)
			r := p.get(t, "/cart", "x-user", user)
			if r.code != http.StatusOK {
				t.Fatalf("GET /cart as %s: %v", user, r)
			}
			if o, ok := owner[user]; ok && o != r.body {
				t.Fatalf("round %d: %s's request went to %s, before to %s", round, user, r.body, o)
			}
			owner[user] = r.body
		}
	}
	instances := map[string]int{}
	for _, o := range owner {
		instances[o]++
	}
	if len(instances) < 2 {
		t.Fatalf("20 users all hashed to %v: want them spread", slices.Collect(maps.Keys(instances)))
	}
}
