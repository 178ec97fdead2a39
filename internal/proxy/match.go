package proxy

import (
	"fmt"
	"regexp"
	"strings"

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
	norm := func(s string) string {
		if fold {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := norm(p.Exact)
		return func(s string) bool { return norm(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("safe_regex %q: %v", p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("unsupported string matcher %T", p)
	}
}
