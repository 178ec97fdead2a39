package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// parsed is what a response parser made of a message: its head, its
// body, and what the reader had left after the body (the next message,
// which the two parsers must agree on).
type parsed struct {
	Err              bool
	Status           string
	StatusCode       int
	Proto            string
	ProtoMajor       int
	ProtoMinor       int
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	Close            bool
	TrailerBefore    http.Header
	bodyOutcome
}

// bodyOutcome is what reading a message's body gave, and what the reader
// had left after it (the next message, which the parsers must agree on).
type bodyOutcome struct {
	Body    string
	BodyErr string
	Trailer http.Header
	Rest    string
}

// readOutcome reads body to its end, then the trailer *trailer holds by
// then, then what br has left.
func readOutcome(body io.Reader, trailer *http.Header, br *bufio.Reader) bodyOutcome {
	b, err := io.ReadAll(body)
	o := bodyOutcome{Body: string(b), Trailer: *trailer}
	switch {
	case err == nil:
	case errors.Is(err, io.ErrUnexpectedEOF):
		o.BodyErr = "unexpected EOF"
	default:
		o.BodyErr = "error" // the texts differ (net/http's internal errors)
	}
	rest, _ := io.ReadAll(br)
	o.Rest = string(rest)
	return o
}

func describe(resp *http.Response, err error, br *bufio.Reader) parsed {
	if err != nil {
		return parsed{Err: true}
	}
	p := parsed{
		Status: resp.Status, StatusCode: resp.StatusCode,
		Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: resp.Header, ContentLength: resp.ContentLength,
		TransferEncoding: resp.TransferEncoding, Close: resp.Close,
		TrailerBefore: resp.Trailer.Clone(),
	}
	p.bodyOutcome = readOutcome(resp.Body, &resp.Trailer, br)
	return p
}

// TestResponseParserMatchesNetHTTP holds the HTTP/1.1 client's parser to
// http.ReadResponse: the same fields, body, trailers and framing (what
// is left for the next response), and an error for the same heads.
func TestResponseParserMatchesNetHTTP(t *testing.T) {
	next := "HTTP/1.1 204 No Content\r\n\r\n"
	cases := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello" + next,
		"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello" + next,
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n" + next,
		"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1  200  Fine  Thanks\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil the end",
		"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil the end",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" + next,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nContent-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + next,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status, grpc-message\r\n\r\n3\r\nabc\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: ok\r\n\r\n" + next,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Undeclared: 1\r\n\r\n" + next,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\na" + next,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length:  3 \r\n\r\nabc" + next,
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n" + next,
		"HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" + next,
		"HTTP/1.1 100 Continue\r\n\r\n" + next,
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + next,
		"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno" + next,
		"HTTP/1.1 200 OK\r\nX-Multi: a\r\nX-Multi: b\r\nx-multi: c\r\nX-One:  spaced \t\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Fold:\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Fold: a\r\n \r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\x01\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n Leading: space\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
		"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad\x01Name: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nSpace Name: v\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nBad-Value: a\x01b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nDel-Value: a\x7fb\r\n\r\n",
		"HTTP/1.1 200 OK\r\nHigh-Value: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nCR-Value: a\rb\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nx-lower_case: v\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/1.1 -10 OK\r\n\r\n",
		"HTTP/1.1\r\n\r\n",
		"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/0.9 200 OK\r\nContent-Length: 1\r\n\r\na",
		"HTTP/x.y 200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"\r\nHTTP/1.1 200 OK\r\n\r\n",
		"",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
		"HTTP/1.1 200 OK\r\nContent-Len",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chun\u212aed\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/1.0 200 OK\r\nConnection: \u212aeep-alive\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/1.1 200 OK\r\nConnection: clo\u017fe\r\nContent-Length: 3\r\n\r\nabc" + next,
		"HTTP/0.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/0.0 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	}
	// Lines that end at or just past the edge of the reader's buffer
	// (4 KiB): the head goes on after them.
	for _, n := range []int{4091, 4092, 4093, 4094, 4095, 4096, 8190} {
		long := strings.Repeat("a", n)
		cases = append(cases,
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: "+long+"\r\nSet-Cookie: s=1\r\n\r\nhello"+next,
			"HTTP/1.1 200 "+long+"\r\nContent-Length: 5\r\n\r\nhello"+next,
		)
	}
	for _, raw := range cases {
		for _, method := range []string{"GET", "HEAD"} {
			req := &http.Request{Method: method}

			br := bufio.NewReader(strings.NewReader(raw))
			want, err := http.ReadResponse(br, req)
			if err == nil {
				// net/http alone adds this; the proxy passes the head on as
				// it came.
				if _, ok := want.Header["Cache-Control"]; !ok && want.Header.Get("Pragma") == "no-cache" {
					delete(want.Header, "Cache-Control")
				}
			}
			wantP := describe(want, err, br)

			br = bufio.NewReader(strings.NewReader(raw))
			got, err := parseOne(br, req)
			gotP := describe(got, err, br)
			if !reflect.DeepEqual(gotP, wantP) {
				t.Errorf("%s %q:\n got %+v\nwant %+v", method, raw, gotP, wantP)
			}
		}
	}
}

// parseOne reads one response with the client's parser.
func parseOne(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	head, _, err := readHead(br, nil, 0)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	resp := new(http.Response)
	kind, n, err := parseResponse(head, req, resp)
	if err != nil {
		return nil, err
	}
	if kind == bodyNone {
		resp.Body = http.NoBody
		return resp, nil
	}
	b := new(msgBody)
	b.init(br, kind, n, &resp.Trailer)
	resp.Body = io.NopCloser(b)
	return resp, nil
}

// TestResponseParserAllocations pins the point of the parser: a usual
// response costs a handful of allocations, not net/http's dozen.
func TestResponseParserAllocations(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\nContent-Length: 5\r\nX-Request: 1\r\n\r\nhello"
	req := &http.Request{Method: "GET"}
	sr := strings.NewReader(raw)
	br := bufio.NewReader(sr)
	var buf []byte
	var resp http.Response
	var b msgBody
	p := make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(raw)
		br.Reset(sr)
		var head string
		var err error
		head, buf, err = readHead(br, buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		kind, n, err := parseResponse(head, req, &resp)
		if err != nil {
			t.Fatal(err)
		}
		b.init(br, kind, n, &resp.Trailer)
		if n, err := b.Read(p); n != 5 || err != io.EOF {
			t.Fatalf("body read %d, %v", n, err)
		}
	})
	// The head string, the header map and the values' slice.
	if allocs > 4 {
		t.Errorf("%v allocations per response, want at most 4", allocs)
	}
	br = bufio.NewReader(strings.NewReader(raw))
	allocsNetHTTP := testing.AllocsPerRun(100, func() {
		sr.Reset(raw)
		br.Reset(sr)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	})
	t.Logf("allocations per response: %v (net/http: %v)", allocs, allocsNetHTTP)
}

// parsedRequest is what a request parser made of a message.
type parsedRequest struct {
	Err              bool
	TE               bool // the error is an unsupported Transfer-Encoding (501)
	Method           string
	URL              url.URL
	RequestURI       string
	Proto            string
	ProtoMajor       int
	ProtoMinor       int
	Header           http.Header
	Host             string
	Close            bool
	ContentLength    int64
	TransferEncoding []string
	TrailerBefore    http.Header
	bodyOutcome
}

func describeRequest(r *http.Request, err error, br *bufio.Reader) parsedRequest {
	if err != nil {
		return parsedRequest{Err: true, TE: strings.Contains(err.Error(), "transfer encoding")}
	}
	p := parsedRequest{
		Method: r.Method, URL: *r.URL, RequestURI: r.RequestURI,
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: r.Header, Host: r.Host, Close: r.Close, ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, TrailerBefore: r.Trailer.Clone(),
	}
	p.bodyOutcome = readOutcome(r.Body, &r.Trailer, br)
	return p
}

// TestRequestParserMatchesNetHTTP holds the HTTP/1.1 loop's parser to
// http.ReadRequest, as TestResponseParserMatchesNetHTTP does the
// client's.
func TestRequestParserMatchesNetHTTP(t *testing.T) {
	next := "GET /next HTTP/1.1\r\nHost: n\r\n\r\n"
	cases := []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n" + next,
		"GET /a/b?x=1&y=%20 HTTP/1.1\nHost: h\n\n" + next,
		"GET /a%2Fb/c%20d?q HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /x? HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /x#frag HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET //double/slash HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://other.example:8080/p?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
		"GET relative HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT /rpc HTTP/1.1\r\nHost: h\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + next,
		"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, Close\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
		"GET / HTTP/0.9\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
		"GET /\r\nHost: h\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
		"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
		"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
		" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
		"get / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\n\r\nnot a body" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nshort",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Late: 1\r\n\r\n" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: Host\r\n\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nab" + next,
		"POST /p HTTP/1.1\r\nHost: h\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\na",
		"GET / HTTP/1.1\r\nHost: h\r\nX-Fold: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nSpace Name: v\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello",
		"GET / HTTP/1.1\r\nHost: h\r\nBad: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nx-lower: 1\r\naccept-encoding: gzip\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"",
		"GET / HTTP/1.1\r\nHost: h\r\n",
		"GET / HTTP/1.1",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chun\u212aed\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: \u212aeep-alive\r\n\r\n" + next,
		"GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe\r\n\r\n" + next,
		"POST / HTTP/0.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"PRI * HTTP/2.0\r\nHost: a\r\n\r\n",
	}
	for _, n := range []int{4070, 4079, 4080, 4081, 4082, 4083, 4091, 4092, 4093, 4094, 4095, 4096} {
		long := strings.Repeat("a", n)
		cases = append(cases,
			"GET /"+long+" HTTP/1.1\r\nHost: h\r\n\r\n"+next,
			"POST / HTTP/1.1\r\nHost: h\r\nX: "+long+"\r\nContent-Length: 5\r\n\r\nhello"+next,
		)
	}
	for _, raw := range cases {
		br := bufio.NewReader(strings.NewReader(raw))
		want, err := http.ReadRequest(br)
		if err == nil {
			if _, ok := want.Header["Cache-Control"]; !ok && want.Header.Get("Pragma") == "no-cache" {
				delete(want.Header, "Cache-Control")
			}
		}
		wantP := describeRequest(want, err, br)

		br = bufio.NewReader(strings.NewReader(raw))
		got, err := parseOneRequest(br)
		gotP := describeRequest(got, err, br)
		if !reflect.DeepEqual(gotP, wantP) {
			t.Errorf("%q:\n got %+v\nwant %+v", raw, gotP, wantP)
		}
	}
}

// parseOneRequest reads one request with the loop's parser.
func parseOneRequest(br *bufio.Reader) (*http.Request, error) {
	head, _, err := readHead(br, nil, 0)
	if err != nil {
		return nil, err
	}
	r := new(http.Request)
	kind, n, err := parseRequest(head, r)
	if err != nil {
		return nil, err
	}
	r.Body = http.NoBody
	if kind != bodyNone {
		b := new(msgBody)
		b.init(br, kind, n, &r.Trailer)
		r.Body = b
	}
	return r, nil
}

// TestRequestParserAllocations: the head string, the header map and the
// values' slice, and the URL.
func TestRequestParserAllocations(t *testing.T) {
	raw := "POST /echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: fortio.org/fortio-1.68.2\r\nContent-Length: 5\r\nContent-Type: application/octet-stream\r\n\r\nhello"
	sr := strings.NewReader(raw)
	br := bufio.NewReader(sr)
	var buf []byte
	var r http.Request
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(raw)
		br.Reset(sr)
		var head string
		var err error
		head, buf, err = readHead(br, buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		if kind, n, err := parseRequest(head, &r); err != nil || kind != bodyLength || n != 5 {
			t.Fatalf("parsed %v %d %v", kind, n, err)
		}
	})
	if allocs > 5 {
		t.Errorf("%v allocations per request head, want at most 5", allocs)
	}
	allocsNetHTTP := testing.AllocsPerRun(100, func() {
		sr.Reset(raw)
		br.Reset(sr)
		if _, err := http.ReadRequest(br); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per request head: %v (net/http: %v)", allocs, allocsNetHTTP)
}

// A trailer section longer than maxTrailerBytes fails the body, and the
// failure stays.
func TestTrailerLimit(t *testing.T) {
	raw := "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" +
		strings.Repeat("X-T: "+strings.Repeat("a", 1000)+"\r\n", maxTrailerBytes/1000+1) + "\r\n"
	r, err := parseOneRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r.Body); err != errHeadTooLong {
		t.Fatalf("reading the body: %v, want %v", err, errHeadTooLong)
	}
	if _, err := r.Body.Read(make([]byte, 1)); err != errHeadTooLong {
		t.Fatalf("reading again: %v, want %v", err, errHeadTooLong)
	}
}

// Trailer lines that end at or past the edge of the reader's buffer are
// read whole, and the trailer section goes on after them (net/http
// refuses a trailer section beyond its buffer; the proxy takes Envoy's
// limit).
func TestLongTrailerLines(t *testing.T) {
	for _, n := range []int{4091, 4092, 4093, 4094, 4095, 4096, 8190} {
		long := strings.Repeat("a", n)
		raw := "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\nX: " + long + "\r\nY: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
		br := bufio.NewReader(strings.NewReader(raw))
		r, err := parseOneRequest(br)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || string(body) != "b" {
			t.Fatalf("%d: body %q, %v", n, body, err)
		}
		if len(r.Trailer["X"]) != 1 || r.Trailer["X"][0] != long || r.Trailer.Get("Y") != "1" {
			t.Errorf("%d: trailer X of %d bytes, Y %q", n, len(r.Trailer.Get("X")), r.Trailer.Get("Y"))
		}
		if rest, _ := io.ReadAll(br); string(rest) != "GET /next HTTP/1.1\r\n\r\n" {
			t.Errorf("%d: left %q", n, rest)
		}
	}
}
