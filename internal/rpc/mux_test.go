package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	})
}

// forwardOK makes a gRPC call through the mux at addr and checks its answer.
func forwardOK(ctx context.Context, c *Client, addr net.Addr, path string) error {
	resp, err := c.ForwardHTTP(ctx, addr.String(), &HTTPRequest{Method: "GET", Path: path})
	if err != nil {
		return err
	}
	if resp.Status != 200 || string(resp.Body) != "ok "+path {
		return fmt.Errorf("forward %s: got %d %q, want 200 %q", path, resp.Status, resp.Body, "ok "+path)
	}
	return nil
}

func TestMuxRoutesRaftAndGRPCConcurrently(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, okHandler())
	serveRaftEcho(t, m.RaftLayer())
	client := newClient(t, ClientConfig{})

	const n = 10
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- raftEcho(m.RaftLayer(), m.Addr(), fmt.Sprintf("raft message %d", i))
		}()
		go func() {
			defer wg.Done()
			errs <- forwardOK(t.Context(), client, m.Addr(), fmt.Sprintf("/v1/test/%d", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestMuxUnknownFirstByteDoesNotBreakOthers(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, okHandler())
	serveRaftEcho(t, m.RaftLayer())
	client := newClient(t, ClientConfig{})

	// A raft connection opened before the garbage arrives keeps working.
	raftConn, err := m.RaftLayer().Dial(raftAddr(m.Addr()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raftConn.Close()

	for _, tc := range []struct {
		name string
		send []byte
		// replies is set when the gRPC server answers (its SETTINGS
		// frame) before it reads the bad preface.
		replies bool
	}{
		{"unknown byte", append([]byte{0xff}, "garbage garbage garbage"...), false},
		{"zero byte", []byte{0x00, 0x01, 0x02}, false},
		{"gRPC byte then garbage", []byte("POST / HTTP/1.1\r\nHost: x\r\n\r\nmore than a preface"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", m.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			expectClosedAfter(t, c, tc.replies)

			if err := forwardOK(t.Context(), client, m.Addr(), "/v1/after"); err != nil {
				t.Error(err)
			}
			if err := raftEcho(m.RaftLayer(), m.Addr(), "after"); err != nil {
				t.Error(err)
			}
			if _, err := io.WriteString(raftConn, "still here"); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len("still here"))
			if _, err := io.ReadFull(raftConn, got); err != nil || string(got) != "still here" {
				t.Errorf("earlier raft connection: got %q, %v; want %q", got, err, "still here")
			}
		})
	}
}

func TestMuxClosesSilentConnection(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{FirstByteTimeout: 50 * time.Millisecond})

	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c)
	waitFor(t, "the mux to forget the connection", func() bool { return m.pending.len() == 0 })
}

func TestMuxClosesConnectionNobodyAccepts(t *testing.T) {
	checkGoroutines(t)
	// Nothing accepts on either side: a routed connection waits at most
	// the first-byte timeout for its side.
	m := startMux(t, MuxConfig{FirstByteTimeout: 50 * time.Millisecond})
	for _, first := range []byte{RaftByte, GRPCByte} {
		c, err := net.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{first}); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c)
	}
	waitFor(t, "the mux to forget the connections", func() bool {
		return m.raft.conns.len() == 0 && m.grpc.conns.len() == 0
	})
}

func TestMuxCloseDoesNotWaitForSilentConnections(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{FirstByteTimeout: time.Hour})
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the mux to accept the connection", func() bool { return m.pending.len() == 1 })

	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting after 10s for a connection that never sent a byte")
	}
	expectClosed(t, c)
}

func TestMuxCloseClosesRoutedConnections(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	serveRaftEcho(t, m.RaftLayer())
	dialer := startMux(t, MuxConfig{})

	c, err := dialer.RaftLayer().Dial(raftAddr(m.Addr()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)

	// The dialing side's Close closes the connections it dialed.
	c2, err := dialer.RaftLayer().Dial(raftAddr(dialer.Addr()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dialer.Close()
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on a dialed connection after Mux.Close succeeded")
	}
	if _, err := dialer.RaftLayer().Dial(raftAddr(m.Addr()), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Dial after Close: %v, want net.ErrClosed", err)
	}
	if _, err := m.RaftLayer().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestRaftLayerCloseLeavesGRPC(t *testing.T) {
	checkGoroutines(t)
	m := startMux(t, MuxConfig{})
	startServer(t, m, okHandler())
	client := newClient(t, ClientConfig{})

	if err := m.RaftLayer().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RaftLayer().Dial(raftAddr(m.Addr()), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Dial after RaftLayer.Close: %v, want net.ErrClosed", err)
	}
	// A raft connection arriving now is closed.
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{RaftByte}); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if err := forwardOK(t.Context(), client, m.Addr(), "/v1/x"); err != nil {
		t.Fatal(err)
	}
}
