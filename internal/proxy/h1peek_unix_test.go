//go:build unix

package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// An idle connection that the upstream closed, or sent something on (a
// 408 before closing, a TLS close_notify), is found out before a request
// is written on it: even a POST, which is not sent again once it may have
// reached the upstream, goes on a new connection.
func TestH1PeekBeforeReuse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(c net.Conn) bool // the first connection, once idle
	}{
		{"closed", func(net.Conn) bool { return false }},
		{"sent a 408", func(c net.Conn) bool {
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			idle := make(chan struct{})
			app := newRawApp(t, func(conn int, c net.Conn, req *http.Request) bool {
				answer(c, req, "200 OK", fmt.Sprintf("conn %d", conn))
				if conn != 1 {
					return true
				}
				<-idle
				return tc.after(c)
			})
			p, tr := h1Edge(t, []net.Addr{app.addr()}, nil)
			post := func() string {
				_, body := send(t, tr, h1Req(testCtx(t), "POST", app.addr(), "/", strings.NewReader("x"), 1))
				return body
			}
			if body := post(); body != "conn 1" {
				t.Fatalf("got %q", body)
			}
			waitIdle(t, tr, 1)
			tr.mu.Lock()
			pc := tr.hosts[app.addr().String()].idle[0]
			tr.mu.Unlock()
			close(idle)
			waitFor(t, "the peek to see it", pc.peerClosed)
			if body := post(); body != "conn 2" {
				t.Fatalf("got %q, want the second connection's answer", body)
			}
			if n := app.requests.Load(); n != 2 {
				t.Errorf("the app got %d requests, want 2", n)
			}
			waitOpenConns(t, p, 1)
		})
	}
}
