package rpc

import (
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// checkGoroutines fails the test if, once every later cleanup has run,
// more goroutines are running than when it was called. Call it first, so
// that its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines running after cleanup, %d before:\n%s", runtime.NumGoroutine(), before, buf)
				return
			}
			<-time.After(5 * time.Millisecond)
		}
	})
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

// startMux starts a Mux on a loopback port, closed at cleanup.
func startMux(t *testing.T, cfg MuxConfig) *Mux {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(l, cfg)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Mux.Close: %v", err)
		}
	})
	return m
}

// startServer serves h on m's gRPC side until cleanup.
func startServer(t *testing.T, m *Mux, h http.Handler) *Server {
	t.Helper()
	s := NewServer(h)
	done := make(chan error, 1)
	go func() { done <- s.Serve(m.GRPCListener()) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// newClient returns a Client closed at cleanup.
func newClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	c := NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

// serveRaftEcho accepts raft connections on l and echoes what they send,
// until cleanup closes l.
func serveRaftEcho(t *testing.T, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// raftEcho dials the raft side at addr, sends msg and checks that it
// comes back.
func raftEcho(layer *RaftLayer, addr net.Addr, msg string) error {
	c, err := layer.Dial(raftAddr(addr), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return errors.New("raft echo: got " + string(got) + ", want " + msg)
	}
	return nil
}

// expectClosed reads from c until the peer closes it. It fails the test if
// data arrives or if nothing happens within 10s, a safety net only: the
// peer is expected to close c long before.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	expectClosedAfter(t, c, false)
}

// expectClosedAfter is expectClosed, discarding what the peer sends
// first when allowData is set.
func expectClosedAfter(t *testing.T, c net.Conn, allowData bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 && !allowData {
			t.Fatalf("read %q, want the connection closed", buf[:n])
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open after 10s, want it closed")
		}
		// EOF, or a reset when the peer closed with our bytes unread.
		if err != io.EOF && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("read error %v, want EOF or connection reset", err)
		}
		return
	}
}

func raftAddr(a net.Addr) raft.ServerAddress { return raft.ServerAddress(a.String()) }
