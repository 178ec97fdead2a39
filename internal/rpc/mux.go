package rpc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RaftByte is the first byte a raft connection sends on the server port.
// The mux consumes it: the raft side reads the stream that follows.
const RaftByte byte = 0x01

// GRPCByte is the first byte of the HTTP/2 client preface
// ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") that every gRPC connection starts
// with. The mux replays it to the gRPC side, which needs the whole preface.
const GRPCByte byte = 'P'

// DefaultFirstByteTimeout is how long an accepted connection may stay
// silent before the mux closes it.
const DefaultFirstByteTimeout = 10 * time.Second

// MuxConfig tunes a Mux. The zero value is ready to use.
type MuxConfig struct {
	// FirstByteTimeout bounds how long an accepted connection may stay
	// silent before it is routed, and how long a routed connection waits
	// for its side (raft or gRPC) to accept it. Zero means
	// DefaultFirstByteTimeout.
	FirstByteTimeout time.Duration
	// Advertise is the address the raft side reports to its peers (the
	// raft ServerAddress of this server). Nil means the bound address,
	// which is wrong when binding 0.0.0.0 or [::].
	Advertise net.Addr
	// Logger receives connection-level events at debug and warn level.
	// Nil discards them.
	Logger *slog.Logger
}

// Mux owns the server port. It accepts TCP connections and routes each by
// its first byte: RaftByte to the raft side (RaftLayer), GRPCByte to the
// gRPC side (GRPCListener). A connection that sends anything else, or
// nothing within the first-byte timeout, is closed; other connections are
// not affected.
type Mux struct {
	ln        net.Listener
	timeout   time.Duration
	advertise net.Addr
	logger    *slog.Logger

	raft      *subListener
	grpc      *subListener
	raftLayer *RaftLayer
	pending   connSet // accepted connections whose first byte is not read yet

	done      chan struct{} // closed when Close begins
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the accept loop and one goroutine per connection being routed
}

// Listen binds addr ("127.0.0.1:8300"; port 0 picks one) and starts a Mux
// on it with the default configuration.
func Listen(addr string) (*Mux, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rpc: listen on %q: %w", addr, err)
	}
	return NewMux(l, MuxConfig{}), nil
}

// NewMux starts routing the connections l accepts. The Mux owns l from now
// on: Close closes it.
func NewMux(l net.Listener, cfg MuxConfig) *Mux {
	if cfg.FirstByteTimeout <= 0 {
		cfg.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if cfg.Advertise == nil {
		cfg.Advertise = l.Addr()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mux{
		ln:        l,
		timeout:   cfg.FirstByteTimeout,
		advertise: cfg.Advertise,
		logger:    cfg.Logger,
		raft:      newSubListener("raft", cfg.Advertise),
		grpc:      newSubListener("grpc", l.Addr()),
		done:      make(chan struct{}),
	}
	m.raftLayer = &RaftLayer{m: m}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

// Addr is the address the Mux is bound to.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// GRPCListener is the gRPC side of the port, to pass to Server.Serve. Its
// Accept returns connections whose first byte was GRPCByte, with that byte
// replayed. Closing it stops the gRPC side only: gRPC connections are then
// closed as they arrive, and the ones already accepted are closed too.
func (m *Mux) GRPCListener() net.Listener { return m.grpc }

// Close closes the port, both sides, and every connection the Mux has
// accepted or the raft side has dialed, then waits for the Mux's
// goroutines to end. It does not stop a gRPC server or a raft transport
// using the Mux: their Accept calls return errors wrapping net.ErrClosed.
// Close is safe to call more than once.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		close(m.done)
		m.closeErr = m.ln.Close()
		m.pending.closeAll()
		m.raft.Close()
		m.grpc.Close()
	})
	m.wg.Wait()
	return m.closeErr
}

func (m *Mux) closing() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	const maxDelay = time.Second
	var delay time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if m.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off rather than
			// spin, and keep serving once the condition clears.
			delay = min(max(2*delay, 5*time.Millisecond), maxDelay)
			m.logger.Warn("rpc: accept failed", "addr", m.ln.Addr().String(), "error", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-m.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		if !m.pending.add(conn) {
			conn.Close()
			continue
		}
		m.wg.Add(1)
		go m.route(conn)
	}
}

// route reads conn's first byte and hands conn to the side it names.
func (m *Mux) route(conn net.Conn) {
	defer m.wg.Done()
	b, err := m.firstByte(conn)
	m.pending.remove(conn)
	if err != nil {
		m.logger.Debug("rpc: closing connection before its first byte", "remote", conn.RemoteAddr().String(), "error", err)
		conn.Close()
		return
	}
	var side *subListener
	switch b {
	case RaftByte:
		side = m.raft
	case GRPCByte:
		side = m.grpc
	default:
		m.logger.Warn("rpc: closing connection with unknown first byte", "remote", conn.RemoteAddr().String(), "byte", fmt.Sprintf("%#02x", b))
		conn.Close()
		return
	}
	c := newMuxConn(conn, &side.conns, b == GRPCByte, b)
	if !side.conns.add(c) {
		conn.Close()
		return
	}
	if !side.deliver(c, m.timeout) {
		m.logger.Debug("rpc: closing connection nobody accepted", "side", side.name, "remote", conn.RemoteAddr().String())
		c.Close()
	}
}

func (m *Mux) firstByte(conn net.Conn) (byte, error) {
	if err := conn.SetReadDeadline(time.Now().Add(m.timeout)); err != nil {
		return 0, err
	}
	var buf [1]byte
	if _, err := io.ReadFull(conn, buf[:]); err != nil {
		return 0, err
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return 0, err
	}
	return buf[0], nil
}

// subListener is one side of the port: a net.Listener fed by the Mux.
type subListener struct {
	name  string
	addr  net.Addr
	ch    chan net.Conn // unbuffered: a connection is handed over only to a waiting Accept
	done  chan struct{} // closed by Close
	once  sync.Once
	conns connSet // connections of this side that are still open
}

func newSubListener(name string, addr net.Addr) *subListener {
	return &subListener{name: name, addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("rpc: %s listener: %w", l.name, net.ErrClosed)
	}
}

// Close stops the side and closes its open connections.
func (l *subListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.conns.closeAll()
	})
	return nil
}

func (l *subListener) Addr() net.Addr { return l.addr }

func (l *subListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// deliver waits up to timeout for an Accept to take c. It reports whether
// one did; if not, the caller closes c.
func (l *subListener) deliver(c net.Conn, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-t.C:
		return false
	}
}

// connSet tracks open connections so that closing their owner closes
// them. The zero value is empty and open.
type connSet struct {
	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[net.Conn]struct{} // guarded by mu
}

// add tracks c and reports true, or reports false when the set is closed;
// the caller then closes c itself.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// closeAll closes the set and every connection in it. The connections
// are closed after the lock is released, since a muxConn's Close removes
// itself from the set.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// muxConn is a routed connection: it leaves its set when closed and, for
// the gRPC side, replays the first byte the Mux consumed.
type muxConn struct {
	net.Conn
	set       *connSet
	first     byte
	replay    atomic.Bool // first is still to be read
	closeOnce sync.Once
	closeErr  error
}

func newMuxConn(conn net.Conn, set *connSet, replay bool, first byte) *muxConn {
	c := &muxConn{Conn: conn, set: set, first: first}
	c.replay.Store(replay)
	return c
}

func (c *muxConn) Read(p []byte) (int, error) {
	if len(p) > 0 && c.replay.CompareAndSwap(true, false) {
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}

func (c *muxConn) Close() error {
	c.closeOnce.Do(func() {
		c.set.remove(c)
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}
