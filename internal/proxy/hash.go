package proxy

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// A route's hash policies turn a request into the key that ring hash and
// maglev balancing place on their ring (pickRequest.hash), with Envoy's
// rules: policies are evaluated in order, each one that yields a value
// is folded into the key (the key so far rotated left by one, XORed with
// the new hash), and a terminal policy that leaves a key stops the
// evaluation. Values are hashed with xxHash64.

type hashKind uint8

const (
	hashHeader hashKind = iota
	hashCookie
	hashQuery
	hashSourceIP
)

type hashPolicy struct {
	kind     hashKind
	name     string // header (canonical), cookie or query parameter name
	terminal bool
	// Cookie policies with a ttl generate the cookie when the request has
	// none (ttl 0: a session cookie).
	generate bool
	ttl      time.Duration
	path     string
}

func compileHashPolicies(ps []*routev3.RouteAction_HashPolicy) ([]hashPolicy, error) {
	var out []hashPolicy
	for i, p := range ps {
		hp := hashPolicy{terminal: p.GetTerminal()}
		switch s := p.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			if s.Header.GetRegexRewrite() != nil {
				return nil, fmt.Errorf("hash_policy %d: header regex_rewrite is not supported", i)
			}
			if s.Header.GetHeaderName() == "" || strings.HasPrefix(s.Header.GetHeaderName(), ":") {
				return nil, fmt.Errorf("hash_policy %d: header name %q is not supported", i, s.Header.GetHeaderName())
			}
			hp.kind, hp.name = hashHeader, http.CanonicalHeaderKey(s.Header.GetHeaderName())
		case *routev3.RouteAction_HashPolicy_Cookie_:
			c := s.Cookie
			if len(c.GetAttributes()) > 0 {
				return nil, fmt.Errorf("hash_policy %d: cookie attributes are not supported", i)
			}
			if c.GetName() == "" {
				return nil, fmt.Errorf("hash_policy %d: cookie with no name", i)
			}
			hp.kind, hp.name, hp.path = hashCookie, c.GetName(), c.GetPath()
			if c.GetTtl() != nil {
				hp.generate, hp.ttl = true, c.GetTtl().AsDuration()
			}
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			if s.QueryParameter.GetName() == "" {
				return nil, fmt.Errorf("hash_policy %d: query_parameter with no name", i)
			}
			hp.kind, hp.name = hashQuery, s.QueryParameter.GetName()
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				continue // hashes nothing
			}
			hp.kind = hashSourceIP
		default:
			return nil, fmt.Errorf("hash_policy %d: unsupported policy %T", i, s)
		}
		out = append(out, hp)
	}
	return out, nil
}

// requestHash computes r's key. sourceIP is the downstream's address
// without port; setCookie, if not empty, is a Set-Cookie value for the
// response: the cookie a policy generated.
func requestHash(ps []hashPolicy, r *http.Request, query *lazyQuery, sourceIP string) (key uint64, ok bool, setCookie string) {
	for i := range ps {
		p := &ps[i]
		var h uint64
		got := false
		switch p.kind {
		case hashHeader:
			switch vs := r.Header[p.name]; len(vs) {
			case 0:
			case 1:
				h, got = xxhash.Sum64String(vs[0]), true
			default:
				sorted := slices.Sorted(slices.Values(vs))
				h, got = xxhash.Sum64String(strings.Join(sorted, "\x00")), true
			}
		case hashCookie:
			if c, err := r.Cookie(p.name); err == nil {
				h, got = xxhash.Sum64String(c.Value), true
			} else if p.generate && setCookie == "" {
				v := strconv.FormatUint(xxhash.Sum64String(r.RemoteAddr), 16)
				setCookie = makeSetCookie(p.name, v, p.path, p.ttl)
				h, got = xxhash.Sum64String(v), true
			}
		case hashQuery:
			if vs := query.get()[p.name]; len(vs) > 0 {
				h, got = xxhash.Sum64String(vs[0]), true
			}
		case hashSourceIP:
			if sourceIP != "" {
				h, got = xxhash.Sum64String(sourceIP), true
			}
		}
		if got {
			if ok {
				key = (key<<1 | key>>63) ^ h
			} else {
				key, ok = h, true
			}
		}
		if p.terminal && ok {
			break
		}
	}
	return key, ok, setCookie
}

// makeSetCookie is Envoy's generated cookie: quoted value, Max-Age unless
// a session cookie, Path if set, HttpOnly.
func makeSetCookie(name, value, path string, ttl time.Duration) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(`="`)
	b.WriteString(value)
	b.WriteByte('"')
	if s := int64(ttl / time.Second); s != 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(s, 10))
	}
	if path != "" {
		b.WriteString("; Path=")
		b.WriteString(path)
	}
	b.WriteString("; HttpOnly")
	return b.String()
}
