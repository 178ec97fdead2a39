package checks

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestHTTPStatusCodes(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		wantStatus string
		wantOutput string // after the URL
	}{
		{"ok", http.StatusOK, structs.HealthPassing, ": 200 OK Output: hello"},
		{"no content", http.StatusNoContent, structs.HealthPassing, ": 204 No Content Output: "},
		{"too many requests", http.StatusTooManyRequests, structs.HealthWarning, ": 429 Too Many Requests Output: hello"},
		{"server error", http.StatusInternalServerError, structs.HealthCritical, ": 500 Internal Server Error Output: hello"},
		{"redirect target missing", http.StatusNotFound, structs.HealthCritical, ": 404 Not Found Output: hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.code)
				io.WriteString(w, "hello")
			}))
			defer srv.Close()
			n := newFakeNotifier(t)
			r := start(t, "web", &structs.CheckType{HTTP: srv.URL + "/health", Interval: dur(testInterval)}, Options{Notify: n})
			defer r.Stop()

			got := n.next(t)
			if got.checkID != "web" || got.status != tt.wantStatus {
				t.Errorf("got %s %s, want web %s", got.checkID, got.status, tt.wantStatus)
			}
			if want := "HTTP GET " + srv.URL + "/health" + tt.wantOutput; got.output != want {
				t.Errorf("output = %q, want %q", got.output, want)
			}
		})
	}
}

func TestHTTPConnectionRefused(t *testing.T) {
	n := newFakeNotifier(t)
	start(t, "web", &structs.CheckType{HTTP: "http://" + closedAddr(t) + "/", Interval: dur(testInterval)}, Options{Notify: n})
	got := n.next(t)
	if got.status != structs.HealthCritical {
		t.Errorf("status = %s, want critical", got.status)
	}
	wantContains(t, got.output, "connection refused")
}

func TestHTTPRequestShape(t *testing.T) {
	type seen struct {
		method, host, body, ua, accept string
		foo                            []string
	}
	tests := []struct {
		name string
		def  structs.CheckType
		want seen
	}{
		{
			name: "defaults",
			def:  structs.CheckType{},
			want: seen{method: "GET", ua: "Consul Health Check", accept: "text/plain, text/*, */*"},
		},
		{
			name: "method headers host body",
			def: structs.CheckType{
				Method: "POST",
				Body:   `{"ping":1}`,
				Header: map[string][]string{
					"x-foo": {"a", "b"},
					"Host":  {"example.test"},
				},
			},
			want: seen{method: "POST", host: "example.test", body: `{"ping":1}`, ua: "Consul Health Check", accept: "text/plain, text/*, */*", foo: []string{"a", "b"}},
		},
		{
			name: "overridden defaults",
			def: structs.CheckType{
				Header: map[string][]string{"User-Agent": {"probe/1"}, "accept": {"application/json"}},
			},
			want: seen{method: "GET", ua: "probe/1", accept: "application/json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan seen, 100)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- seen{method: r.Method, host: r.Host, body: string(b), ua: r.UserAgent(), accept: r.Header.Get("Accept"), foo: r.Header.Values("X-Foo")}
			}))
			defer srv.Close()
			if tt.want.host == "" {
				tt.want.host = strings.TrimPrefix(srv.URL, "http://")
			}
			def := tt.def
			def.HTTP = srv.URL
			def.Interval = dur(testInterval)
			n := newFakeNotifier(t)
			r := start(t, "web", &def, Options{Notify: n})
			defer r.Stop()

			res := n.next(t)
			if res.status != structs.HealthPassing {
				t.Fatalf("status = %s (%s), want passing", res.status, res.output)
			}
			wantPrefix(t, res.output, "HTTP "+tt.want.method+" "+srv.URL+": 200 OK")
			s := <-got // the server answered, so it has sent
			if fmt.Sprint(s) != fmt.Sprint(tt.want) {
				t.Errorf("server saw %+v, want %+v", s, tt.want)
			}
		})
	}
}

func TestHTTPOutputTruncated(t *testing.T) {
	body := strings.Repeat("x", 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer srv.Close()
	n := newFakeNotifier(t)
	start(t, "web", &structs.CheckType{HTTP: srv.URL, Interval: dur(testInterval)}, Options{Notify: n})
	got := n.next(t)
	want := "HTTP GET " + srv.URL + ": 200 OK Output: " + body[:MaxOutputSize]
	if got.output != want {
		t.Errorf("output has %d bytes, want %d (body cut to %d)", len(got.output), len(want), MaxOutputSize)
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	n := newFakeNotifier(t)
	startAt := time.Now()
	start(t, "web", &structs.CheckType{HTTP: srv.URL, Interval: dur(time.Second), Timeout: dur(50 * time.Millisecond)}, Options{Notify: n})
	got := n.next(t)
	if got.status != structs.HealthCritical {
		t.Errorf("status = %s, want critical", got.status)
	}
	wantContains(t, got.output, "context deadline exceeded")
	if d := got.at.Sub(startAt); d < 50*time.Millisecond {
		t.Errorf("timed out after %s, before the 50ms timeout", d)
	}
}

func TestHTTPTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake is expected
	srv.StartTLS()
	defer srv.Close()

	t.Run("skip verify", func(t *testing.T) {
		n := newFakeNotifier(t)
		start(t, "web", &structs.CheckType{HTTP: srv.URL, TLSSkipVerify: true, Interval: dur(testInterval)}, Options{Notify: n})
		got := n.next(t)
		if got.status != structs.HealthPassing {
			t.Errorf("status = %s (%s), want passing", got.status, got.output)
		}
	})
	t.Run("verify", func(t *testing.T) {
		n := newFakeNotifier(t)
		start(t, "web", &structs.CheckType{HTTP: srv.URL, Interval: dur(testInterval)}, Options{Notify: n})
		got := n.next(t)
		if got.status != structs.HealthCritical {
			t.Errorf("status = %s, want critical", got.status)
		}
		wantContains(t, got.output, "certificate")
	})
}

// Stop must cancel a request in flight rather than wait out its timeout.
func TestHTTPStopCancelsInFlight(t *testing.T) {
	arrived := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		cancelled <- struct{}{}
	}))
	defer srv.Close()

	n := newFakeNotifier(t)
	r := start(t, "web", &structs.CheckType{HTTP: srv.URL, Interval: dur(time.Hour), Timeout: dur(time.Hour)}, Options{Notify: n})
	select {
	case <-arrived:
	case <-time.After(waitTimeout):
		t.Fatal("request never arrived")
	}

	stopped := make(chan struct{})
	go func() { r.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop did not return with a request in flight")
	}
	select {
	case <-cancelled:
	case <-time.After(waitTimeout):
		t.Fatal("server never saw the request cancelled")
	}
	if len(n.ch) != 0 {
		t.Errorf("cancelled request was reported: %+v", <-n.ch)
	}
}
