package dataplane

// The L7 pieces of the harness: an HTTP application with switches (fail,
// hold), clients that read whole responses, and a pool of HTTP instances
// behind their sidecars.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTPApp is a test HTTP application: it answers every request with its
// name as the body, with status 200 unless told otherwise (SetStatus, or
// the request's "status" query parameter). It records what reached it,
// so that a test can tell that a refused request never did, and can hold
// requests until the test releases them.
type HTTPApp struct {
	name   string
	ln     net.Listener
	srv    *http.Server
	status atomic.Int32 // the status answered; 0 is 200
	// held gets a value for each request the app starts holding.
	held chan struct{}

	mu      sync.Mutex
	seen    []string      // guarded by mu: "METHOD /path" of each request, in order
	release chan struct{} // guarded by mu: while not nil, requests wait until it is closed
	closed  bool          // guarded by mu: no handler may start once set
	wg      sync.WaitGroup
}

// StartHTTPApp serves an HTTPApp on a free loopback port until the test
// ends; held requests are released, and the handlers waited for, then.
func StartHTTPApp(t testing.TB, name string) *HTTPApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &HTTPApp{name: name, ln: ln, held: make(chan struct{}, 1024)}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: waitFor}
	served := make(chan struct{})
	go func() {
		defer close(served)
		a.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		a.mu.Lock()
		a.closed = true
		if a.release != nil {
			close(a.release)
			a.release = nil
		}
		a.mu.Unlock()
		a.srv.Close()
		<-served
		a.wg.Wait()
	})
	return a
}

// Port is the port the app listens on.
func (a *HTTPApp) Port() int { return a.ln.Addr().(*net.TCPAddr).Port }

// Requests is how many requests reached the app.
func (a *HTTPApp) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// Seen lists the requests that reached the app, "METHOD /path" each.
func (a *HTTPApp) Seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

// SetStatus makes the app answer every request with code (200: healthy
// again).
func (a *HTTPApp) SetStatus(code int) { a.status.Store(int32(code)) }

// Hold makes the app hold each request that arrives from now on, sending
// a value on Held, until release is called; release answers them all.
func (a *HTTPApp) Hold() (release func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.release != nil {
		panic("HTTPApp.Hold: already holding")
	}
	ch := make(chan struct{})
	a.release = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			if a.release == ch {
				close(ch)
				a.release = nil
			}
			a.mu.Unlock()
		})
	}
}

// Held receives a value each time the app starts holding a request.
func (a *HTTPApp) Held() <-chan struct{} { return a.held }

func (a *HTTPApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	a.wg.Add(1)
	defer a.wg.Done()
	a.seen = append(a.seen, r.Method+" "+r.URL.Path)
	release := a.release
	a.mu.Unlock()

	io.Copy(io.Discard, r.Body)
	if release != nil {
		a.held <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
	}
	code := int(a.status.Load())
	if s := r.URL.Query().Get("status"); s != "" {
		code, _ = strconv.Atoi(s)
	}
	if code == 0 {
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	io.WriteString(w, a.name)
}

// ---- HTTP clients ----

// reply is an HTTP response, read whole.
type reply struct {
	code   int
	body   string
	header http.Header
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.code, r.body) }

// newClient is an HTTP/1.1 client whose idle connections are closed when
// the test ends.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitFor}
}

// send makes a request with headers hdr (name, value, ...) and reads the
// whole response.
func send(c *http.Client, method, url string, hdr ...string) (reply, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(body), header: resp.Header}, err
}

// httpConn is one client connection carrying HTTP/1.1 requests one after
// another, so that a test knows they all share it.
type httpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t testing.TB, addr string) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{c: c, r: bufio.NewReader(c)}
}

// do sends a request on the connection and reads its response, failing
// if the server meant to close the connection after it.
func (h *httpConn) do(method, target string, hdr ...string) (reply, error) {
	req, err := http.NewRequest(method, "http://upstream"+target, nil)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(h.c); err != nil {
		return reply{}, err
	}
	resp, err := http.ReadResponse(h.r, req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	if resp.Close {
		return reply{}, fmt.Errorf("%s %s: the connection is closed after the response %d %q", method, target, resp.StatusCode, body)
	}
	return reply{code: resp.StatusCode, body: string(body), header: resp.Header}, nil
}

// ---- a pool of HTTP instances ----

// httpPool is web and n instances of db, an http service (service-defaults
// Protocol), each an HTTPApp answering with its instance ID behind its own
// sidecar.
type httpPool struct {
	a        *Agent
	apps     []*HTTPApp
	dbs      []*Service
	webProxy *Proxy
	url      string // http:// web's local listener for db
	client   *http.Client
}

// startHTTPPool writes db's service-defaults and entries (config
// entries, before any sidecar starts, so that they are in the sidecars'
// first configuration), starts the mesh and waits until requests from
// web have reached every instance.
func startHTTPPool(t *testing.T, n int, entries ...any) *httpPool {
	t.Helper()
	p := &httpPool{a: StartAgent(t), client: newClient(t)}
	p.a.PutConfigEntry(map[string]any{"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
	for _, e := range entries {
		p.a.PutConfigEntry(e)
	}
	for i := 1; i <= n; i++ {
		id := "db-" + strconv.Itoa(i)
		app := StartHTTPApp(t, id)
		s := p.a.Register(ServiceOptions{Name: "db", ID: id, Port: app.Port()})
		p.apps = append(p.apps, app)
		p.dbs = append(p.dbs, s)
		p.a.StartSidecar(s)
	}
	web := p.a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
	p.webProxy = p.a.StartSidecar(web)
	p.url = "http://" + web.Upstreams["db"]
	p.reachesAll(t, "web reaches every db instance")
	return p
}

// reachesAll waits until requests from web have been answered by every
// instance of db.
func (p *httpPool) reachesAll(t *testing.T, what string) {
	t.Helper()
	seen := map[string]bool{}
	eventually(t, what, func() error {
		r, err := send(p.client, "GET", p.url+"/ready")
		if err != nil {
			return err
		}
		if r.code != http.StatusOK {
			return fmt.Errorf("GET /ready: %v", r)
		}
		seen[r.body] = true
		if len(seen) < len(p.apps) {
			return fmt.Errorf("answered only by %v", slices.Sorted(maps.Keys(seen)))
		}
		return nil
	})
}

// get sends a GET for path through web and fails the test if it gets no
// response.
func (p *httpPool) get(t *testing.T, path string, hdr ...string) reply {
	t.Helper()
	r, err := send(p.client, "GET", p.url+path, hdr...)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

// counts is how many requests each instance has received so far.
func (p *httpPool) counts() []int {
	out := make([]int, len(p.apps))
	for i, a := range p.apps {
		out[i] = a.Requests()
	}
	return out
}

// since is, for each instance, the requests it received after before
// (an earlier counts()).
func (p *httpPool) since(before []int) []int {
	now := p.counts()
	for i := range now {
		now[i] -= before[i]
	}
	return now
}

// Metric names of the sidecar's L7 /stats, and the label value of an
// upstream cluster of db.
const (
	statHTTPDenied    = "trellis_proxy_http_requests_denied_total"
	statRetries       = "trellis_proxy_upstream_retries_total"
	statOverflow      = "trellis_proxy_upstream_overflow_total"
	statEjections     = "trellis_proxy_outlier_ejections_total"
	statEjectedActive = "trellis_proxy_outlier_ejections_active"
	dbCluster         = "db.default.*"
)

// rbacDenied is the body of a request the intentions of service deny.
func rbacDenied(service string) string {
	return "RBAC: access denied: the intentions of " + service + " do not allow this request\n"
}

// isOverloaded reports whether r is a circuit breaker's refusal.
func isOverloaded(r reply) bool {
	return r.code == http.StatusServiceUnavailable && r.header.Get("X-Envoy-Overloaded") == "true" &&
		strings.Contains(r.body, "reset reason: overflow")
}
