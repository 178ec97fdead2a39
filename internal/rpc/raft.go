package rpc

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// RaftLayer is the raft side of a Mux, a raft.StreamLayer: it accepts the
// connections that started with RaftByte and dials peers' ports, sending
// RaftByte first.
type RaftLayer struct {
	m *Mux
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// RaftLayer returns the raft side of the port. A Mux has one raft side:
// build one transport on it.
func (m *Mux) RaftLayer() *RaftLayer { return m.raftLayer }

// RaftTransport builds a raft network transport on the raft side of the
// port; maxPool and timeout are as for raft.NewNetworkTransport, and a nil
// logger means raft's default (stderr). Its local address is the Mux's
// advertised address. Call it at most once per Mux: two transports would
// split the incoming raft connections between them. Closing the transport
// (raft.Shutdown does) closes the raft side, but not the Mux.
func (m *Mux) RaftTransport(maxPool int, timeout time.Duration, logger hclog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  m.raftLayer,
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  logger,
	})
}

// Accept waits for the next raft connection. After Close (of the layer or
// the Mux) it returns an error wrapping net.ErrClosed.
func (r *RaftLayer) Accept() (net.Conn, error) { return r.m.raft.Accept() }

// Close stops accepting raft connections and closes every open raft
// connection, inbound and dialed. The gRPC side keeps running.
func (r *RaftLayer) Close() error { return r.m.raft.Close() }

// Addr is the address peers dial to reach this server's raft side.
func (r *RaftLayer) Addr() net.Addr { return r.m.advertise }

// Dial connects to a peer's server port and announces a raft stream.
// timeout bounds the TCP connect and the write of RaftByte.
func (r *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	side := r.m.raft
	if side.closed() {
		return nil, fmt.Errorf("rpc: raft dial %s: %w", address, net.ErrClosed)
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("rpc: raft dial %s: %w", address, err)
	}
	if timeout > 0 {
		if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("rpc: raft dial %s: %w", address, err)
		}
	}
	if _, err := conn.Write([]byte{RaftByte}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc: raft dial %s: write raft byte: %w", address, err)
	}
	if err := conn.SetWriteDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc: raft dial %s: %w", address, err)
	}
	c := newMuxConn(conn, &side.conns, false, 0)
	if !side.conns.add(c) {
		conn.Close()
		return nil, fmt.Errorf("rpc: raft dial %s: %w", address, net.ErrClosed)
	}
	return c, nil
}
