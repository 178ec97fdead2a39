package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The HTTP/1.1 client of clusters that speak only HTTP/1.1: an upstream
// request costs what net/http's Transport spends per request and per
// connection (a read and a write goroutine per connection, channel
// handoffs between them and the caller, their allocations) no more.
//
// A request runs on its caller's goroutine: its head (and a body of known
// length up to maxInlineBody, read in full first) goes out in one write,
// then the response head is read (h1parse.go); the response
// body is read by the caller through the returned Body, which hands the
// connection back at its end. Only a body of unknown or larger length is
// written by a goroutine of its own, so that the response can start while
// it streams (full duplex). Request cancellation closes the connection
// (onEnd, streamctx.go), which ends any read or write under way.
//
// Idle connections are kept per endpoint address and reused last in,
// first out, so that the ones beyond what the load needs stay idle and
// the cluster's idle timeout closes them. A request that finds none
// dials one on a goroutine of its own, and takes whichever comes first:
// its dial's connection, or one another request hands back meanwhile
// (the dial's then goes to the pool), as net/http does.
//
// A connection carries another request only if nothing follows the
// response: bytes the upstream sent beyond it (more than its
// Content-Length, a body on a HEAD, 204 or 304 response) would be read
// as the next request's response. Those already read at the response's
// end, in the response's reader or decrypted in the TLS layer, close the
// connection then (see tlsPending). Nothing reads an idle connection, so
// what arrives later, or the upstream's closing it, is found out when it
// is next used: a peek at the socket before reuse, and otherwise the
// retry of a request that got nothing back from a reused connection, as
// net/http does.

const (
	// maxInlineBody is the longest request body of known length read in
	// full before the request is sent, and sent with its head.
	maxInlineBody = 64 << 10
	// maxIdlePerHost caps an endpoint's idle connections; beyond, the
	// longest idle is closed.
	maxIdlePerHost = 1 << 12
	// maxResponseHead is the longest response head read (Envoy's
	// max_response_headers_kb default), plus the read buffer that may
	// hold the start of the body.
	maxResponseHead = 60<<10 + readBufSize
	readBufSize     = 4 << 10
	// max1xx is how many interim responses a request may get.
	max1xx = 8
)

var errResponseHeadTooLarge = errors.New("response head too large")

// h1Transport carries a cluster's HTTP/1.1 requests. Its connections come
// from Proxy.dialPooled, so the circuit breaker admits them and the proxy
// tracks and closes them; it is safe for concurrent use.
type h1Transport struct {
	p       *Proxy
	dial    func(ctx context.Context, addr string) (net.Conn, error)
	idleFor time.Duration // cluster idle_timeout; 0: never

	mu    sync.Mutex
	hosts map[string]*h1Host // guarded by mu; by endpoint address
	gen   uint64             // guarded by mu; bumped by CloseIdleConnections
}

// newH1Transport returns the transport of a cluster whose connections
// come from dial.
func newH1Transport(p *Proxy, idle time.Duration, dial func(ctx context.Context, addr string) (net.Conn, error)) *h1Transport {
	return &h1Transport{p: p, dial: dial, idleFor: idle, hosts: map[string]*h1Host{}}
}

// h1Conn is an upstream connection. Its owner is the request using it,
// or its host's idle stack.
type h1Conn struct {
	t    *h1Transport
	addr string
	conn net.Conn // requests go here: TLS over raw, or raw
	raw  net.Conn // the tracked TCP connection
	gen  uint64
	dead atomic.Bool // closed, or being closed

	// Set by the transport under mu when the connection goes idle.
	reused bool
	idleAt time.Time

	// Of the response being read, by the request's goroutine: bytes
	// read, and how many more its head may take (< 0: no limit).
	nread int64
	limit int64

	abortFn func() // abort as a func, made once for onEnd

	// The peek at the socket before reuse (h1peek_*.go).
	rc       syscall.RawConn // nil: no peek
	peekFn   func(uintptr) bool
	peekGone bool
	peekBuf  [1]byte // also read by tlsPending

	headBuf []byte // scratch for response heads
}

// Read reads the connection for the response's bufio.Reader, within the
// head's limit.
func (pc *h1Conn) Read(b []byte) (int, error) {
	if pc.limit >= 0 {
		if pc.limit == 0 {
			return 0, errResponseHeadTooLarge
		}
		if int64(len(b)) > pc.limit {
			b = b[:pc.limit]
		}
	}
	n, err := pc.conn.Read(b)
	pc.nread += int64(n)
	if pc.limit >= 0 {
		pc.limit -= int64(n)
	}
	return n, err
}

// tlsPending reports whether the TLS layer of pc holds data (or its
// end) that nothing asked for yet: decrypted with the end of a response
// (in the same TLS record), or read from the socket with it. Neither the
// response's reader nor a peek at the socket sees it. A read of the TLS
// layer finds it, if the socket under it is not read: for the proxy's
// connections, their trackedConn fails the read at once; for another, a
// read deadline in the past does (Go checks it before reading the
// socket), at the cost of setting it. Either way the error is a
// temporary one, which leaves tls.Conn usable. (That is also why it
// cannot replace the peek: what is still in the socket is not seen.)
func (pc *h1Conn) tlsPending() bool {
	tc, ok := pc.conn.(*tls.Conn)
	if !ok {
		return false
	}
	if raw, ok := pc.raw.(*trackedConn); ok {
		raw.probing = true
		_, err := tc.Read(pc.peekBuf[:])
		raw.probing = false
		return err != errProbe // data, its end, or a broken connection
	}
	if tc.SetReadDeadline(pastDeadline) != nil {
		return true
	}
	_, err := tc.Read(pc.peekBuf[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return true
	}
	return tc.SetReadDeadline(time.Time{}) != nil
}

// errProbe fails a read of the socket under the TLS layer (see
// tlsPending): a temporary net.Error, as a timeout is.
var errProbe net.Error = probeError{}

type probeError struct{}

func (probeError) Error() string   { return "proxy: probing the TLS layer" }
func (probeError) Timeout() bool   { return true }
func (probeError) Temporary() bool { return true }

// abort closes the TCP connection at once: no TLS close_notify (the
// exchange is cut short, not ended), and any read or write under way
// ends.
func (pc *h1Conn) abort() {
	pc.dead.Store(true)
	pc.raw.Close()
}

// close closes an idle connection cleanly.
func (pc *h1Conn) close() {
	pc.dead.Store(true)
	pc.conn.Close()
}

// RoundTrip sends req to req.URL.Host and returns the response head; the
// response body must be read to its end or closed. req.Body, if any, is
// closed. An error from dialPooled (*dialError) is returned as is, unless
// the request's context ended meanwhile: then, as for any failure after
// the context ended, the error wraps the context's cause.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req.Context(), req)
}

// roundTrip is RoundTrip with the request's context given apart; req's
// own is not used.
func (t *h1Transport) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	n := req.ContentLength
	if body == nil {
		n = 0
	}
	if err := ctx.Err(); err != nil {
		closeBody(body)
		return nil, ctxError(ctx)
	}
	chunked := n < 0 || (n > 0 && len(req.Trailer) > 0)
	bufp := headBufs.Get().(*[]byte)
	defer putHeadBuf(bufp)
	head, err := appendRequestHead((*bufp)[:0], req, n, chunked)
	if err != nil {
		closeBody(body)
		return nil, err
	}
	// A short body of known length is read in full now and sent with
	// the head; another is streamed after it.
	inline := !chunked && n > 0 && n <= maxInlineBody
	if inline {
		head, err = readInline(head, body, n)
		closeBody(body)
		body = nil
		if err != nil {
			*bufp = head
			return nil, err
		}
	}
	*bufp = head
	var stream *bodyWriter
	if body != nil {
		stream = &bodyWriter{body: body, n: n, chunked: chunked, trailer: req.Trailer}
	}
	for try := 0; ; try++ {
		// The one retry, after a stale connection, goes on a new one: a
		// reused one may be stale too.
		pc, err := t.get(ctx, req.URL.Host, try > 0)
		if err != nil {
			if stream != nil {
				closeBody(body)
			}
			return nil, err
		}
		resp, err := pc.roundTrip(ctx, req, head, stream)
		if err == nil {
			return resp, nil
		}
		var se *staleConnError
		if try == 0 && errors.As(err, &se) && (se.nothingWritten || stream == nil && idempotent(req)) {
			continue
		}
		if stream != nil && !stream.started {
			closeBody(body)
		}
		return nil, err
	}
}

// staleConnError is a reused connection that failed before the upstream
// sent any byte of a response: the upstream had probably closed it while
// idle. nothingWritten says no byte of the request went out either.
type staleConnError struct {
	err            error
	nothingWritten bool
}

func (e *staleConnError) Error() string {
	return "proxy: upstream closed the reused connection: " + e.err.Error()
}
func (e *staleConnError) Unwrap() error { return e.err }

// idempotent says whether req may be sent again after it may have
// reached the upstream (RFC 9110, section 9.2.2), or the client said so
// with an Idempotency-Key, as net/http judges.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	_, xok := req.Header["X-Idempotency-Key"]
	return ok || xok
}

// roundTrip sends req on pc (its head, and an inline body, are head;
// stream writes any other body) and reads the response head. pc is its
// own to close or hand on.
func (pc *h1Conn) roundTrip(ctx context.Context, req *http.Request, head []byte, stream *bodyWriter) (*http.Response, error) {
	stop := onEnd(ctx, pc.abortFn)
	n, err := pc.conn.Write(head)
	if err != nil {
		stop.stop()
		pc.abort()
		if ctx.Err() != nil {
			return nil, ctxError(ctx)
		}
		if pc.reused && n == 0 {
			return nil, &staleConnError{err: err, nothingWritten: true}
		}
		return nil, fmt.Errorf("proxy: upstream %s: writing the request: %w", pc.addr, err)
	}
	if stream != nil {
		if !pc.t.p.handlers.enter() {
			stop.stop()
			pc.abort()
			return nil, errClosed
		}
		stream.pc = pc
		stream.started = true
		go stream.run()
	}

	br := readBufs.Get().(*bufio.Reader)
	br.Reset(pc)
	pc.nread, pc.limit = 0, maxResponseHead
	b := &h1Body{pc: pc, br: br, stop: stop, ctx: ctx, stream: stream}
	resp := &b.resp
	kind, length, err := pc.readResponse(br, req, resp)
	pc.limit = -1
	upgrade := false
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		if upgrade = len(req.Header["Upgrade"]) > 0; !upgrade {
			err = errors.New("unexpected 101 Switching Protocols")
		}
	}
	if err != nil {
		stop.stop()
		pc.abort()
		putReader(br)
		if ctx.Err() != nil {
			return nil, ctxError(ctx)
		}
		if pc.reused && pc.nread == 0 {
			return nil, &staleConnError{err: err}
		}
		return nil, fmt.Errorf("proxy: upstream %s: reading the response: %w", pc.addr, err)
	}
	if upgrade {
		// The connection is the tunnel's now: no longer the request's
		// context's to end, nor the pool's.
		if !stop.stop() {
			// The request ended as the 101 came: the abort is closing
			// the connection.
			putReader(br)
			return nil, ctxError(ctx)
		}
		resp.Body = pc.upgraded(br)
		return resp, nil
	}
	b.keep = !resp.Close && !req.Close
	if kind == bodyNone {
		resp.Body = http.NoBody
		b.finish(true)
		return resp, nil
	}
	b.body.init(br, kind, length, &resp.Trailer)
	resp.Body = b
	return resp, nil
}

// readResponse reads the final response head into resp, skipping
// interim (1xx) ones, and says how its body is delimited.
func (pc *h1Conn) readResponse(br *bufio.Reader, req *http.Request, resp *http.Response) (bodyKind, int64, error) {
	for range max1xx {
		head, buf, err := readHead(br, pc.headBuf, 0)
		pc.headBuf = buf
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, 0, err
		}
		kind, n, err := parseResponse(head, req, resp)
		if err != nil {
			return 0, 0, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return kind, n, nil
		}
	}
	return 0, 0, errors.New("too many interim (1xx) responses")
}

// h1Body is a response body: at its end the connection goes back to the
// pool if it can carry another request; closed before, the connection is
// closed.
type h1Body struct {
	resp   http.Response
	body   msgBody
	pc     *h1Conn
	br     *bufio.Reader
	stop   endHook // of the abort on the context's end
	ctx    context.Context
	stream *bodyWriter // nil: the request went out with its head
	keep   bool        // the response and the request allow reuse
	done   atomic.Bool
	err    error // returned once done, by the reading goroutine
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done.Load() {
		if b.err == nil {
			return 0, errBodyClosed
		}
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		if b.finish(true) {
			b.err = io.EOF
		}
	default:
		if b.ctx.Err() != nil {
			err = ctxError(b.ctx)
		}
		if b.finish(false) {
			b.err = err
		}
	}
	return n, err
}

// Close closes the connection, unless the body was read to its end.
func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

var errBodyClosed = errors.New("proxy: read on a closed response body")

// finish ends the exchange once: the connection is handed back (ok: the
// body was read to its end) or closed; false if it had ended already.
func (b *h1Body) finish(ok bool) bool {
	if !b.done.CompareAndSwap(false, true) {
		return false
	}
	pc := b.pc
	if !ok {
		// The reader may be in use by a concurrent Read: leave it to
		// the collector.
		b.stop.stop()
		pc.abort()
		return true
	}
	stopped := b.stop.stop()
	// Bytes read past the response, which the next request would take
	// for its response, close the connection.
	keep := stopped && b.keep && b.br.Buffered() == 0 && !pc.tlsPending()
	putReader(b.br)
	b.br = nil
	if !keep {
		if stopped {
			pc.close() // the upstream is done with it too
		} else {
			pc.abort()
		}
		return true
	}
	if w := b.stream; w != nil && !w.handOff() {
		return true // the writer hands the connection back, or closes it
	}
	pc.t.put(pc)
	return true
}

// bodyWriter writes a request body after its head, on a goroutine of its
// own (counted with the proxy's handlers, so that Close waits for it): a
// body of unknown length chunked, one of known length as it is.
type bodyWriter struct {
	pc      *h1Conn
	body    io.ReadCloser
	n       int64 // length; < 0 unknown (chunked)
	chunked bool
	trailer http.Header
	started bool // by the request's goroutine

	state atomic.Int32 // writeRunning, then another write* state
}

const (
	writeRunning int32 = iota
	writeOK
	writeFailed
	writeHandedOff // the response ended first: the writer hands the connection back
)

func (w *bodyWriter) run() {
	defer w.pc.t.p.handlers.leave()
	err := w.copy()
	w.body.Close()
	st := writeOK
	if err != nil {
		st = writeFailed
		w.pc.abort() // the upstream must not take a cut body for a whole one
	}
	if !w.state.CompareAndSwap(writeRunning, st) && err == nil {
		// Handed off: its last write was done before the response's
		// end made any further one fail.
		if w.pc.conn.SetWriteDeadline(time.Time{}) != nil {
			w.pc.abort()
			return
		}
		w.pc.t.put(w.pc)
	}
}

// handOff is called at the end of a reusable response: true if the
// request body was written in full, and the connection can be handed
// back now; false if the connection is closed, or left to the writer to
// hand back when it is done.
//
// A response that ended before the request body was written in full
// ends the request, as Envoy does (the response's end is the exchange's
// end, and nothing ends the writer later): the writer's next or current
// write fails, and the connection closes. Only a writer whose last
// write was done hands the connection back.
func (w *bodyWriter) handOff() bool {
	switch w.state.Load() {
	case writeOK:
		return true
	case writeFailed:
		return false
	}
	if w.pc.conn.SetWriteDeadline(pastDeadline) != nil {
		w.pc.abort()
		return false
	}
	if w.state.CompareAndSwap(writeRunning, writeHandedOff) {
		return false
	}
	// The writer ended meanwhile.
	if w.state.Load() != writeOK {
		return false // it closed the connection
	}
	if w.pc.conn.SetWriteDeadline(time.Time{}) != nil {
		w.pc.abort()
		return false
	}
	return true
}

// Chunk framing in the copy buffer: the size line goes in the room before
// the data, the CRLF (and, at the end, the last chunk) after it.
const (
	chunkHead = 10 // "%x\r\n" of a size below 1<<32
	chunkTail = 7  // "\r\n" and "0\r\n\r\n"
)

// copy writes the body to the connection, each read as it comes, so that
// a streamed body is not held back.
func (w *bodyWriter) copy() error {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	conn := w.pc.conn
	if !w.chunked {
		left := w.n
		for {
			room := buf
			if left < int64(len(room)) {
				room = room[:left+1] // one more byte: the body must end here
			}
			k, err := w.body.Read(room)
			if int64(k) > left {
				return fmt.Errorf("request body longer than its ContentLength %d", w.n)
			}
			if k > 0 {
				left -= int64(k)
				if _, werr := conn.Write(room[:k]); werr != nil {
					return werr
				}
			}
			if errors.Is(err, io.EOF) {
				if left > 0 {
					return fmt.Errorf("request body shorter than its ContentLength %d", w.n)
				}
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	data := buf[chunkHead : len(buf)-chunkTail]
	for {
		k, err := w.body.Read(data)
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return err
		}
		start, end := chunkHead, chunkHead
		if k > 0 {
			var size [chunkHead]byte
			line := append(strconv.AppendUint(size[:0], uint64(k), 16), '\r', '\n')
			start = chunkHead - len(line)
			copy(buf[start:], line)
			end = chunkHead + k
			end += copy(buf[end:], "\r\n")
		}
		if eof && len(w.trailer) == 0 {
			end += copy(buf[end:], "0\r\n\r\n")
		}
		if end > start {
			if _, werr := conn.Write(buf[start:end]); werr != nil {
				return werr
			}
		}
		if eof {
			if len(w.trailer) > 0 {
				return w.writeTrailer()
			}
			return nil
		}
	}
}

// writeTrailer ends a chunked body with its trailer, read once the body
// has ended (the downstream's trailer has arrived by then).
func (w *bodyWriter) writeTrailer() error {
	b := append(make([]byte, 0, 128), "0\r\n"...)
	for k, vs := range w.trailer {
		if !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			if validFieldValue(v) {
				b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
			}
		}
	}
	b = append(b, "\r\n"...)
	_, err := w.pc.conn.Write(b)
	return err
}

// readInline appends the body of length n to head, read to its end.
func readInline(head []byte, body io.Reader, n int64) ([]byte, error) {
	start := len(head)
	head = slices.Grow(head, int(n)+1)[:start+int(n)+1] // one more byte: the body must end here
	got := 0
	for {
		k, err := body.Read(head[start+got:])
		got += k
		if got > int(n) {
			return head[:start], fmt.Errorf("request body longer than its ContentLength %d", n)
		}
		if errors.Is(err, io.EOF) {
			if got < int(n) {
				return head[:start], fmt.Errorf("request body shorter than its ContentLength %d", n)
			}
			return head[:start+got], nil
		}
		if err != nil {
			return head[:start], err
		}
	}
}

// appendRequestHead appends req's request line and header fields: the
// Host, req.Header as it is but for the fields set from req's own (a
// User-Agent of "" is not sent), then the framing of a body of length n.
func appendRequestHead(b []byte, req *http.Request, n int64, chunked bool) ([]byte, error) {
	if !validFieldName(req.Method) {
		return b, fmt.Errorf("proxy: invalid method %q", req.Method)
	}
	b = append(b, req.Method...)
	b = append(b, ' ')
	target := len(b)
	b = appendRequestURI(b, req.URL)
	for _, c := range b[target:] {
		if c <= ' ' || c == 0x7f {
			return b, fmt.Errorf("proxy: invalid request target %q", b[target:])
		}
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !validFieldValue(host) {
		return b, fmt.Errorf("proxy: invalid Host %q", host)
	}
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !validFieldName(k) {
			return b, fmt.Errorf("proxy: invalid header field name %q", k)
		}
		for _, v := range vs {
			if v == "" && k == "User-Agent" {
				continue
			}
			if !validFieldValue(v) {
				return b, fmt.Errorf("proxy: invalid value of header field %q", k) // not the value: it may be secret
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(req.Trailer) > 0 {
			keys := make([]string, 0, len(req.Trailer))
			for k := range req.Trailer {
				if validFieldName(k) {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			b = append(b, "Trailer: "...)
			for i, k := range keys {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = append(b, k...)
			}
			b = append(b, "\r\n"...)
		}
	case n > 0 || req.Method == "POST" || req.Method == "PUT" || req.Method == "PATCH":
		// Many servers want a length for these methods, as net/http
		// sends it.
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, "\r\n"...)
	}
	if req.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...), nil
}

// appendRequestURI appends u's request target: its escaped path (or
// opaque part) and query.
func appendRequestURI(b []byte, u *url.URL) []byte {
	if u.Opaque != "" {
		return append(b, u.RequestURI()...)
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	b = append(b, p...)
	if u.ForceQuery || u.RawQuery != "" {
		b = append(b, '?')
		b = append(b, u.RawQuery...)
	}
	return b
}

// ctxError is the error of a request whose context ended: it wraps the
// context's error and its cause.
func ctxError(ctx context.Context) error {
	err, cause := ctx.Err(), causeOf(ctx)
	if cause == nil || cause == err {
		return fmt.Errorf("proxy: upstream request: %w", err)
	}
	return fmt.Errorf("proxy: upstream request: %w: %w", err, cause)
}

func closeBody(b io.ReadCloser) {
	if b != nil {
		b.Close()
	}
}

// headBufs hold request heads, and the bodies sent with them.
var headBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}

func putHeadBuf(b *[]byte) {
	if cap(*b) <= 2*maxInlineBody {
		headBufs.Put(b)
	}
}

// readBufs read response heads and bodies.
var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readBufs.Put(br)
}
