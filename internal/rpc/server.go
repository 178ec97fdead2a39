package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServiceName is the gRPC service that carries forwarded requests.
const ServiceName = "trellis.rpc.Forward"

// methodHTTP is the full name of the unary method ForwardHTTP calls.
const methodHTTP = "/" + ServiceName + "/HTTP"

// Keepalive: the client pings a connection after clientPingInterval
// without traffic, which spots a dead server during a blocking query
// (up to ~11 minutes without a byte). The server tolerates pings as often
// as serverMinPingInterval (below the client's interval, so it never
// sends GOAWAY "too_many_pings") and pings idle clients itself to drop
// half-open connections.
const (
	clientPingInterval    = 30 * time.Second
	serverMinPingInterval = 15 * time.Second
	pingTimeout           = 10 * time.Second
	serverPingInterval    = time.Minute
)

// forwarder is the HandlerType of the service: what RegisterService
// checks the server implements.
type forwarder interface {
	forwardHTTP(ctx context.Context, req *HTTPRequest) (*HTTPResponse, error)
}

// serviceDesc describes the service by hand: the messages are Go structs
// encoded with msgpack, so there is no .proto and no generated code.
func serviceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*forwarder)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "HTTP",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := new(HTTPRequest)
				if err := dec(in); err != nil {
					return nil, err
				}
				if interceptor == nil {
					return srv.(forwarder).forwardHTTP(ctx, in)
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: methodHTTP}
				return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					return srv.(forwarder).forwardHTTP(ctx, req.(*HTTPRequest))
				})
			},
		}},
		Metadata: "internal/rpc",
	}
}

// Server answers forwarded requests by running them through an
// http.Handler, the same one that serves the HTTP API.
type Server struct {
	handler http.Handler
	gs      *grpc.Server
}

// NewServer returns a Server that runs forwarded requests through
// handler. The handler's contract is net/http's, with these differences:
//   - r.Context() is the RPC's: it is cancelled when the forwarding
//     client cancels or its connection drops, and has no deadline of its
//     own, so a blocking query may take as long as it needs;
//   - r.RemoteAddr is the forwarding agent's address, not the original
//     client's;
//   - the response is buffered and sent when the handler returns, so
//     streaming (Flush) has no effect, and a body over MaxBodyBytes fails
//     the RPC with codes.ResourceExhausted;
//   - a panic fails the RPC with codes.Internal (codes.Aborted for
//     http.ErrAbortHandler) instead of killing the process.
//
// ForwardedDatacenter tells the handler that a request was forwarded.
func NewServer(handler http.Handler) *Server {
	s := &Server{handler: handler}
	s.gs = grpc.NewServer(
		grpc.ForceServerCodecV2(newMsgpackCodec()),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             serverMinPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    serverPingInterval,
			Timeout: pingTimeout,
		}),
		grpc.ConnectionTimeout(DefaultFirstByteTimeout),
		// Stop waits for handlers to return, so that none runs on
		// after its owner has shut down what it uses.
		grpc.WaitForHandlers(true),
	)
	s.gs.RegisterService(serviceDesc(), s)
	return s
}

// Serve accepts connections on l (usually Mux.GRPCListener) until l is
// closed or Stop is called, then returns nil; other errors are returned.
func (s *Server) Serve(l net.Listener) error {
	err := s.gs.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop closes the listeners and connections, which cancels the contexts
// of running handlers, and waits for the handlers to return.
func (s *Server) Stop() { s.gs.Stop() }

func (s *Server) forwardHTTP(ctx context.Context, in *HTTPRequest) (*HTTPResponse, error) {
	r, err := newHTTPRequest(ctx, in)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rec := &recorder{header: make(http.Header), limit: MaxBodyBytes}
	if err := serve(s.handler, rec, r); err != nil {
		return nil, err
	}
	if rec.overflow {
		return nil, status.Errorf(codes.ResourceExhausted, "rpc: %s %s: response body exceeds %d bytes", in.Method, in.Path, MaxBodyBytes)
	}
	return rec.response(r.Method), nil
}

// serve runs the handler and turns a panic into an RPC error.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				err = status.Errorf(codes.Aborted, "rpc: %s %s: handler aborted", r.Method, r.URL.Path)
				return
			}
			err = status.Errorf(codes.Internal, "rpc: %s %s: handler panicked: %v", r.Method, r.URL.Path, v)
		}
	}()
	h.ServeHTTP(w, r)
	return nil
}

type forwardedKey struct{}

// ForwardedDatacenter reports whether r reached this server through
// ForwardHTTP, and the datacenter the forwarder set. A handler uses it
// not to forward a forwarded request again.
func ForwardedDatacenter(r *http.Request) (dc string, ok bool) {
	dc, ok = r.Context().Value(forwardedKey{}).(string)
	return dc, ok
}

// newHTTPRequest rebuilds the request the forwarder received.
func newHTTPRequest(ctx context.Context, in *HTTPRequest) (*http.Request, error) {
	if in.Path == "" || in.Path[0] != '/' {
		return nil, fmt.Errorf("rpc: forwarded request: path %q does not start with /", in.Path)
	}
	u, err := url.ParseRequestURI(in.Path)
	if err != nil {
		return nil, fmt.Errorf("rpc: forwarded request: path %q: %w", in.Path, err)
	}
	u.RawQuery = in.RawQuery
	ctx = context.WithValue(ctx, forwardedKey{}, in.Datacenter)
	// The URL is set after, not passed as a string: printed and parsed
	// again, a path like "//x" would turn into a host.
	r, err := http.NewRequestWithContext(ctx, in.Method, "/", bytes.NewReader(in.Body))
	if err != nil {
		return nil, fmt.Errorf("rpc: forwarded request %q %q: %w", in.Method, in.Path, err)
	}
	r.URL = u
	if len(in.Body) == 0 {
		r.Body = http.NoBody
		r.GetBody = nil
	}
	r.Header = make(http.Header, len(in.Header))
	for k, v := range in.Header {
		r.Header[k] = v
	}
	if host, ok := r.Header["Host"]; ok {
		if len(host) > 0 {
			r.Host = host[0]
		}
		delete(r.Header, "Host")
	}
	r.RequestURI = u.RequestURI()
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.RemoteAddr = p.Addr.String()
	}
	return r, nil
}

// recorder is the http.ResponseWriter a forwarded request is served into.
// Headers are snapshotted at WriteHeader, as net/http sends them then.
type recorder struct {
	header      http.Header
	sent        http.Header // header at WriteHeader time
	status      int
	wroteHeader bool
	body        bytes.Buffer
	limit       int
	overflow    bool
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		return // informational: not the final response
	}
	w.status = code
	w.wroteHeader = true
	w.sent = w.header.Clone()
}

func (w *recorder) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.overflow || w.body.Len()+len(p) > w.limit {
		w.overflow = true
		return 0, fmt.Errorf("rpc: response body exceeds %d bytes", w.limit)
	}
	return w.body.Write(p)
}

// Flush lets handlers that flush run; the response is sent when the
// handler returns regardless.
func (w *recorder) Flush() {}

// response is what the handler wrote. Like net/http, it adds a
// Content-Length when the handler set none, so the forwarder need not
// send a large body chunked; not for HEAD, whose body is empty.
func (w *recorder) response(method string) *HTTPResponse {
	w.WriteHeader(http.StatusOK)
	h := w.sent
	if _, ok := h["Content-Length"]; !ok && method != http.MethodHead && bodyAllowed(w.status) {
		h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	}
	return &HTTPResponse{Status: w.status, Header: h, Body: w.body.Bytes()}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
