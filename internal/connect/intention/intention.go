// Package intention decides, from service-intentions config entries,
// whether one service may reach another: at connection time (L4) and per
// HTTP request (L7). It is pure: the authorize endpoint and the sidecar
// proxy hand it the entries they read and the request they see.
//
// Intentions are matched by precedence (configentry.IntentionPrecedence:
// exact names before the wildcard, the destination counting more than the
// source); the first that matches decides, and when none does the caller's
// default applies. A matching intention with L7 Permissions decides each
// request by its first matching permission, falling back to the default
// when none matches: it never falls through to a less specific intention.
package intention

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/trellis-mesh/trellis/internal/configentry"
)

// Rule is one intention: a source of a service-intentions entry, with the
// entry's name as its destination.
type Rule struct {
	Source      string
	Destination string
	Precedence  int
	// Src is the source as stored: Action or Permissions. It is shared
	// with the entry and must not be modified.
	Src *configentry.SourceIntention
}

// String is Consul's form of an intention: "web => db (allow)".
func (r Rule) String() string {
	detail := r.Src.Action
	switch n := len(r.Src.Permissions); {
	case n == 1:
		detail = "1 permission"
	case n > 1:
		detail = fmt.Sprintf("%d permissions", n)
	}
	return fmt.Sprintf("%s => %s (%s)", r.Source, r.Destination, detail)
}

// L7 reports whether the rule decides per request.
func (r Rule) L7() bool { return len(r.Src.Permissions) > 0 }

// Set is a list of rules in evaluation order. Build it with NewSet.
type Set struct {
	rules []Rule
	res   map[string]*regexp.Regexp // compiled regexes of the rules, by expression
}

// NewSet flattens entries into rules, most specific first; ties are
// ordered by destination, then source name, so the order never depends on
// the order of entries.
func NewSet(entries []*configentry.ServiceIntentionsConfigEntry) *Set {
	var rules []Rule
	for _, e := range entries {
		for _, s := range e.Sources {
			if s == nil || s.Peer != "" || s.SamenessGroup != "" {
				continue // sources from other clusters never match a local caller
			}
			rules = append(rules, Rule{Source: s.Name, Destination: e.Name,
				Precedence: configentry.IntentionPrecedence(s.Name, e.Name), Src: s})
		}
	}
	sort.SliceStable(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.Precedence != b.Precedence {
			return a.Precedence > b.Precedence
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Source < b.Source
	})
	return &Set{rules: rules, res: compileAll(rules)}
}

// Rules returns the rules in evaluation order; the slice is shared.
func (s *Set) Rules() []Rule { return s.rules }

func nameMatches(pattern, name string) bool {
	return pattern == configentry.WildcardName || pattern == name
}

// Match returns the rule that decides for source → destination: the first
// in precedence order whose names match.
func (s *Set) Match(source, destination string) (Rule, bool) {
	for _, r := range s.rules {
		if nameMatches(r.Source, source) && nameMatches(r.Destination, destination) {
			return r, true
		}
	}
	return Rule{}, false
}

// MatchBy lists the rules that apply to name as a source (bySource) or as
// a destination, in precedence order, as /v1/connect/intentions/match
// answers.
func (s *Set) MatchBy(bySource bool, name string) []Rule {
	var out []Rule
	for _, r := range s.rules {
		pat := r.Destination
		if bySource {
			pat = r.Source
		}
		if nameMatches(pat, name) {
			out = append(out, r)
		}
	}
	return out
}

// Decision is the outcome of an L4 check.
type Decision struct {
	Allowed bool
	// Matched is false when no intention applied and the default decided.
	Matched bool
	Rule    Rule
}

// L4 decides whether source may open a connection to destination. A
// matching L7 intention denies here: its permissions can only be checked
// per request (Consul's /v1/agent/connect/authorize answers the same).
func (s *Set) L4(source, destination string, defaultAllow bool) Decision {
	r, ok := s.Match(source, destination)
	if !ok {
		return Decision{Allowed: defaultAllow}
	}
	return Decision{Allowed: !r.L7() && r.Src.Action == configentry.ActionAllow, Matched: true, Rule: r}
}

// Request is what an L7 decision looks at.
type Request struct {
	Method string
	Path   string
	Header http.Header
}

// HTTP decides one request from source to destination: by the first
// matching rule's action (L4 rule) or by its first matching permission
// (L7 rule); the default when no rule, or no permission, matches.
func (s *Set) HTTP(source, destination string, req Request, defaultAllow bool) Decision {
	r, ok := s.Match(source, destination)
	if !ok {
		return Decision{Allowed: defaultAllow}
	}
	if !r.L7() {
		return Decision{Allowed: r.Src.Action == configentry.ActionAllow, Matched: true, Rule: r}
	}
	for _, p := range r.Src.Permissions {
		if s.permissionMatches(p, req) {
			return Decision{Allowed: p.Action == configentry.ActionAllow, Matched: true, Rule: r}
		}
	}
	return Decision{Allowed: defaultAllow, Matched: true, Rule: r}
}

// PermissionMatches reports whether every rule of p's HTTP part matches
// req. Regexes must match the whole path or value, as Envoy's do; a
// regex that does not compile (validation refuses those) never matches.
func PermissionMatches(p *configentry.IntentionPermission, req Request) bool {
	return (&Set{}).permissionMatches(p, req)
}

func (s *Set) permissionMatches(p *configentry.IntentionPermission, req Request) bool {
	h := p.HTTP
	if h == nil {
		return false
	}
	switch {
	case h.PathExact != "" && req.Path != h.PathExact:
		return false
	case h.PathPrefix != "" && !strings.HasPrefix(req.Path, h.PathPrefix):
		return false
	case h.PathRegex != "" && !s.fullMatch(h.PathRegex, req.Path):
		return false
	}
	if len(h.Methods) > 0 {
		found := false
		for _, m := range h.Methods {
			if strings.EqualFold(m, req.Method) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for _, hp := range h.Header {
		if !s.headerRule(hp, req.Header) {
			return false
		}
	}
	return true
}

// headerRule applies one header rule, Invert included. A header the
// request lacks fails every rule except an inverted Present, as in Envoy,
// whose route matching the sidecar follows: "not Exact x" does not let a
// request through by leaving the header out.
func (s *Set) headerRule(hp configentry.IntentionHTTPHeaderPermission, hdr http.Header) bool {
	if _, present := hdr[http.CanonicalHeaderKey(hp.Name)]; !present && !hp.Present {
		return false
	}
	return s.headerMatches(hp, hdr) != hp.Invert
}

func (s *Set) headerMatches(hp configentry.IntentionHTTPHeaderPermission, hdr http.Header) bool {
	vals, present := hdr[http.CanonicalHeaderKey(hp.Name)]
	if !present {
		return false
	}
	if hp.Present {
		return true
	}
	// Several values of a header are matched as one, joined with commas,
	// as Envoy does.
	v := strings.Join(vals, ",")
	want := func(s string) string { return s }
	if hp.IgnoreCase {
		v = strings.ToLower(v)
		want = strings.ToLower
	}
	switch {
	case hp.Exact != "":
		return v == want(hp.Exact)
	case hp.Prefix != "":
		return strings.HasPrefix(v, want(hp.Prefix))
	case hp.Suffix != "":
		return strings.HasSuffix(v, want(hp.Suffix))
	case hp.Contains != "":
		return strings.Contains(v, want(hp.Contains))
	case hp.Regex != "":
		return s.fullMatch(hp.Regex, strings.Join(vals, ","))
	}
	return false
}

// compileAll compiles the regexes of the rules' permissions, anchored to
// match whole values, so that per-request checks never compile.
func compileAll(rules []Rule) map[string]*regexp.Regexp {
	out := map[string]*regexp.Regexp{}
	add := func(expr string) {
		if _, ok := out[expr]; expr == "" || ok {
			return
		}
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			re = nil // validation refuses these; such a rule never matches
		}
		out[expr] = re
	}
	for _, r := range rules {
		for _, p := range r.Src.Permissions {
			if p == nil || p.HTTP == nil {
				continue
			}
			add(p.HTTP.PathRegex)
			for _, h := range p.HTTP.Header {
				add(h.Regex)
			}
		}
	}
	return out
}

func (s *Set) fullMatch(expr, v string) bool {
	re, ok := s.res[expr]
	if !ok {
		// A permission not of this set (PermissionMatches): compile now.
		var err error
		if re, err = regexp.Compile("^(?:" + expr + ")$"); err != nil {
			return false
		}
	}
	return re != nil && re.MatchString(v)
}
