package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// stringMatcher is a compiled Envoy StringMatcher.
type stringMatcher func(string) bool

// compileStringMatcher supports exact, prefix, suffix, contains and
// safe_regex (RE2, matching the whole value as Envoy's does), with
// ignore_case for all but regexes (Envoy ignores it there too).
func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	if m == nil {
		return nil, fmt.Errorf("no string matcher")
	}
	fold := m.GetIgnoreCase()
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := p.Exact
		if fold {
			return func(s string) bool { return strings.EqualFold(s, want) }, nil
		}
		return func(s string) bool { return s == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := p.Prefix
		if fold {
			return func(s string) bool { return len(s) >= len(want) && strings.EqualFold(s[:len(want)], want) }, nil
		}
		return func(s string) bool { return strings.HasPrefix(s, want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := p.Suffix
		if fold {
			return func(s string) bool { return len(s) >= len(want) && strings.EqualFold(s[len(s)-len(want):], want) }, nil
		}
		return func(s string) bool { return strings.HasSuffix(s, want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := p.Contains
		if fold {
			want = strings.ToLower(want)
			return func(s string) bool { return strings.Contains(strings.ToLower(s), want) }, nil
		}
		return func(s string) bool { return strings.Contains(s, want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		return compileRegex(p.SafeRegex)
	default:
		return nil, fmt.Errorf("unsupported string matcher %T", p)
	}
}

func compileRegex(m *matcherv3.RegexMatcher) (stringMatcher, error) {
	re, err := regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("safe_regex %q: %v", m.GetRegex(), err)
	}
	return re.MatchString, nil
}

// headerGetter returns a request header as Envoy's matchers see it: the
// values of a repeated header joined with ",", and the pseudo-headers
// :method, :path (with the query), :authority (also "host") and :scheme;
// ok is false when the request has no such header.
type headerGetter func(r *http.Request) (v string, ok bool)

func compileHeaderGetter(name string) (headerGetter, error) {
	switch strings.ToLower(name) {
	case "":
		return nil, errors.New("no header name")
	case ":method":
		return func(r *http.Request) (string, bool) { return r.Method, true }, nil
	case ":path":
		return func(r *http.Request) (string, bool) { return requestPath(r), true }, nil
	case ":authority", "host":
		return func(r *http.Request) (string, bool) { return r.Host, r.Host != "" }, nil
	case ":scheme":
		return func(r *http.Request) (string, bool) {
			if r.TLS != nil {
				return "https", true
			}
			return "http", true
		}, nil
	}
	if strings.HasPrefix(name, ":") {
		return nil, fmt.Errorf("pseudo-header %q is not supported", name)
	}
	key := http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, bool) {
		switch vs := r.Header[key]; len(vs) {
		case 0:
			return "", false
		case 1:
			return vs[0], true
		default:
			return strings.Join(vs, ","), true
		}
	}, nil
}

// requestPath is the request's :path, as the client sent it: path and
// query, not decoded.
func requestPath(r *http.Request) string {
	if u := r.RequestURI; u != "" && u[0] == '/' {
		return u
	}
	return r.URL.RequestURI() // absolute form, or a request made in a test
}

// pathOnly is p without its query.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// headerMatcher is a compiled Envoy HeaderMatcher.
type headerMatcher struct {
	get            headerGetter
	presence       bool // a present_match, whose value is present
	present        bool
	match          stringMatcher
	invert         bool
	missingAsEmpty bool
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (*headerMatcher, error) {
	get, err := compileHeaderGetter(h.GetName())
	if err != nil {
		return nil, err
	}
	m := &headerMatcher{get: get, invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	var sm *matcherv3.StringMatcher
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		m.presence, m.present = true, s.PresentMatch
		return m, nil
	case *routev3.HeaderMatcher_StringMatch:
		sm = s.StringMatch
	case *routev3.HeaderMatcher_ExactMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.ExactMatch}}
	case *routev3.HeaderMatcher_PrefixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.PrefixMatch}}
	case *routev3.HeaderMatcher_SuffixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s.SuffixMatch}}
	case *routev3.HeaderMatcher_ContainsMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s.ContainsMatch}}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}}
	case nil:
		// Envoy: no specifier matches a present header.
		m.presence, m.present = true, true
		return m, nil
	default:
		return nil, fmt.Errorf("header %q: unsupported match %T", h.GetName(), s)
	}
	if m.match, err = compileStringMatcher(sm); err != nil {
		return nil, fmt.Errorf("header %q: %w", h.GetName(), err)
	}
	return m, nil
}

// matches follows Envoy: a missing header fails every matcher but an
// inverted present_match true and a plain present_match false, unless
// treat_missing_header_as_empty makes it the empty value.
func (m *headerMatcher) matches(r *http.Request) bool {
	v, ok := m.get(r)
	if !ok && !m.missingAsEmpty {
		return m.presence && m.present == m.invert
	}
	if m.presence {
		return m.present != m.invert
	}
	return m.match(v) != m.invert
}

func compileHeaderMatchers(hs []*routev3.HeaderMatcher) ([]*headerMatcher, error) {
	out := make([]*headerMatcher, 0, len(hs))
	for _, h := range hs {
		m, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// queryMatcher is a compiled QueryParameterMatcher: the parameter's first
// value must be present and match, if there is a matcher.
type queryMatcher struct {
	name  string
	match stringMatcher // nil: present
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (*queryMatcher, error) {
	if q.GetName() == "" {
		return nil, errors.New("query parameter matcher with no name")
	}
	m := &queryMatcher{name: q.GetName()}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_PresentMatch, nil:
	case *routev3.QueryParameterMatcher_StringMatch:
		f, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		m.match = f
	default:
		return nil, fmt.Errorf("query parameter %q: unsupported match %T", q.GetName(), s)
	}
	return m, nil
}

func (m *queryMatcher) matches(q map[string][]string) bool {
	vs := q[m.name]
	if len(vs) == 0 {
		return false
	}
	return m.match == nil || m.match(vs[0])
}
