package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP/1.1 downstream connections are served by a loop of the proxy's
// own rather than by net/http's server, whose costs (a goroutine per
// connection besides the accepting one, a background read per request
// and the handoffs between them) were most of the L7 sidecar's. A
// downConn runs on the goroutine that accepted and admitted it, which
// p.wg counts: it reads a request (h1parse.go), serves it with
// the listener's httpHandler through a downResponse, and reads the next
// one, one at a time, in order (pipelined requests wait in the reader).
//
// What the clients see is net/http's server's behaviour: keep-alive,
// Connection: close and HTTP/1.0, the response framing (the handler's
// Content-Length, else chunked, or close-delimited for HTTP/1.0; a
// small response written in full before the handler returned gets a
// Content-Length), Date, trailers, 100-continue, 400 and 431 replies,
// the request body read out (or the connection closed) before the next
// request.
//
// A request's context (the connection's) ends when the connection goes
// away, which net/http learns by reading ahead from it while each
// request runs. Here a request that is still running watchDelay after
// it has been read in full starts that read (its own goroutine), and
// the loop stops it before it reads the next request; a byte it got is
// kept for that request.

const (
	// watchDelay is how long a request runs before a read watches its
	// connection: most are over by then, and a client that went away
	// is noticed that much later.
	watchDelay = 10 * time.Millisecond
	// downBufferBeforeChunking is how much of a response body of
	// unknown length is held back, so that a short one ending with the
	// handler gets a Content-Length (net/http's 2 KiB).
	downBufferBeforeChunking = 2 << 10
	// maxPostHandlerRead is how much of a request body the handler left
	// is read out to keep the connection; beyond, it closes.
	maxPostHandlerRead = 256 << 10
	// lingerTimeout and maxLinger bound the read of what a client still
	// sends after the response that closes its connection, so that the
	// close does not reset the connection before it read the response.
	lingerTimeout = 500 * time.Millisecond
	maxLinger     = 256 << 10
	// downBufSize is the size of a connection's read and write buffers.
	downBufSize = 4 << 10
	// h2Preface is the start of an HTTP/2 connection with prior
	// knowledge.
	h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// pastDeadline interrupts a blocked read or write.
var pastDeadline = time.Unix(1, 0)

var (
	downReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, downBufSize) }}
	downWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, downBufSize) }}
)

// watchState is where a downConn's watching read is.
type watchState uint8

const (
	watchIdle    watchState = iota
	watchArmed              // its timer runs
	watchStopped            // its timer fired but the read must not start
	watchReading            // it reads the connection
)

// downConn is a downstream HTTP/1.x connection served by the proxy's loop.
type downConn struct {
	p      *Proxy
	hc     *httpConn
	rwc    net.Conn             // hc, or TLS over it
	tls    *tls.ConnectionState // nil in plaintext
	remote string
	br     *bufio.Reader
	bw     *bufio.Writer
	srv    *httpServer
	// deadlineSet says the handler set the read deadline (for one of
	// its own goroutines, a timeout's), or the loop interrupted a read
	// of the request body: the connection is not reused.
	deadlineSet atomic.Bool

	// Used by the loop's goroutine only.
	res       downResponse // reused by each request
	afterPOST bool
	limit     int64 // what Read may still return of a request's header; < 0: no limit
	hitLimit  bool
	headBuf   []byte // scratch for request heads
	keys      []string
	date      []byte // "Date: ...\r\n" of dateSec
	dateSec   int64
	num       [20]byte

	mu       sync.Mutex
	idle     bool // guarded by mu: waiting for a request
	draining bool // guarded by mu

	// contMu orders a 100 Continue sent by the first read of a request
	// body with the response's header.
	contMu      sync.Mutex
	canContinue bool // guarded by contMu

	wmu      sync.Mutex
	wcond    sync.Cond  // on wmu: the watch changed
	watch    watchState // guarded by wmu
	armable  bool       // guarded by wmu: a handler runs
	stopping bool       // guarded by wmu: the read is being interrupted
	timer    *time.Timer
	hasByte  bool // guarded by wmu: the watch read byteBuf[0]
	byteBuf  [1]byte
	rerr     error // guarded by wmu: what ended the watch read

	// readDeadline is the read deadline set by the handler (or
	// interrupt), which stopWatchLocked puts back after its own.
	readDeadline time.Time // guarded by wmu

	// stream is the context of the request a handler serves, which
	// ends when the watch finds the connection gone.
	stream *streamCtx // guarded by wmu
}

func newDownConn(p *Proxy, hc *httpConn, rwc net.Conn, cs *tls.ConnectionState) *downConn {
	c := &downConn{p: p, hc: hc, rwc: rwc, tls: cs, remote: hc.RemoteAddr().String(), limit: -1}
	c.wcond.L = &c.wmu
	c.br = downReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.res.c = c
	return c
}

// release gives back c's buffers, once nothing uses them, and returns
// what c read but did not consume.
func (c *downConn) release() []byte {
	var rest []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		rest = slices.Clone(b)
	}
	c.br.Reset(nil)
	downReaders.Put(c.br)
	c.br = nil
	if c.bw != nil {
		c.bw.Reset(nil)
		downWriters.Put(c.bw)
		c.bw = nil
	}
	return rest
}

// Read is what c's bufio.Reader reads: the byte the watch read, if
// any, then the connection, no more than c.limit.
func (c *downConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.stopWatchLocked()
	if c.hasByte {
		c.hasByte = false
		b[0] = c.byteBuf[0]
		c.wmu.Unlock()
		c.consumed(1)
		return 1, nil
	}
	err := c.rerr
	c.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	if c.limit >= 0 {
		if c.limit == 0 {
			c.hitLimit = true
			return 0, io.EOF
		}
		if int64(len(b)) > c.limit {
			b = b[:c.limit]
		}
	}
	n, err := c.rwc.Read(b)
	c.consumed(n)
	return n, err
}

func (c *downConn) consumed(n int) {
	if c.limit > 0 {
		c.limit = max(0, c.limit-int64(n))
	}
}

// sniffPreface reports whether the client opened with the HTTP/2
// preface, reading no more than it needs to tell.
func (c *downConn) sniffPreface(idle time.Duration) (bool, error) {
	if idle > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(idle))
		defer c.rwc.SetReadDeadline(time.Time{})
	}
	want := 1
	for {
		if _, err := c.br.Peek(want); err != nil {
			return false, err
		}
		b, _ := c.br.Peek(min(c.br.Buffered(), len(h2Preface)))
		if string(b) != h2Preface[:len(b)] {
			return false, nil
		}
		if len(b) == len(h2Preface) {
			return true, nil
		}
		want = len(b) + 1
	}
}

// serve serves c's requests until it ends, and closes it.
func (c *downConn) serve(srv *httpServer) {
	ctx := context.WithValue(context.Background(), connKey{}, c.hc)
	c.srv = srv
	c.bw = downWriters.Get().(*bufio.Writer)
	c.bw.Reset(c.rwc)
	linger := false
	defer func() {
		if v := recover(); v != nil {
			// A defect outside the handler (which handle guards) costs
			// this connection, not the process, as with net/http.
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.p.log.Error("proxy: panic serving an HTTP/1.1 connection", "remote", c.remote, "panic", v, "stack", string(buf))
		}
		c.close(linger)
		srv.removeDown(c)
		c.release()
	}()
	for c.waitRequest() {
		r, err := c.readRequest(ctx)
		if err != nil {
			linger = c.refuse(err)
			return
		}
		keep, lingerOnClose := c.serveRequest(r)
		if !keep {
			linger = lingerOnClose
			return
		}
	}
}

// waitRequest waits for the first byte of the next request; false if
// the connection must close: it went away, stayed idle for the
// listener's idle timeout, or its server is draining.
func (c *downConn) waitRequest() bool {
	c.mu.Lock()
	if c.draining {
		c.mu.Unlock()
		return false
	}
	// Set before idle, so that drain's deadline comes after it.
	deadline := false
	if d := c.srv.key.idleConn; d > 0 && c.br.Buffered() == 0 {
		c.rwc.SetReadDeadline(time.Now().Add(d))
		deadline = true
	}
	c.idle = true
	c.mu.Unlock()
	_, err := c.br.Peek(1)
	for err == nil && c.afterPOST {
		// Old clients end a POST body with a stray CRLF (RFC 9112 2.2).
		b, _ := c.br.Peek(1)
		if b[0] != '\r' && b[0] != '\n' {
			break
		}
		c.br.Discard(1)
		_, err = c.br.Peek(1)
	}
	c.mu.Lock()
	c.idle = false
	draining := c.draining // drain may have moved the deadline
	c.mu.Unlock()
	if deadline || draining {
		c.rwc.SetReadDeadline(time.Time{})
	}
	return err == nil
}

// drain makes c take no new request: it closes now if idle, else after
// its response (which says Connection: close).
func (c *downConn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if c.idle {
		c.rwc.SetReadDeadline(pastDeadline)
	}
}

func (c *downConn) isDraining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// downError is a request refused before it reached the handler.
type downError struct {
	code int
	text string
}

func (e *downError) Error() string { return e.text }

var errHeaderTooLarge = errors.New("proxy: request header too large")

// readRequest reads the next request, checked as net/http's server
// does, and gives it a streamCtx under ctx.
func (c *downConn) readRequest(ctx context.Context) (*http.Request, error) {
	c.limit, c.hitLimit = maxRequestHeaderBytes+downBufSize, false
	head, buf, err := readHead(c.br, c.headBuf, 0)
	c.headBuf = buf
	c.limit = -1
	if err != nil {
		if c.hitLimit {
			return nil, errHeaderTooLarge
		}
		return nil, err
	}
	var base http.Request
	kind, n, err := parseRequest(head, &base)
	if err != nil {
		return nil, err
	}
	r := base.WithContext(newStreamCtx(ctx))
	if kind != bodyNone {
		b := &downBody{c: c, length: r.ContentLength}
		b.msg.init(c.br, kind, n, &r.Trailer)
		b.src = &b.msg
		r.Body = b
	} else {
		r.Body = http.NoBody
	}
	if r.ProtoMajor != 1 {
		return nil, &downError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.afterPOST = r.Method == http.MethodPost
	if r.URL.Host == "" {
		// The Host header, which ReadRequest moved to r.Host. (It does
		// not tell an empty one from none: both are refused.)
		switch {
		case r.Host == "" && r.ProtoAtLeast(1, 1) && r.Method != http.MethodConnect:
			return nil, &downError{http.StatusBadRequest, "missing required Host header"}
		case !validHostHeader(r.Host):
			return nil, &downError{http.StatusBadRequest, "malformed Host header"}
		}
	}
	for k, vs := range r.Header {
		if !validFieldName(k) {
			return nil, &downError{http.StatusBadRequest, "invalid header name"}
		}
		for _, v := range vs {
			if !validFieldValue(v) {
				return nil, &downError{http.StatusBadRequest, "invalid header value"}
			}
		}
	}
	r.RemoteAddr = c.remote
	r.TLS = c.tls
	return r, nil
}

// refuse answers a request that could not be read, as net/http's
// server does, unless the connection broke; it reports whether the
// close must linger.
func (c *downConn) refuse(err error) (linger bool) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var de *downError
	switch {
	case err == errHeaderTooLarge:
		const status = "431 Request Header Fields Too Large"
		c.bw.WriteString("HTTP/1.1 " + status + errorHeaders + status)
	case isQuietReadError(err):
		return false
	case errors.As(err, new(errUnsupportedTE)):
		c.bw.WriteString("HTTP/1.1 501 Not Implemented" + errorHeaders + "Unsupported transfer encoding")
	case errors.As(err, &de):
		status := strconv.Itoa(de.code) + " " + http.StatusText(de.code) + ": " + de.text
		c.bw.WriteString("HTTP/1.1 " + status + errorHeaders + status)
	default:
		const status = "400 Bad Request"
		c.bw.WriteString("HTTP/1.1 " + status + errorHeaders + status)
	}
	c.bw.Flush()
	return true
}

// isQuietReadError reports whether err ended a request's read because
// the connection went away or timed out: nothing to answer.
func isQuietReadError(err error) bool {
	if err == io.EOF || isTimeout(err) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// serveRequest serves r; keep says the connection can read the next
// request, linger that the close must wait for the client to stop
// sending (the request body was not read out).
func (c *downConn) serveRequest(r *http.Request) (keep, linger bool) {
	w := &c.res
	w.reset(r)
	body, _ := r.Body.(*downBody)
	if body != nil {
		w.body = body
	}
	if expect := r.Header["Expect"]; len(expect) > 0 {
		switch {
		case !hasToken(expect[0], "100-continue"):
			w.header["Connection"] = []string{"close"}
			w.WriteHeader(http.StatusExpectationFailed)
			w.finish()
			return false, body != nil && !body.finish(false)
		case r.ProtoAtLeast(1, 1) && body != nil:
			body.expect, body.cont = true, true
			c.contMu.Lock()
			c.canContinue = true
			c.contMu.Unlock()
		}
	}

	stream, _ := r.Context().(*streamCtx)
	c.wmu.Lock()
	c.armable = true
	c.stream = stream
	if body == nil {
		c.armLocked()
	}
	c.readDeadline = time.Time{}
	c.wmu.Unlock()
	c.deadlineSet.Store(false)
	abort := c.handle(w, r)
	c.wmu.Lock()
	c.armable = false
	c.stopWatchLocked()
	c.stream = nil
	c.wmu.Unlock()
	if stream != nil {
		// As net/http's server: the request's context ends with its
		// handler.
		stream.cancel(context.Canceled)
	}
	c.contMu.Lock()
	c.canContinue = false
	c.contMu.Unlock()

	if w.tunneled {
		// The tunnel has ended, and closed the connection.
		if body != nil {
			body.finish(false)
		}
		return false, false
	}
	if abort {
		// Send what went out so far, unended, and close.
		c.bw.Flush()
		if body != nil {
			body.finish(false)
		}
		return false, false
	}
	w.finish()
	keep = !w.closeAfter && !c.deadlineSet.Load()
	if body != nil && !body.finish(keep) {
		return false, true
	}
	return keep, false
}

// handle runs the handler, which must not take the process down.
func (c *downConn) handle(w *downResponse, r *http.Request) (abort bool) {
	defer func() {
		if v := recover(); v != nil {
			abort = true
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.p.log.Error("proxy: panic serving an HTTP request", "remote", c.remote, "panic", v, "stack", string(buf))
			}
		}
	}()
	return c.srv.h.serve(w, r, c.hc)
}

// writeContinue answers the request's Expect: 100-continue, unless the
// response has started.
func (c *downConn) writeContinue() {
	c.contMu.Lock()
	defer c.contMu.Unlock()
	if c.canContinue {
		c.canContinue = false
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		c.bw.Flush()
	}
}

// armWatch starts the watch's timer if a handler runs: its request has
// been read in full.
func (c *downConn) armWatch() {
	c.wmu.Lock()
	c.armLocked()
	c.wmu.Unlock()
}

func (c *downConn) armLocked() {
	if !c.armable || c.watch != watchIdle || c.hasByte || c.rerr != nil {
		return
	}
	c.watch = watchArmed
	if c.timer == nil {
		c.timer = time.AfterFunc(watchDelay, c.watchConn)
	} else {
		c.timer.Reset(watchDelay)
	}
}

// watchConn reads a byte ahead, on the timer's goroutine, until the
// client sends one (the next request: kept) or the connection ends
// (which ends the request's context), or stopWatchLocked interrupts it.
func (c *downConn) watchConn() {
	c.wmu.Lock()
	if c.watch != watchArmed {
		c.watch = watchIdle // stopped as it fired
		c.wcond.Broadcast()
		c.wmu.Unlock()
		return
	}
	c.watch = watchReading
	c.wmu.Unlock()
	n, err := c.rwc.Read(c.byteBuf[:])
	c.wmu.Lock()
	if n > 0 {
		c.hasByte = true
	}
	var gone *streamCtx
	if err != nil && !(c.stopping && isTimeout(err)) {
		c.rerr = err
		gone = c.stream
	}
	c.watch = watchIdle
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if gone != nil {
		// Not under wmu: the context's end aborts the upstream
		// connection, on this goroutine.
		gone.cancel(context.Canceled)
	}
}

// stopWatchLocked stops the watch and waits until its read, if it
// started, has returned.
func (c *downConn) stopWatchLocked() {
	switch c.watch {
	case watchArmed:
		if c.timer.Stop() {
			c.watch = watchIdle
			return
		}
		c.watch = watchStopped
		for c.watch == watchStopped {
			c.wcond.Wait()
		}
	case watchReading:
		c.stopping = true
		c.rwc.SetReadDeadline(pastDeadline)
		for c.watch == watchReading {
			c.wcond.Wait()
		}
		c.stopping = false
		// Not time.Time{}: a deadline set meanwhile must hold.
		c.rwc.SetReadDeadline(c.readDeadline)
	}
}

// setReadDeadline sets the connection's read deadline for the handler:
// one set while the watch's read is being interrupted is set by
// stopWatchLocked when that read has returned.
func (c *downConn) setReadDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.deadlineSet.Store(true)
	c.readDeadline = t
	if c.stopping {
		return nil
	}
	return c.rwc.SetReadDeadline(t)
}

// interrupt ends a read or write of the connection under way (and any
// after it), for good: the connection serves no more requests.
func (c *downConn) interrupt() {
	c.setReadDeadline(pastDeadline)
	c.rwc.SetWriteDeadline(pastDeadline)
}

// close sends what is buffered and closes the connection; linger waits
// a little for the client to stop sending first.
func (c *downConn) close(linger bool) {
	c.bw.Flush()
	if linger {
		if tc, ok := c.rwc.(*tls.Conn); ok {
			tc.CloseWrite()
		}
		if cw, ok := c.hc.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, c.rwc, maxLinger)
	}
	c.rwc.Close()
}

// dateLine is the Date header line for now.
func (c *downConn) dateLine() []byte {
	now := time.Now()
	if s := now.Unix(); s != c.dateSec || c.date == nil {
		c.dateSec = s
		c.date = append(c.date[:0], "Date: "...)
		c.date = now.UTC().AppendFormat(c.date, http.TimeFormat)
		c.date = append(c.date, "\r\n"...)
	}
	return c.date
}

func (c *downConn) writeStatusLine(is11 bool, code int) {
	bw := c.bw
	if is11 {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	bw.Write(strconv.AppendInt(c.num[:0], int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(c.num[:0], int64(code), 10))
	}
	bw.WriteString("\r\n")
}

// fieldSet names the header fields the response framing rewrites.
type fieldSet uint8

const (
	fieldContentLength fieldSet = 1 << iota
	fieldTransferEncoding
	fieldConnection
	fieldContentType
)

func (s fieldSet) has(k string) bool {
	switch k {
	case "Content-Length":
		return s&fieldContentLength != 0
	case "Transfer-Encoding":
		return s&fieldTransferEncoding != 0
	case "Connection":
		return s&fieldConnection != 0
	case "Content-Type":
		return s&fieldContentType != 0
	}
	return false
}

// writeFields writes h's fields but those in skip or trailers (the
// http.TrailerPrefix ones and those named in trailers), sorted by name
// (as net/http does). Invalid names are dropped; line breaks in values
// become spaces.
func (c *downConn) writeFields(h http.Header, skip fieldSet, trailers []string) {
	keys := c.keys[:0]
	for k, vs := range h {
		if len(vs) == 0 || skip.has(k) || strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) ||
			slices.Contains(trailers, k) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			c.writeField(k, v)
		}
	}
	clear(keys)
	c.keys = keys[:0]
}

func (c *downConn) writeField(k, v string) {
	bw := c.bw
	bw.WriteString(k)
	bw.WriteString(": ")
	v = textproto.TrimString(v)
	if strings.ContainsAny(v, "\r\n") {
		for i := 0; i < len(v); i++ {
			if b := v[i]; b == '\r' || b == '\n' {
				bw.WriteByte(' ')
			} else {
				bw.WriteByte(b)
			}
		}
	} else {
		bw.WriteString(v)
	}
	bw.WriteString("\r\n")
}

// validFieldName reports whether k is an HTTP token.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isFieldNameByte(k[i]) {
			return false
		}
	}
	return true
}

func isFieldNameByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// validFieldValue reports whether v may be a field value: no control
// bytes but tabs (RFC 9110 5.5).
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// validHostHeader reports whether h may be a Host header: the bytes of
// a URI authority (RFC 3986 3.2).
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!$%&'()*+,-.:;=[]_~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token,
// ignoring case.
func hasToken(v, token string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if asciiEqualFold(textproto.TrimString(f), token) {
			return true
		}
	}
	return false
}

// bodyAllowedForStatus reports whether a response of this status may
// have a body (RFC 9110 6.4.1).
func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199, code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

// downBody is a request body as the handler reads it: it answers
// Expect: 100-continue on the first read, arms the watch at its end,
// and lets the loop take it back from the handler.
//
// The handler may leave a goroutine reading it (the upstream body
// writer streams a body on one of its own, and goes on when the
// response ended first), so taking it back is done in one step: finish
// closes it, which refuses the handler's reads from then on,
// interrupts the read under way if any, and takes readMu. From then on
// src, and the connection's reader under it, are the loop's alone: it
// can read out the rest, then reuse or give back that reader.
type downBody struct {
	c      *downConn
	src    io.Reader // msg, but in tests
	msg    msgBody
	length int64 // the request's ContentLength
	expect bool  // the client expects 100-continue

	// readMu is held by whoever reads src (reads are serialized, as
	// net/http's are), and by finish from the handler's end on.
	readMu sync.Mutex

	mu      sync.Mutex
	cont    bool  // guarded by mu: 100 Continue not tried yet
	reading bool  // guarded by mu: a read of src (or its 100 Continue) is under way
	eof     bool  // guarded by mu
	closed  bool  // guarded by mu: the handler may read no more
	err     error // guarded by mu: src's error other than EOF
	n       int64 // guarded by mu: bytes read
}

func (b *downBody) Read(p []byte) (int, error) {
	if b.isClosed() {
		// Without waiting for readMu, which finish may hold while it
		// reads out the rest.
		return 0, http.ErrBodyReadAfterClose
	}
	b.readMu.Lock()
	defer b.readMu.Unlock()
	return b.read(p, false)
}

// read reads src for the holder of readMu. A read of the handler's
// fails once the body is closed; one of the server's own (drain, to
// read out the rest) goes on.
func (b *downBody) read(p []byte, drain bool) (int, error) {
	b.mu.Lock()
	switch {
	case b.closed && !drain:
		b.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	case b.eof:
		b.mu.Unlock()
		return 0, io.EOF
	case b.err != nil:
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	// Set with the check of closed, so that finish either refuses this
	// read or knows to interrupt it.
	b.reading = true
	cont := b.cont
	b.cont = false
	b.mu.Unlock()
	if cont {
		b.c.writeContinue()
	}
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.reading = false
	b.n += int64(n)
	ended := false
	switch {
	case err == io.EOF:
		ended = true
		b.eof = true
	case err != nil:
		b.err = err
	}
	b.mu.Unlock()
	if ended {
		// Still under readMu: after finish, nothing the handler left
		// touches the connection.
		b.c.armWatch()
	}
	return n, err
}

// drainReader reads a downBody for the server, which holds its readMu.
type drainReader struct{ b *downBody }

func (r drainReader) Read(p []byte) (int, error) { return r.b.read(p, true) }

// Close ends the handler's reads; what is left of the body is the
// loop's business.
func (b *downBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *downBody) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *downBody) atEOF() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// discard reads out the rest of the body before the response starts,
// while the handler runs; false if another of its goroutines is reading
// it (which may wait for a client that waits for the response).
func (b *downBody) discard() bool {
	if !b.readMu.TryLock() {
		return false
	}
	defer b.readMu.Unlock()
	return b.discardLocked()
}

// discardLocked reads out the rest of the body, up to
// maxPostHandlerRead, for the holder of readMu; true if it reached the
// end.
func (b *downBody) discardLocked() bool {
	b.mu.Lock()
	eof, n, busy := b.eof, b.n, b.err != nil || b.cont
	b.mu.Unlock()
	switch {
	case eof:
		return true
	case busy:
		return false
	case b.length > 0 && b.length-n > maxPostHandlerRead:
		return false
	}
	_, err := io.CopyN(io.Discard, drainReader{b}, maxPostHandlerRead+1)
	return err == io.EOF
}

// finish takes the body back once the handler has returned: a read
// still under way (by a goroutine the handler left) is interrupted and
// waited for, and later ones fail. If keep, what is left is read out;
// it reports whether the connection can read its next request.
func (b *downBody) finish(keep bool) bool {
	b.mu.Lock()
	b.closed = true
	interrupted := b.reading
	b.mu.Unlock()
	if interrupted {
		b.c.interrupt()
	}
	b.readMu.Lock()
	defer b.readMu.Unlock()
	switch {
	case interrupted:
		return false // the connection's deadline is past
	case !keep:
		return b.atEOF()
	}
	return b.discardLocked()
}
