package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// withTCPIdle sets the idle_timeout of cfg's tcp_proxy filters.
func withTCPIdle(t *testing.T, cfg Config, d time.Duration) Config {
	t.Helper()
	n := 0
	for _, l := range cfg.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var tp tcpproxyv3.TcpProxy
				if f.GetTypedConfig().UnmarshalTo(&tp) != nil {
					continue
				}
				tp.IdleTimeout = durationpb.New(d)
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(&tp)}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no tcp_proxy filter")
	}
	return cfg
}

// A tcp_proxy connection stays open while bytes flow and is closed once
// none went either way for idle_timeout. The deadline behind it is moved
// on lazily (conn.go): one that fires before the connection has been idle
// long enough is set again, not taken for the end.
func TestTCPProxyIdleTimeout(t *testing.T) {
	t.Parallel() // mostly waiting
	m := newMesh(t)
	const idle = time.Second
	if err := m.web.Apply(withTCPIdle(t, configOf(t, m.webSnap), idle)); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, m.upstream)
	defer c.Close()
	// Traffic every tenth of idle for over twice idle: never closed.
	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	for range 25 {
		<-tick.C
		echoOnce(t, c, "ping")
	}
	// Then silence: the proxy closes the connection.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read after idle = %d, %v; want the proxy to close the connection", n, err)
	}
}

// sinkApp reads and drops what its clients send, and never writes.
func sinkApp(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// Bytes flowing one way only keep a tcp_proxy connection open: the
// idle half's deadline fires, finds the other half busy and is set
// again.
func TestTCPProxyIdleOneWay(t *testing.T) {
	t.Parallel() // mostly waiting
	const idle = time.Second
	authority := newCA(t, td)
	roots := []string{authority.root.CertPEM}
	dbSnap := snapshot("db", authority.leaf(t, td, "db"), roots, sinkApp(t))
	dbSnap.DefaultAllow = true
	db := newProxy(t, withTCPIdle(t, configOf(t, dbSnap), idle))
	webSnap := snapshot("web", authority.leaf(t, td, "web"), roots, newEcho(t).port())
	webSnap.Upstreams = []proxycfg.Upstream{upstream("db", addr(t, db, publicName()))}
	web := newProxy(t, withTCPIdle(t, configOf(t, webSnap), idle))
	c := dialTCP(t, addr(t, web, upstreamName(webSnap.Upstreams[0])))
	defer c.Close()
	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	for range 25 {
		<-tick.C
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatalf("write while busy: %v", err)
		}
	}
	// Still open: a read waits (the sink never answers) rather than
	// seeing the end.
	c.SetReadDeadline(time.Now().Add(idle / 10))
	if n, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read right after the traffic = %d, %v; want the connection still open", n, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read after idle = %d, %v; want the proxy to close the connection", n, err)
	}
}
