package rpc

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
)

// MaxBodyBytes bounds the body of a forwarded request and of its
// response. gRPC messages are limited to this plus room for the rest of
// the message, so a larger body cannot be forwarded at all.
const MaxBodyBytes = 64 << 20

// maxMessageBytes is the gRPC message limit on both sides: a body of
// MaxBodyBytes plus headers and the other fields.
const maxMessageBytes = MaxBodyBytes + 4<<20

// ErrBodyTooLarge is returned by RequestFromHTTP when the request body is
// longer than its limit. An HTTP front end answers it with 413.
var ErrBodyTooLarge = errors.New("rpc: request body too large")

// HTTPRequest is an API request forwarded to a server.
type HTTPRequest struct {
	Method string
	// Path is the escaped path, as on the request line
	// ("/v1/kv/a%2Fb"), so that escaped slashes survive forwarding.
	Path     string
	RawQuery string
	// Header holds the request headers in canonical form, and "Host" for
	// the request's host. Hop-by-hop headers are not forwarded.
	Header map[string][]string
	Body   []byte
	// Datacenter is the datacenter the forwarder meant the request for;
	// the server's handler reads it with ForwardedDatacenter.
	Datacenter string
}

// HTTPResponse is a forwarded request's response.
type HTTPResponse struct {
	Status int
	Header map[string][]string
	Body   []byte
}

// hopHeaders describe one connection, not the request: they are dropped
// when a request or response crosses to another connection (RFC 9110
// section 7.6.1).
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RequestFromHTTP captures r for forwarding, reading its body. A body
// longer than maxBody bytes fails with ErrBodyTooLarge (wrapped) and r's
// body is then partly consumed. maxBody <= 0 or above MaxBodyBytes means
// MaxBodyBytes. Datacenter is left empty for the caller to set.
func RequestFromHTTP(r *http.Request, maxBody int64) (*HTTPRequest, error) {
	if maxBody <= 0 || maxBody > MaxBodyBytes {
		maxBody = MaxBodyBytes
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("rpc: %s %s: read body: %w", r.Method, r.URL.Path, err)
		}
		if int64(len(body)) > maxBody {
			return nil, fmt.Errorf("%w: %s %s: more than %d bytes", ErrBodyTooLarge, r.Method, r.URL.Path, maxBody)
		}
	}
	header := cloneHeader(r.Header)
	if r.Host != "" {
		if header == nil {
			header = make(map[string][]string)
		}
		header["Host"] = []string{r.Host}
	}
	return &HTTPRequest{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Header:   header,
		Body:     body,
	}, nil
}

// Write writes the response to w: headers (but hop-by-hop ones), status
// and body. It returns the error of writing the body, or an error without
// writing anything but a 502 status if Status is not a valid HTTP status.
func (resp *HTTPResponse) Write(w http.ResponseWriter) error {
	if resp.Status < 100 || resp.Status > 999 {
		w.WriteHeader(http.StatusBadGateway)
		return fmt.Errorf("rpc: forwarded response has invalid status %d", resp.Status)
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = append([]string(nil), v...)
	}
	removeHopHeaders(h)
	w.WriteHeader(resp.Status)
	if len(resp.Body) == 0 {
		return nil
	}
	_, err := w.Write(resp.Body)
	return err
}

// cloneHeader copies h without its hop-by-hop headers; nil stays nil.
func cloneHeader(h http.Header) map[string][]string {
	if h == nil {
		return nil
	}
	out := http.Header(make(map[string][]string, len(h)))
	for k, v := range h {
		out[k] = append([]string(nil), v...)
	}
	removeHopHeaders(out)
	return out
}

// removeHopHeaders deletes the hop-by-hop headers from h, including those
// its Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}
