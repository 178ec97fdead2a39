package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// startWSApp serves WebSocket handshakes on a free loopback port: 101,
// then what it reads comes back upper-cased until the client's end. It
// stops, its handlers done, when the test ends.
func startWSApp(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	srv := &http.Server{ReadHeaderTimeout: waitFor, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, err := conn.Write(bytes.ToUpper(buf[:n])); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// wsHandshake sends a WebSocket handshake for path to addr and reads the
// answer's head; the connection is the caller's to close.
func wsHandshake(addr, path string) (net.Conn, *bufio.Reader, *http.Response, error) {
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		return nil, nil, nil, err
	}
	c.SetDeadline(time.Now().Add(waitFor))
	_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: db\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return c, br, resp, nil
}

// A WebSocket connection goes through web's and db's sidecars (db an
// http service, mTLS between the sidecars): db's intentions decide the
// handshake by its path like any request, and an allowed one becomes a
// tunnel that carries messages both ways.
func TestWebSocketThroughSidecars(t *testing.T) {
	a := StartAgent(t)
	a.SetMeshDefaultPolicy("deny")
	a.PutConfigEntry(map[string]any{"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
	a.PutConfigEntry(map[string]any{"Kind": "service-intentions", "Name": "db", "Sources": []any{
		map[string]any{"Name": "web", "Permissions": []any{
			perm("deny", map[string]any{"PathPrefix": "/admin"}),
			perm("allow", map[string]any{"PathPrefix": "/"}),
		}},
	}})
	db := a.Register(ServiceOptions{Name: "db", Port: startWSApp(t)})
	web := a.Register(ServiceOptions{Name: "web", Port: freePort(t), Upstreams: []string{"db"}})
	dbProxy := a.StartSidecar(db)
	a.StartSidecar(web)
	addr := web.Upstreams["db"]

	var c net.Conn
	var br *bufio.Reader
	eventually(t, "the handshake through the sidecars", func() error {
		conn, r, resp, err := wsHandshake(addr, "/chat")
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			conn.Close()
			return fmt.Errorf("handshake answered %s", resp.Status)
		}
		c, br = conn, r
		return nil
	})
	defer c.Close()
	for _, msg := range []string{"hello", strings.Repeat("m", 64<<10), "bye"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
			t.Fatalf("message of %d bytes came back as %d bytes %.20q, %v", len(msg), len(got), got, err)
		}
	}
	dbProxy.WaitStat("trellis_proxy_http_upgrades_total", 1, "result", "tunneled")

	// The intentions apply to the handshake.
	conn, _, resp, err := wsHandshake(addr, "/admin/chat")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusForbidden || string(body) != rbacDenied("db") {
		t.Fatalf("a denied handshake: %s %q", resp.Status, body)
	}
}
