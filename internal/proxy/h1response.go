package proxy

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// The response writer of the HTTP/1.1 loop (h1server.go).

// downResponse is the http.ResponseWriter of a downConn's requests. It
// writes to the connection's buffer; the header goes out with the
// first body bytes, a Flush or the handler's end, framed as net/http's
// server frames it.
type downResponse struct {
	c      *downConn
	req    *http.Request
	header http.Header
	body   *downBody // nil without a body
	status int
	cl     int64 // the body's length; -1: unknown
	// written counts the body bytes the handler wrote.
	written int64
	// pending holds the start of a body of unknown length until the
	// header is written.
	pending []byte

	is11, head, wantsClose, wants10KeepAlive bool

	badLength   bool // the handler's Content-Length was invalid
	wroteHeader bool // the status is set
	committed   bool // the header went to the buffer
	chunked     bool
	closeAfter  bool // the connection closes after the response
	handlerDone bool
	fullDuplex  bool
	tunneled    bool // the connection became an upgrade's tunnel
}

var (
	_ http.ResponseWriter = (*downResponse)(nil)
	_ http.Flusher        = (*downResponse)(nil)
)

// reset readies w for r, keeping its buffers.
func (w *downResponse) reset(r *http.Request) {
	h := w.header
	if h == nil {
		h = make(http.Header)
	} else {
		clear(h)
	}
	var conn string
	if vs := r.Header["Connection"]; len(vs) > 0 {
		conn = vs[0]
	}
	*w = downResponse{
		c:                w.c,
		req:              r,
		header:           h,
		cl:               -1,
		pending:          w.pending[:0],
		is11:             r.ProtoAtLeast(1, 1),
		head:             r.Method == http.MethodHead,
		wantsClose:       r.Close || hasToken(conn, "close"),
		wants10KeepAlive: r.ProtoMajor == 1 && r.ProtoMinor == 0 && hasToken(conn, "keep-alive"),
	}
}

func (w *downResponse) Header() http.Header { return w.header }

func (w *downResponse) WriteHeader(code int) {
	if w.wroteHeader {
		w.c.p.log.Debug("proxy: superfluous WriteHeader", "code", code)
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.disableContinue()
	w.wroteHeader = true
	w.status = code
	if vs := w.header["Content-Length"]; len(vs) > 0 {
		if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil && n >= 0 {
			w.cl = n
		} else {
			w.c.p.log.Debug("proxy: invalid Content-Length in a response", "value", vs[0])
			delete(w.header, "Content-Length")
			w.badLength = true
		}
	}
}

// writeInformational sends a 1xx response at once.
func (w *downResponse) writeInformational(code int) {
	c := w.c
	if code == http.StatusContinue {
		w.disableContinue()
	}
	c.contMu.Lock()
	defer c.contMu.Unlock()
	c.writeStatusLine(w.is11, code)
	c.writeFields(w.header, fieldContentLength|fieldTransferEncoding, nil)
	c.bw.WriteString("\r\n")
	c.bw.Flush()
}

func (w *downResponse) disableContinue() {
	if w.body != nil && w.body.expect {
		c := w.c
		c.contMu.Lock()
		c.canContinue = false
		c.contMu.Unlock()
	}
}

func (w *downResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.cl >= 0 && w.written > w.cl {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		if w.cl < 0 && len(w.pending)+len(p) <= downBufferBeforeChunking {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		if err := w.commit(p); err != nil {
			return 0, err
		}
	}
	return w.writeBody(p)
}

// writeBody writes p as the framing says.
func (w *downResponse) writeBody(p []byte) (int, error) {
	if w.head {
		return len(p), nil
	}
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(w.c.num[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		if _, err := bw.WriteString("\r\n"); err != nil {
			w.closeAfter = true
			return 0, err
		}
		return len(p), nil
	}
	n, err := bw.Write(p)
	if err != nil {
		w.closeAfter = true
	}
	return n, err
}

// Flush sends the header, if not yet sent, and what was written.
func (w *downResponse) Flush() { w.FlushError() }

// FlushError is Flush, reporting a failed write (for
// http.ResponseController).
func (w *downResponse) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(nil); err != nil {
			return err
		}
	}
	if err := w.c.bw.Flush(); err != nil {
		w.closeAfter = true
		return err
	}
	return nil
}

// EnableFullDuplex lets the handler write the response while it reads
// the request body (for http.ResponseController): the header no
// longer waits for the body to be read out.
func (w *downResponse) EnableFullDuplex() error {
	w.fullDuplex = true
	return nil
}

// SetReadDeadline sets the connection's read deadline (for
// http.ResponseController), as net/http's server does: the handler's
// reads of the request body fail past it. It may be called from another
// goroutine while the handler runs; the connection then closes after
// the response.
func (w *downResponse) SetReadDeadline(t time.Time) error {
	return w.c.setReadDeadline(t)
}

// commit writes the status line and header, framing the body as
// net/http's server does, then the body held back; next is the body's
// first bytes if none were held back, to sniff its type.
func (w *downResponse) commit(next []byte) error {
	w.committed = true
	c, h := w.c, w.header
	bodyOK := bodyAllowedForStatus(w.status)
	skip := fieldTransferEncoding

	autoLength := false
	if w.handlerDone && w.cl < 0 && bodyOK && (!w.head || len(w.pending) > 0) && !w.badLength && !hasTrailers(h) {
		// All of the body is here: give it a length (unless the
		// handler gave a bad one, as net/http).
		w.cl = int64(len(w.pending))
		autoLength = true
	}

	keepAlive10 := false
	if w.wants10KeepAlive && (w.head || w.cl >= 0 || !bodyOK) {
		_, set := h["Connection"]
		keepAlive10 = !set
	} else if !w.is11 || w.wantsClose {
		w.closeAfter = true
	}
	connClose := false
	if vs := h["Connection"]; len(vs) > 0 && hasToken(vs[0], "close") {
		w.closeAfter, connClose = true, true
	}
	if c.isDraining() {
		w.closeAfter = true
	}
	if b := w.body; b != nil && b.expect && !b.atEOF() {
		// The client may still be waiting for a 100 Continue.
		w.closeAfter = true
	}
	if w.req.ContentLength != 0 && !w.closeAfter && !w.fullDuplex && w.body != nil && !w.body.discard() {
		// Clients that send their whole request before reading the
		// response need the body read before the response starts.
		w.closeAfter = true
	}

	var sniffed string
	if bodyOK {
		sniff := w.pending
		if len(sniff) == 0 {
			sniff = next
		}
		if _, ok := h["Content-Type"]; !ok && len(sniff) > 0 && h.Get("Content-Encoding") == "" {
			sniffed = http.DetectContentType(sniff)
		}
	} else {
		skip |= fieldContentLength
		if w.status == http.StatusNotModified {
			skip |= fieldContentType
		}
	}
	switch {
	case w.head || !bodyOK, w.cl >= 0:
	case w.is11:
		w.chunked = true
		skip |= fieldContentLength
	default:
		w.closeAfter = true // the end of the connection ends the body
	}
	if w.closeAfter {
		keepAlive10 = false
		if !connClose {
			skip |= fieldConnection
		}
	}

	c.writeStatusLine(w.is11, w.status)
	c.writeFields(h, skip, declaredTrailers(h))
	bw := c.bw
	if autoLength {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(c.num[:0], w.cl, 10))
		bw.WriteString("\r\n")
	}
	if sniffed != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(sniffed)
		bw.WriteString("\r\n")
	}
	switch {
	case w.closeAfter && !connClose && w.is11:
		bw.WriteString("Connection: close\r\n")
	case keepAlive10:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if _, ok := h["Date"]; !ok {
		bw.Write(c.dateLine())
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		w.closeAfter = true
		return err
	}
	if len(w.pending) > 0 {
		pending := w.pending
		w.pending = w.pending[:0]
		if _, err := w.writeBody(pending); err != nil {
			return err
		}
	}
	return nil
}

// hasTrailers reports whether h announces trailers.
func hasTrailers(h http.Header) bool {
	if len(h["Trailer"]) > 0 {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// finish ends the response once the handler has returned: the header
// if not yet sent, the last chunk and trailers, then all to the wire.
func (w *downResponse) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(nil)
	}
	c := w.c
	if w.chunked {
		c.bw.WriteString("0\r\n")
		w.writeTrailers()
		c.bw.WriteString("\r\n")
	}
	if !w.head && w.cl >= 0 && bodyAllowedForStatus(w.status) && w.written != w.cl {
		// Short of its Content-Length: only the close can tell.
		w.closeAfter = true
	}
	if c.bw.Flush() != nil {
		w.closeAfter = true
	}
}

// writeTrailers writes the trailers: the fields named by
// http.TrailerPrefix, and those the Trailer header announced.
func (w *downResponse) writeTrailers() {
	c, h := w.c, w.header
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validFieldName(name) {
			for _, v := range vs {
				c.writeField(name, v)
			}
		}
	}
	for _, name := range declaredTrailers(h) {
		for _, v := range h[name] {
			c.writeField(name, v)
		}
	}
}

// declaredTrailers are the fields h's Trailer header announces: set
// after the header was written, they go out after the body, not in the
// header.
func declaredTrailers(h http.Header) []string {
	var names []string
	for _, list := range h["Trailer"] {
		for f := range strings.SplitSeq(list, ",") {
			name := http.CanonicalHeaderKey(textproto.TrimString(f))
			switch name {
			case "", "Transfer-Encoding", "Content-Length", "Trailer":
				continue
			}
			names = append(names, name)
		}
	}
	return names
}
