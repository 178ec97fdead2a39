package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// Parsing of HTTP/1.1 response heads, with net/http's rules but not its
// allocations: http.ReadResponse makes a string per line and per field
// value, a reader per body layer and a transfer struct, a dozen
// allocations for a usual response. Here the head is read into a pooled
// buffer and made one string; the status, names and values are pieces of
// it, the values share one slice, and the body is read by the h1Body the
// response lives in. TestResponseParserMatchesNetHTTP holds the result to
// http.ReadResponse's, field by field, for valid and invalid heads.

// readHead reads a message head, up to and with its empty line, and
// returns it as one string. buf is scratch space, returned for reuse.
// A head longer than limit (> 0) is refused; the callers that read a
// message's head limit what the connection gives them instead.
func readHead(br *bufio.Reader, buf []byte, limit int) (string, []byte, error) {
	buf = buf[:0]
	start := 0 // of the line being read
	for {
		piece, err := br.ReadSlice('\n')
		buf = append(buf, piece...)
		if limit > 0 && len(buf) > limit {
			return "", buf, errHeadTooLong
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue // the line goes on past the reader's buffer
		case err == io.EOF && len(buf) == 0:
			return "", buf, io.EOF
		case err == io.EOF:
			return "", buf, io.ErrUnexpectedEOF
		case err != nil:
			return "", buf, err
		}
		// An empty line ends the head (or, first, is an empty start
		// line, which the parser refuses).
		if line := buf[start:]; len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			return string(buf), buf, nil
		}
		start = len(buf)
	}
}

var errHeadTooLong = errors.New("proxy: trailer section too long")

// maxTrailerBytes bounds a chunked body's trailer section: Envoy's
// header limit, which it applies to trailers too.
const maxTrailerBytes = maxRequestHeaderBytes

// nextLine splits s into its first line, without CRLF or LF, and the rest.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// parseFields parses the field lines of a head (s, after the start line)
// into a new header, as textproto.Reader.ReadMIMEHeader does.
func parseFields(s string) (http.Header, error) {
	n := max(strings.Count(s, "\n")-1, 0) // the field lines, but for the empty one
	h := make(http.Header, n)
	vals := make([]string, 0, n) // one backing array for single values
	var last string              // the last field's name, for obs-fold
	for {
		var line string
		line, s = nextLine(s)
		if line == "" {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold (RFC 9112 5.2): joined to the previous value with
			// one space, as textproto does.
			if last == "" {
				return nil, textproto.ProtocolError("malformed MIME header initial line: " + line)
			}
			vs := h[last]
			v := trimOWS(line)
			if !validFieldValue(v) {
				return nil, textproto.ProtocolError("malformed MIME header line: " + line)
			}
			vs[len(vs)-1] = joinFold(vs[len(vs)-1], v)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, textproto.ProtocolError("malformed MIME header: missing colon: " + line)
		}
		k, ok = fieldKey(k)
		v = trimOWS(v)
		if !ok || !validFieldValue(v) {
			return nil, textproto.ProtocolError("malformed MIME header line: " + line)
		}
		last = k
		if vs, ok := h[k]; ok {
			h[k] = append(vs, v)
			continue
		}
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// joinFold joins an obs-fold line's value to the field's value, as
// textproto does: with one space, where the line is empty too.
func joinFold(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}

// trimOWS trims spaces and tabs at both ends.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// fieldKey is the map key of a field name: canonical, as textproto
// makes it. Like textproto, it takes a name with spaces as it is (see
// go.dev/issue/34540); such a field is never forwarded (writeFields).
func fieldKey(k string) (string, bool) {
	if k == "" {
		return "", false
	}
	spaces := false
	for i := 0; i < len(k); i++ {
		switch b := k[i]; {
		case b == ' ':
			spaces = true
		case !isFieldNameByte(b):
			return "", false
		}
	}
	if spaces {
		return k, true
	}
	return textproto.CanonicalMIMEHeaderKey(k), true
}

// bodyKind says how a message's body is delimited.
type bodyKind uint8

const (
	bodyNone    bodyKind = iota
	bodyLength           // Content-Length bytes
	bodyChunked          // chunked, then trailers
	bodyToEOF            // until the connection closes
)

// parseResponse parses a response head (readHead's string) to the
// request req into resp, and says how its body is delimited and, for
// bodyLength, how long it is.
func parseResponse(head string, req *http.Request, resp *http.Response) (bodyKind, int64, error) {
	line, rest := nextLine(head)
	proto, status, ok := strings.Cut(line, " ")
	if !ok {
		return 0, 0, fmt.Errorf("malformed HTTP response %q", line)
	}
	status = strings.TrimLeft(status, " ")
	code, _, _ := strings.Cut(status, " ")
	if len(code) != 3 {
		return 0, 0, fmt.Errorf("malformed HTTP status code %q", code)
	}
	c, err := strconv.Atoi(code)
	if err != nil || c < 0 {
		return 0, 0, fmt.Errorf("malformed HTTP status code %q", code)
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return 0, 0, fmt.Errorf("malformed HTTP version %q", proto)
	}
	h, err := parseFields(rest)
	if err != nil {
		return 0, 0, err
	}
	*resp = http.Response{
		Status: status, StatusCode: c,
		Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: h, Request: req,
	}
	return respTransfer(resp, req.Method)
}

// respTransfer works out the framing of resp's body from its head, with
// net/http's rules (RFC 9112 6), and sets ContentLength,
// TransferEncoding, Close and Trailer.
func respTransfer(resp *http.Response, method string) (bodyKind, int64, error) {
	h := resp.Header
	resp.Close = closes(resp.ProtoMajor, resp.ProtoMinor, h["Connection"])
	if resp.Close && resp.ProtoAtLeast(1, 1) {
		delete(h, "Connection") // net/http drops an HTTP/1.1 close
	}
	chunked, err := chunkedTE(h, resp.ProtoMajor, resp.ProtoMinor)
	if err != nil {
		return 0, 0, err
	}
	if chunked {
		resp.TransferEncoding = chunkedEncoding
	}

	// Content-Length: repeats must agree, and count as one; the value
	// must be valid even where it does not apply.
	declared, err := contentLength(h)
	if err != nil {
		return 0, 0, err
	}
	_, hasCL := h["Content-Length"]
	noBody := method == http.MethodHead || !bodyAllowedForStatus(resp.StatusCode)
	length := int64(-1) // of the body to read; -1: chunked or to EOF
	switch {
	case noBody:
		length = 0
	case chunked:
		delete(h, "Content-Length")
	case hasCL:
		length = declared
	default:
		delete(h, "Content-Length")
	}
	resp.ContentLength = length
	if method == http.MethodHead {
		resp.ContentLength = declared
	}

	if chunked {
		tr, err := trailerKeys(h)
		if err != nil {
			return 0, 0, err
		}
		resp.Trailer = tr
	}
	if length == -1 && !chunked {
		resp.Close = true // the body ends with the connection
	}
	switch {
	case chunked && noBody, length == 0:
		return bodyNone, 0, nil
	case chunked:
		return bodyChunked, 0, nil
	case length > 0:
		return bodyLength, length, nil
	}
	return bodyToEOF, 0, nil
}

var chunkedEncoding = []string{"chunked"}

// teApplies says whether Transfer-Encoding counts in a message of this
// version: not in HTTP/1.0, as net/http has it, which takes 0.0 (no
// version it could parse) for 1.1.
func teApplies(major, minor int) bool {
	return major > 1 || major == 1 && minor >= 1 || major == 0 && minor == 0
}

// asciiEqualFold is strings.EqualFold for ASCII only: HTTP's tokens are
// ASCII, and Unicode's folds (the Kelvin sign for k) must not turn a
// value into "chunked" or "close".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// parseContentLength parses a Content-Length value as net/http does.
func parseContentLength(v string) (int64, error) {
	v = textproto.TrimString(v)
	if v == "" {
		return 0, errors.New(`invalid empty Content-Length ""`)
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("bad Content-Length %q", v)
	}
	return int64(n), nil
}

// closes says whether the connection ends after a message of this
// version with these Connection fields, as net/http has it.
func closes(major, minor int, conn []string) bool {
	switch {
	case major < 1:
		return true
	case major == 1 && minor == 0:
		return headerHasToken(conn, "close") || !headerHasToken(conn, "keep-alive")
	}
	return headerHasToken(conn, "close")
}

// chunkedTE reads and removes h's Transfer-Encoding: whether the body is
// chunked, or an errUnsupportedTE. It counts only where net/http lets it
// (teApplies).
func chunkedTE(h http.Header, major, minor int) (bool, error) {
	te, ok := h["Transfer-Encoding"]
	if !ok {
		return false, nil
	}
	delete(h, "Transfer-Encoding")
	switch {
	case !teApplies(major, minor):
		return false, nil
	case len(te) != 1:
		return false, errUnsupportedTE(fmt.Sprintf("too many transfer encodings: %q", te))
	case !asciiEqualFold(te[0], "chunked"):
		return false, errUnsupportedTE(fmt.Sprintf("unsupported transfer encoding: %q", te[0]))
	}
	return true, nil
}

func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		if hasToken(v, token) {
			return true
		}
	}
	return false
}

// trailerKeys is the Trailer field of a chunked message: the names
// it declares, as keys of a new header, and the field removed.
func trailerKeys(h http.Header) (http.Header, error) {
	vs, ok := h["Trailer"]
	if !ok {
		return nil, nil
	}
	delete(h, "Trailer")
	tr := http.Header{}
	for _, v := range vs {
		for k := range strings.SplitSeq(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return nil, fmt.Errorf("bad trailer key %q", k)
			}
			if k != "" {
				tr[k] = nil
			}
		}
	}
	if len(tr) == 0 {
		return nil, nil
	}
	return tr, nil
}

// msgBody reads a message body from br as its head delimits it.
type msgBody struct {
	br      *bufio.Reader
	kind    bodyKind
	left    int64     // bodyLength: bytes still to read
	chunks  io.Reader // bodyChunked
	trailer *http.Header
	eof     bool
	err     error // of the trailer, returned from then on
}

func (b *msgBody) init(br *bufio.Reader, kind bodyKind, n int64, trailer *http.Header) {
	*b = msgBody{br: br, kind: kind, left: n, trailer: trailer}
	if kind == bodyChunked {
		b.chunks = httputil.NewChunkedReader(br)
	}
}

func (b *msgBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	switch b.kind {
	case bodyLength:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.eof = true
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case bodyChunked:
		n, err := b.chunks.Read(p)
		if err == io.EOF {
			if err := b.readTrailer(); err != nil {
				b.err = err
				return n, err
			}
			b.eof = true
		}
		return n, err
	case bodyToEOF:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.eof = true
		}
		return n, err
	}
	b.eof = true
	return 0, io.EOF
}

// readTrailer reads the trailer section after the last chunk into
// *b.trailer, merging with the names declared.
func (b *msgBody) readTrailer() error {
	head, _, err := readHead(b.br, nil, maxTrailerBytes)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if head == "\r\n" || head == "\n" {
		return nil
	}
	h, err := parseFields(head)
	if err != nil {
		return err
	}
	if *b.trailer == nil {
		*b.trailer = h
		return nil
	}
	for k, vs := range h {
		(*b.trailer)[k] = vs
	}
	return nil
}

// errUnsupportedTE is a Transfer-Encoding the server does not take: 501,
// as net/http answers.
type errUnsupportedTE string

func (e errUnsupportedTE) Error() string { return string(e) }

// parseRequest parses a request head (readHead's string) into r, as
// http.ReadRequest does, and says how its body is delimited and, for
// bodyLength, how long it is. Where the proxy differs: a Pragma:
// no-cache is passed on as it came (net/http adds a Cache-Control).
func parseRequest(head string, r *http.Request) (bodyKind, int64, error) {
	line, rest := nextLine(head)
	method, rest1, ok1 := strings.Cut(line, " ")
	uri, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("malformed HTTP request %q", line)
	}
	if !validFieldName(method) {
		return 0, 0, fmt.Errorf("invalid method %q", method)
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return 0, 0, fmt.Errorf("malformed HTTP version %q", proto)
	}
	// CONNECT's target is an authority, but for net/rpc's paths.
	rawURL := uri
	justAuthority := method == http.MethodConnect && !strings.HasPrefix(uri, "/")
	if justAuthority {
		rawURL = "http://" + uri
	}
	u, err := url.ParseRequestURI(rawURL)
	if err != nil {
		return 0, 0, err
	}
	if justAuthority {
		u.Scheme = ""
	}
	h, err := parseFields(rest)
	if err != nil {
		return 0, 0, err
	}
	hosts := h["Host"]
	if len(hosts) > 1 {
		return 0, 0, errors.New("too many Host headers")
	}
	*r = http.Request{
		Method: method, URL: u, RequestURI: uri,
		Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: h, Host: u.Host,
	}
	if r.Host == "" && len(hosts) == 1 {
		r.Host = hosts[0]
	}
	// The HTTP/2 preface read as HTTP/1: net/http marks it so.
	h2Preface := method == "PRI" && len(h) == 0 && u.Path == "*" && proto == "HTTP/2.0"
	delete(h, "Host") // r.Host has it

	r.Close = closes(major, minor, h["Connection"])
	chunked, err := chunkedTE(h, major, minor)
	if err != nil {
		return 0, 0, err
	}
	if chunked {
		r.TransferEncoding = chunkedEncoding
	}
	declared, err := contentLength(h)
	if err != nil {
		return 0, 0, err
	}
	kind, length := bodyNone, int64(0)
	switch {
	case chunked:
		delete(h, "Content-Length")
		kind, length = bodyChunked, -1
		tr, err := trailerKeys(h)
		if err != nil {
			return 0, 0, err
		}
		r.Trailer = tr
	case declared >= 0:
		length = declared
		if declared > 0 {
			kind = bodyLength
		}
	default:
		delete(h, "Content-Length")
	}
	r.ContentLength = length
	if h2Preface {
		r.ContentLength, r.Close = -1, true
	}
	if kind == bodyLength {
		return kind, length, nil
	}
	return kind, 0, nil
}

// contentLength checks h's Content-Length, folds agreeing repeats into
// one, and returns its value; -1 if there is none.
func contentLength(h http.Header) (int64, error) {
	cls := h["Content-Length"]
	if len(cls) == 0 {
		return -1, nil
	}
	if len(cls) > 1 {
		first := textproto.TrimString(cls[0])
		for _, cl := range cls[1:] {
			if textproto.TrimString(cl) != first {
				return 0, fmt.Errorf("http: message cannot contain multiple Content-Length headers; got %q", cls)
			}
		}
		cls = []string{first}
		h["Content-Length"] = cls
	}
	return parseContentLength(cls[0])
}

// Close lets a msgBody stand for a body that the loop closes itself.
func (b *msgBody) Close() error { return nil }
