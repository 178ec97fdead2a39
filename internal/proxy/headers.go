package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Header mutations of routes, virtual hosts and route configurations
// (request_headers_to_add/remove, response_headers_to_add/remove), and
// the hop-by-hop headers a proxy never forwards.

// headerMutation is one level's removals, then additions.
type headerMutation struct {
	remove []string // canonical keys
	add    []headerOp
}

// headerOp is a compiled HeaderValueOption.
type headerOp struct {
	key       string // canonical
	value     headerValue
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// headerValue is a header value with Envoy's %COMMAND% substitutions.
type headerValue struct {
	literal string      // when parts is nil
	parts   []valuePart // literal text and commands, in order
}

type valuePart struct {
	lit string
	cmd valueCmd
}

type valueCmd uint8

const (
	cmdNone valueCmd = iota
	cmdDownstreamRemoteAddress
	cmdDownstreamRemoteAddressWithoutPort
	cmdProtocol
)

var valueCmds = map[string]valueCmd{
	"DOWNSTREAM_REMOTE_ADDRESS":              cmdDownstreamRemoteAddress,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": cmdDownstreamRemoteAddressWithoutPort,
	"PROTOCOL":                               cmdProtocol,
}

// parseHeaderValue splits s into literal text ("%%" is a literal "%")
// and the commands Trellis supports.
func parseHeaderValue(s string) (headerValue, error) {
	if !strings.Contains(s, "%") {
		return headerValue{literal: s}, nil
	}
	var parts []valuePart
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i++
			continue
		}
		end := strings.IndexByte(s[i+1:], '%')
		if end < 0 {
			return headerValue{}, fmt.Errorf("value %q: unterminated %% command (write %%%% for a %%)", s)
		}
		name := s[i+1 : i+1+end]
		cmd, ok := valueCmds[name]
		if !ok {
			return headerValue{}, fmt.Errorf("value %q: command %%%s%% is not supported", s, name)
		}
		if lit.Len() > 0 {
			parts = append(parts, valuePart{lit: lit.String()})
			lit.Reset()
		}
		parts = append(parts, valuePart{cmd: cmd})
		i += end + 1
	}
	if parts == nil {
		return headerValue{literal: lit.String()}, nil
	}
	if lit.Len() > 0 {
		parts = append(parts, valuePart{lit: lit.String()})
	}
	return headerValue{parts: parts}, nil
}

func (v *headerValue) eval(r *http.Request) string {
	if v.parts == nil {
		return v.literal
	}
	var b strings.Builder
	for _, p := range v.parts {
		switch p.cmd {
		case cmdNone:
			b.WriteString(p.lit)
		case cmdDownstreamRemoteAddress:
			b.WriteString(r.RemoteAddr)
		case cmdDownstreamRemoteAddressWithoutPort:
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			b.WriteString(host)
		case cmdProtocol:
			b.WriteString(protocolName(r))
		}
	}
	return b.String()
}

// compileHeaderMutation compiles one level's options; nil if there are
// none.
func compileHeaderMutation(add []*corev3.HeaderValueOption, remove []string) (*headerMutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	m := &headerMutation{}
	for _, name := range remove {
		if err := checkMutableHeader(name); err != nil {
			return nil, fmt.Errorf("headers_to_remove: %w", err)
		}
		m.remove = append(m.remove, http.CanonicalHeaderKey(name))
	}
	for _, o := range add {
		name := o.GetHeader().GetKey()
		if err := checkMutableHeader(name); err != nil {
			return nil, fmt.Errorf("headers_to_add: %w", err)
		}
		raw := o.GetHeader().GetValue()
		if len(o.GetHeader().GetRawValue()) > 0 {
			raw = string(o.GetHeader().GetRawValue())
		}
		v, err := parseHeaderValue(raw)
		if err != nil {
			return nil, fmt.Errorf("headers_to_add %q: %w", name, err)
		}
		op := headerOp{key: http.CanonicalHeaderKey(name), value: v, action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
		if a := o.GetAppend(); a != nil {
			if op.action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, fmt.Errorf("headers_to_add %q: append and append_action are exclusive", name)
			}
			if !a.GetValue() {
				op.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		m.add = append(m.add, op)
	}
	return m, nil
}

// checkMutableHeader refuses what Envoy refuses to add or remove: the
// pseudo-headers and host.
func checkMutableHeader(name string) error {
	switch {
	case name == "":
		return errors.New("no header name")
	case strings.HasPrefix(name, ":") || strings.EqualFold(name, "host"):
		return fmt.Errorf("header %q cannot be modified", name)
	}
	return nil
}

// apply mutates h: removals first, then additions, as Envoy does.
func (m *headerMutation) apply(h http.Header, r *http.Request) {
	for _, k := range m.remove {
		delete(h, k)
	}
	for i := range m.add {
		op := &m.add[i]
		v := op.value.eval(r)
		if v == "" && !op.keepEmpty {
			continue
		}
		_, exists := h[op.key]
		switch op.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h[op.key] = append(h[op.key], v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[op.key] = []string{v}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[op.key] = []string{v}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[op.key] = []string{v}
			}
		}
	}
}

// applyMutations applies each level's mutations, most specific first,
// so that the route configuration's have the last word (Envoy's default,
// most_specific_header_mutations_wins false).
func applyMutations(ms []*headerMutation, h http.Header, r *http.Request) {
	for _, m := range ms {
		m.apply(h, r)
	}
}

// hopHeaders are connection-specific (RFC 9110 7.6.1), never forwarded
// (what Envoy strips). "Te" is kept when it says "trailers", which gRPC
// needs; "Trailer" is written anew by net/http from the trailers it
// sends.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders deletes the hop-by-hop headers of h, and those its
// Connection header names; keepTE keeps "Te: trailers".
func removeHopHeaders(h http.Header, keepTE bool) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
	te := h["Te"]
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if keepTE && len(te) == 1 && asciiEqualFold(te[0], "trailers") {
		h["Te"] = te
	}
}

// protocolName is the downstream protocol as Envoy's %PROTOCOL% names it.
func protocolName(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	default:
		return "HTTP/1.1"
	}
}
