package rpc

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// ErrClientClosed is returned by ForwardHTTP after Close.
var ErrClientClosed = errors.New("rpc: client closed")

// Reconnection: a connection that failed is retried after a backoff of
// at most maxReconnectDelay, during which calls to that address fail at
// once (so the caller tries another server) rather than wait. A connect
// attempt gives up after connectTimeout, so an address that drops
// packets fails as surely as one that refuses them.
const (
	maxReconnectDelay = 5 * time.Second
	connectTimeout    = 5 * time.Second
)

// ClientConfig tunes a Client. The zero value is ready to use.
type ClientConfig struct {
	// Dialer opens a TCP connection to a server port. Nil means a
	// net.Dialer.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Client forwards requests to servers. It keeps one gRPC connection per
// server address, reused by all calls to it (gRPC multiplexes them), and
// reconnects it on its own after a failure. It is safe for concurrent use.
type Client struct {
	dial  func(ctx context.Context, addr string) (net.Conn, error)
	codec msgpackCodec

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // guarded by mu; keyed by address
	closed bool                        // guarded by mu
}

// NewClient returns a Client with no connections: each is opened on the
// first call to its address.
func NewClient(cfg ClientConfig) *Client {
	dial := cfg.Dialer
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return &Client{dial: dial, codec: newMsgpackCodec(), conns: make(map[string]*grpc.ClientConn)}
}

// ForwardHTTP sends req to the server at addr ("10.0.0.1:8300") and
// returns its response, whatever its status. ctx bounds the whole call,
// blocking queries included: there is no other deadline.
//
// An error means no response arrived. An address that cannot be reached
// fails fast with a status of codes.Unavailable, so the caller can try
// another server. The error does not tell whether the handler ran: a
// write retried on another server may be applied twice, so retry only
// reads, or writes that are safe to repeat. Errors carry a gRPC status
// (status.FromError/status.Code see through the wrapping); after ctx ends
// it is codes.Canceled or codes.DeadlineExceeded.
func (c *Client) ForwardHTTP(ctx context.Context, addr string, req *HTTPRequest) (*HTTPResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, fmt.Errorf("rpc: forward %s %s to %s: %w", req.Method, req.Path, addr, err)
	}
	out := new(HTTPResponse)
	if err := cc.Invoke(ctx, methodHTTP, req, out); err != nil {
		return nil, fmt.Errorf("rpc: forward %s %s to %s: %w", req.Method, req.Path, addr, err)
	}
	return out, nil
}

// Close closes every connection; calls in flight fail with codes.Canceled
// and later calls with ErrClientClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.closed = true
	c.mu.Unlock()
	var errs []error
	for addr, cc := range conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("rpc: close connection to %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// conn returns the pooled connection to addr, creating it if need be.
// Creating one does not dial: gRPC connects on the first call.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClientClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = maxReconnectDelay
	// passthrough hands addr to the dialer as is: no resolver, no
	// service config lookup.
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(c.dial),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(c.codec),
			grpc.MaxCallRecvMsgSize(maxMessageBytes),
			grpc.MaxCallSendMsgSize(maxMessageBytes),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    clientPingInterval,
			Timeout: pingTimeout,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: connectTimeout}),
		grpc.WithDisableServiceConfig(),
	)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// numConns is the number of pooled connections.
func (c *Client) numConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// Unreachable reports whether err says the server could not be reached at
// all, so that the request was never sent and may go to another server. A
// connection that broke mid-call is also Unavailable to gRPC, but then the
// request may have been served: that is not Unreachable. Only the gRPC
// status's own message is looked at, not text that wrapped it (which may
// quote a request path).
func Unreachable(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	if st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	return strings.Contains(msg, "Error while dialing") || strings.Contains(msg, "connection refused")
}

// NotSentError says that no server was reached: the request was never
// served anywhere, so sending it again is safe.
type NotSentError struct{ Err error }

func (e NotSentError) Error() string { return e.Err.Error() }
func (e NotSentError) Unwrap() error { return e.Err }

// NeverSent reports whether err is a NotSentError.
func NeverSent(err error) bool {
	var ns NotSentError
	return errors.As(err, &ns)
}
