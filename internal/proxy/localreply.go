package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Local replies are the responses the proxy makes itself (RBAC denials,
// no route, no host, upstream failures, timeouts), never the upstream's.
// An HCM's local_reply_config may rewrite them; gRPC requests get them as
// gRPC: HTTP 200, with grpc-status and grpc-message (the body) in a
// trailers-only response, as Envoy sends them.

// Local reply bodies, Envoy's texts: clients and tests match on them.
const (
	bodyRBACDenied     = "RBAC: access denied"
	bodyNoHealthy      = "no healthy upstream"
	bodyConnectFailure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset          = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyOverflow       = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyTimeout        = "upstream request timeout"
	bodyStreamTimeout  = "stream timeout"
)

// gRPC status codes the proxy sends.
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcInternal         = 13
	grpcUnimplemented    = 12
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// localReplyConfig is an HCM's local_reply_config: the first mapper
// whose filter matches rewrites the reply.
type localReplyConfig struct {
	mappers []replyMapper
}

type replyMapper struct {
	match   func(code int) bool
	status  int     // 0: keep
	body    *string // nil: keep
	headers *headerMutation
}

func compileLocalReply(c *hcmv3.LocalReplyConfig) (*localReplyConfig, error) {
	if c == nil {
		return nil, nil
	}
	if c.GetBodyFormat() != nil {
		return nil, errors.New("body_format is not supported")
	}
	out := &localReplyConfig{}
	for i, m := range c.GetMappers() {
		if m.GetBodyFormatOverride() != nil {
			return nil, fmt.Errorf("mapper %d: body_format_override is not supported", i)
		}
		sc, ok := m.GetFilter().GetFilterSpecifier().(*accesslogv3.AccessLogFilter_StatusCodeFilter)
		if !ok {
			return nil, fmt.Errorf("mapper %d: only status_code_filter is supported, not %T", i, m.GetFilter().GetFilterSpecifier())
		}
		match, err := compileComparison(sc.StatusCodeFilter.GetComparison())
		if err != nil {
			return nil, fmt.Errorf("mapper %d: %w", i, err)
		}
		rm := replyMapper{match: match}
		if s := m.GetStatusCode(); s != nil {
			if s.GetValue() < 200 || s.GetValue() > 599 {
				return nil, fmt.Errorf("mapper %d: status_code %d out of range", i, s.GetValue())
			}
			rm.status = int(s.GetValue())
		}
		if b := m.GetBody(); b != nil {
			data, err := inlineBytes(b)
			if err != nil {
				return nil, fmt.Errorf("mapper %d: body: %w", i, err)
			}
			s := string(data)
			rm.body = &s
		}
		if rm.headers, err = compileHeaderMutation(m.GetHeadersToAdd(), nil); err != nil {
			return nil, fmt.Errorf("mapper %d: %w", i, err)
		}
		out.mappers = append(out.mappers, rm)
	}
	return out, nil
}

func compileComparison(c *accesslogv3.ComparisonFilter) (func(int) bool, error) {
	v := int(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return func(code int) bool { return code == v }, nil
	case accesslogv3.ComparisonFilter_GE:
		return func(code int) bool { return code >= v }, nil
	case accesslogv3.ComparisonFilter_LE:
		return func(code int) bool { return code <= v }, nil
	case accesslogv3.ComparisonFilter_NE:
		return func(code int) bool { return code != v }, nil
	default:
		return nil, fmt.Errorf("comparison %s is not supported", c.GetOp())
	}
}

// rewrite applies the first matching mapper to a reply.
func (c *localReplyConfig) rewrite(code int, body string, h http.Header, r *http.Request) (int, string) {
	if c == nil {
		return code, body
	}
	for i := range c.mappers {
		m := &c.mappers[i]
		if !m.match(code) {
			continue
		}
		if m.status != 0 {
			code = m.status
		}
		if m.body != nil {
			body = *m.body
		}
		if m.headers != nil {
			m.headers.apply(h, r)
		}
		break
	}
	return code, body
}

// isGRPC reports whether r is a gRPC request (content-type
// application/grpc, or application/grpc+<codec>).
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	v := ct[0]
	const prefix = "application/grpc"
	return strings.HasPrefix(v, prefix) && (len(v) == len(prefix) || v[len(prefix)] == '+' || v[len(prefix)] == ';')
}

// httpToGRPCStatus is gRPC's HTTP-to-gRPC status mapping, which Envoy
// uses for local replies.
func httpToGRPCStatus(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	default:
		return grpcUnknown
	}
}

// grpcMessage percent-encodes s as the gRPC protocol wants grpc-message:
// every byte outside printable ASCII, and '%'.
func grpcMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// writeLocalReply writes a local reply: the listener's mappers first,
// then as gRPC for gRPC requests (grpcStatus < 0: mapped from the HTTP
// status), else as text/plain. It returns the HTTP status sent.
func writeLocalReply(w http.ResponseWriter, r *http.Request, lr *localReplyConfig, code int, body string, grpcStatus int) int {
	h := w.Header()
	code, body = lr.rewrite(code, body, h, r)
	if isGRPC(r) {
		if grpcStatus < 0 {
			grpcStatus = httpToGRPCStatus(code)
		}
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{strconv.Itoa(grpcStatus)}
		if body != "" {
			h["Grpc-Message"] = []string{grpcMessage(body)}
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	if body != "" {
		h["Content-Type"] = []string{"text/plain"}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	if body != "" && r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
	return code
}
