package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// seen is what wsApp saw of an upgrade request.
type seen struct {
	connection, upgrade, settings string
}

// wsApp answers an upgrade to websocket with 101 and then sends back
// what it reads, upper-cased, until the client's end, which it passes
// on as its own (a half-close); other requests get 426. It reports the
// upgrade fields of each request it gets on reqs.
func wsApp(t testing.TB, reqs chan<- seen) net.Addr {
	return benchAppWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reqs != nil {
			reqs <- seen{r.Header.Get("Connection"), r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings")}
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-App: yes\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, err := conn.Write(bytes.ToUpper(buf[:n])); err != nil {
					return
				}
			}
			if err != nil {
				conn.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, conn) // until the client closes
				return
			}
		}
	}))
}

const wsHandshake = "GET /chat HTTP/1.1\r\nHost: db\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// upgradeVia sends req (the WebSocket handshake, and what follows) to a
// and returns the connection, its reader and the response head.
func upgradeVia(t *testing.T, a net.Addr, req string) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), br, resp
}

// echoes checks that what is written to c comes back upper-cased.
func echoes(t *testing.T, c net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("reading the echo of %q: %v", msg, err)
	}
	if string(got) != strings.ToUpper(msg) {
		t.Fatalf("echo %q, want %q", got, strings.ToUpper(msg))
	}
}

// A WebSocket upgrade goes through a pair of sidecars as the generator
// configures them (mTLS, HTTP/1.1 between them): the handshake reaches
// the app with its upgrade fields, the 101 comes back, and the tunnel
// carries bytes both ways, bytes sent with the handshake and half-closes
// included.
func TestWebSocketThroughPair(t *testing.T) {
	reqs := make(chan seen, 1)
	a := wsApp(t, reqs)
	web := benchPair(t, a, "http")

	// A first message right behind the handshake, read ahead by the
	// sidecar before the 101.
	c, br, resp := upgradeVia(t, web, wsHandshake+"early")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: %s %q", resp.Status, body)
	}
	if got := <-reqs; !strings.EqualFold(got.connection, "upgrade") || got.upgrade != "websocket" {
		t.Errorf("the app saw Connection %q, Upgrade %q", got.connection, got.upgrade)
	}
	if resp.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") || resp.Header.Get("X-App") != "yes" {
		t.Errorf("101 header: %v", resp.Header)
	}
	got := make([]byte, len("early"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "EARLY" {
		t.Fatalf("the early message came back as %q, %v", got, err)
	}
	echoes(t, c, br, "hello")
	echoes(t, c, br, strings.Repeat("x", 100<<10)) // beyond one TLS record and copy buffer

	// Our half-close reaches the app, whose own comes back.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the half-close: %q, %v", rest, err)
	}
}

// withUpgrades sets the upgrade_configs of cfg's listener "svc".
func withUpgrades(t *testing.T, cfg Config, ups ...*hcmv3.HttpConnectionManager_UpgradeConfig) Config {
	cfg = cloneL7(cfg)
	editHCM(t, &cfg, func(h *hcmv3.HttpConnectionManager) { h.UpgradeConfigs = ups })
	return cfg
}

func websocketOn() *hcmv3.HttpConnectionManager_UpgradeConfig {
	return &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "WebSocket"}
}

// An upgrade the listener does not list is refused with 403 before it
// reaches the app, as Envoy does, and counted.
func TestUpgradeRefused(t *testing.T) {
	reqs := make(chan seen, 1)
	a := wsApp(t, reqs)
	cfg := edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}})
	on := withUpgrades(t, cfg, websocketOn())
	for name, tc := range map[string]struct {
		cfg Config
		req string
	}{
		"none":     {cfg, wsHandshake},
		"disabled": {withUpgrades(t, cfg, &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}), wsHandshake},
		"other":    {withUpgrades(t, cfg, &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: "spdy/3"}), wsHandshake},
		// As Envoy, the whole field is the protocol.
		"several protocols": {on, strings.Replace(wsHandshake, "Upgrade: websocket", "Upgrade: websocket, h2c", 1)},
		"split protocols":   {on, strings.Replace(wsHandshake, "Upgrade: websocket", "Upgrade: websocket\r\nUpgrade: smtp", 1)},
		// A body would run on into the tunnel.
		"with a body": {on, strings.Replace(wsHandshake, "\r\n\r\n", "\r\nContent-Length: 2\r\n\r\nhi", 1)},
		"chunked":     {on, strings.Replace(wsHandshake, "\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1)},
	} {
		t.Run(name, func(t *testing.T) {
			p, svc := edge(t, tc.cfg, nil)
			_, _, resp := upgradeVia(t, svc, tc.req)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("got %s, want 403", resp.Status)
			}
			select {
			case s := <-reqs:
				t.Fatalf("the app got the upgrade: %+v", s)
			default:
			}
			if got := metric(t, p, "trellis_proxy_http_upgrades_total", "listener", "svc", "result", "refused"); got != 1 {
				t.Errorf("refused upgrades counted %v, want 1", got)
			}
		})
	}
}

// An h2c upgrade is dropped, as Envoy's HTTP/1 codec does: the request
// is served as HTTP/1.1, and the app sees none of its fields.
func TestUpgradeH2CDropped(t *testing.T) {
	reqs := make(chan seen, 1)
	a := wsApp(t, reqs)
	_, svc := edge(t, withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}}), websocketOn()), nil)
	rc := dialRaw(t, svc)
	rc.send(t, "GET / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	resp, _ := rc.read(t, "GET")
	if resp.StatusCode != http.StatusUpgradeRequired { // the app's answer to a plain request
		t.Fatalf("got %s, want the app's 426", resp.Status)
	}
	if s := <-reqs; s != (seen{}) {
		t.Errorf("the app saw %+v, want no upgrade fields", s)
	}
}

// An upgrade the upstream declines gets its answer as any response.
func TestUpgradeDeclined(t *testing.T) {
	a := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no websockets here", http.StatusBadRequest)
	}))
	_, svc := edge(t, withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a.addr}}), websocketOn()), nil)
	_, _, resp := upgradeVia(t, svc, wsHandshake)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
	if resp.StatusCode != http.StatusBadRequest || string(body) != "no websockets here\n" {
		t.Fatalf("got %s %q", resp.Status, body)
	}
}

// The route's timeout ends at the 101: the tunnel outlives it. (Waiting
// past the timeout cannot fail falsely: a late timer only makes the test
// pass without proving anything.)
func TestTunnelOutlivesRouteTimeout(t *testing.T) {
	a := wsApp(t, nil)
	rc := svcRoutes("c", func(ra *routev3.RouteAction) { ra.Timeout = durationpb.New(50 * time.Millisecond) })
	_, svc := edge(t, withUpgrades(t, edgeConfig(rc, map[string][]net.Addr{"c": {a}}), websocketOn()), nil)
	c, br, resp := upgradeVia(t, svc, wsHandshake)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	echoes(t, c, br, "before")
	<-time.After(250 * time.Millisecond) // five route timeouts
	echoes(t, c, br, "after")
}

// Closing the proxy ends its tunnels.
func TestProxyCloseEndsTunnels(t *testing.T) {
	a := wsApp(t, nil)
	p, svc := edge(t, withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}}), websocketOn()), nil)
	c, br, resp := upgradeVia(t, svc, wsHandshake)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	echoes(t, c, br, "hi")
	if got := metric(t, p, "trellis_proxy_http_upgrades_total", "listener", "svc", "result", "tunneled"); got != 1 {
		t.Errorf("tunneled upgrades counted %v, want 1", got)
	}
	p.Close()
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("after Close: %v", err)
	}
}

// Bytes the client sends ahead of the 101 reach the app first, in the
// order sent: those the loop's reader holds, then the byte its watch
// read from the connection while the handshake waited on the app.
func TestUpgradeAheadBytesInOrder(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	a := benchAppWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // back as it came, until the client's end
	}))
	p, svc := edge(t, withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}}), websocketOn()), nil)
	c, err := net.Dial("tcp", svc.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, wsHandshake+"AB") // "AB" in the loop's reader
	within(t, started, "the handshake reaching the app")
	io.WriteString(c, "C")
	waitFor(t, "the watch reading C", func() bool {
		dc := onlyDownConn(p, "svc")
		dc.wmu.Lock()
		defer dc.wmu.Unlock()
		return dc.hasByte
	})
	close(release)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ABC" {
		t.Fatalf("the app got %q back to us, %v; want ABC", got, err)
	}
}

// onlyDownConn is the one downstream connection of p's listener name.
func onlyDownConn(p *Proxy, name string) *downConn {
	p.mu.Lock()
	l := p.listeners[name]
	p.mu.Unlock()
	l.mu.Lock()
	s := l.srv
	l.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var c *downConn
	for dc := range s.down {
		c = dc
	}
	return c
}

// Only the protocol asked for goes through: a 101 to another is answered
// 502, and the upstream connection closed.
func TestUpgradeOtherProtocolRefused(t *testing.T) {
	a := benchAppWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(io.Discard, brw)
	}))
	_, svc := edge(t, withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}}), websocketOn()), nil)
	_, _, resp := upgradeVia(t, svc, wsHandshake)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %s, want 502", resp.Status)
	}
}

// A tunnel with nothing going either way for the stream idle timeout is
// closed.
func TestTunnelIdleTimeout(t *testing.T) {
	a := wsApp(t, nil)
	cfg := withUpgrades(t, edgeConfig(svcRoutes("c", nil), map[string][]net.Addr{"c": {a}}), websocketOn())
	editHCM(t, &cfg, func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(100 * time.Millisecond) })
	_, svc := edge(t, cfg, nil)
	c, br, resp := upgradeVia(t, svc, wsHandshake)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	echoes(t, c, br, "still here")
	if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil && !isReset(err) {
		t.Fatalf("an idle tunnel: read %q, %v; want its end", rest, err)
	}
}
