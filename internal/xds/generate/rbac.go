package generate

import (
	"fmt"
	"regexp"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/connect/intention"
)

// Intentions become Envoy RBAC, which has no notion of order: a policy
// matches or not, and the filter's one action applies to matching
// requests. The first-match-by-precedence of package intention is
// expressed by making each policy exclude the sources of every more
// specific intention that could match the same caller; only outcomes
// that differ from the default get a policy, and the filter's action is
// the opposite of the default (default allow: DENY what the policies
// match; default deny: ALLOW what they match).
//
// Callers are matched by the URI SAN of their verified client certificate
// (authenticated.principal_name), as a regex on the SPIFFE ID with any
// datacenter and namespace: intentions name services only.
//
// On the public listener:
//   - the network RBAC filter decides at connection time. For a tcp
//     service an L7 intention denies (as intention.Set.L4 does); for an
//     http service it lets the connection through, to be decided per
//     request.
//   - for http, http2 and grpc services the HTTP RBAC filter decides each
//     request: an L4 intention by its action; an L7 intention by its first
//     matching permission (path exact/prefix/regex on the path without the
//     query, methods as the :method header ignoring case, headers as
//     Envoy header matchers), else the default. Envoy answers a denied
//     request 403 "RBAC: access denied".

// rules are the intentions that can decide for this proxy's service, in
// precedence order.
func (g *gen) rules() []intention.Rule {
	var out []intention.Rule
	for _, r := range intention.NewSet(g.snap.Intentions).Rules() {
		if r.Destination == g.snap.Service || r.Destination == configentry.WildcardName {
			out = append(out, r)
		}
	}
	return out
}

func rbacAction(defaultAllow bool) rbacv3.RBAC_Action {
	if defaultAllow {
		return rbacv3.RBAC_DENY
	}
	return rbacv3.RBAC_ALLOW
}

func policyName(i int) string { return fmt.Sprintf("intention-%03d", i) }

// callerOf matches the callers that rules[i] decides for: its source,
// minus the sources of more specific rules that overlap it.
func callerOf(trustDomain string, rules []intention.Rule, i int) *rbacv3.Principal {
	src := sourcePrincipal(trustDomain, rules[i].Source)
	var shadow []*rbacv3.Principal
	for _, r := range rules[:i] {
		if r.Source == configentry.WildcardName || rules[i].Source == configentry.WildcardName || r.Source == rules[i].Source {
			shadow = append(shadow, sourcePrincipal(trustDomain, r.Source))
		}
	}
	if len(shadow) == 0 {
		return src
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
		src,
		{Identifier: &rbacv3.Principal_NotId{NotId: orPrincipals(shadow)}},
	}}}}
}

func orPrincipals(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func sourcePrincipal(trustDomain, source string) *rbacv3.Principal {
	re := serviceRegex(trustDomain, source)
	if source == configentry.WildcardName {
		re = anyServiceRegex(trustDomain)
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: regexMatcher(re),
	}}}
}

var anyPermission = &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}

// networkRBAC is the connection-time decision; l7Passes says whether an
// L7 intention lets a connection through (http services) or denies it.
func networkRBAC(trustDomain string, rules []intention.Rule, defaultAllow, l7Passes bool) *netrbacv3.RBAC {
	policies := map[string]*rbacv3.Policy{}
	for i, r := range rules {
		allow := r.Src.Action == configentry.ActionAllow
		if r.L7() {
			allow = l7Passes
		}
		if allow == defaultAllow {
			continue
		}
		policies[policyName(i)] = &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPermission},
			Principals:  []*rbacv3.Principal{callerOf(trustDomain, rules, i)},
		}
	}
	return &netrbacv3.RBAC{
		StatPrefix: "connect_authz",
		Rules:      &rbacv3.RBAC{Action: rbacAction(defaultAllow), Policies: policies},
	}
}

// httpRBAC is the per-request decision.
func httpRBAC(trustDomain string, rules []intention.Rule, defaultAllow bool) (*httprbacv3.RBAC, error) {
	policies := map[string]*rbacv3.Policy{}
	for i, r := range rules {
		if !r.L7() {
			if (r.Src.Action == configentry.ActionAllow) == defaultAllow {
				continue
			}
			policies[policyName(i)] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{anyPermission},
				Principals:  []*rbacv3.Principal{callerOf(trustDomain, rules, i)},
			}
			continue
		}
		// The first matching permission decides: permission k applies to
		// requests it matches and no earlier one does.
		var earlier []*rbacv3.Permission
		for k, p := range r.Src.Permissions {
			if p == nil || p.HTTP == nil {
				continue // matches no request
			}
			m, err := permissionMatcher(p.HTTP)
			if err != nil {
				return nil, fmt.Errorf("intention %s: permission %d: %w", r, k, err)
			}
			if (p.Action == configentry.ActionAllow) != defaultAllow {
				perm := m
				if len(earlier) > 0 {
					perm = andPermissions([]*rbacv3.Permission{m, {Rule: &rbacv3.Permission_NotRule{NotRule: orPermissions(earlier)}}})
				}
				policies[fmt.Sprintf("%s-permission-%03d", policyName(i), k)] = &rbacv3.Policy{
					Permissions: []*rbacv3.Permission{perm},
					Principals:  []*rbacv3.Principal{callerOf(trustDomain, rules, i)},
				}
			}
			earlier = append(earlier, m)
		}
	}
	return &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacAction(defaultAllow), Policies: policies}}, nil
}

func andPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	if len(ps) == 0 {
		return anyPermission
	}
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func orPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

// permissionMatcher matches the requests h matches: every rule of it.
func permissionMatcher(h *configentry.IntentionHTTPPermission) (*rbacv3.Permission, error) {
	var and []*rbacv3.Permission
	path := func(sm *matcherv3.StringMatcher) {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm},
		}}})
	}
	switch {
	case h.PathExact != "":
		path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.PathExact}})
	case h.PathPrefix != "":
		path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.PathPrefix}})
	case h.PathRegex != "":
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			return nil, fmt.Errorf("PathRegex %q: %v", h.PathRegex, err)
		}
		path(regexMatcher(h.PathRegex))
	}
	if len(h.Methods) > 0 {
		var or []*rbacv3.Permission
		for _, m := range h.Methods {
			or = append(or, headerPermission(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}, IgnoreCase: true},
			}}))
		}
		and = append(and, orPermissions(or))
	}
	for _, hp := range h.Header {
		hm, err := headerMatcher(hp)
		if err != nil {
			return nil, err
		}
		and = append(and, headerPermission(hm))
	}
	return andPermissions(and), nil
}

func headerPermission(m *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: m}}
}

// headerMatcher is one header rule. Envoy fails every matcher on a
// missing header but an inverted present match, as package intention
// does.
func headerMatcher(hp configentry.IntentionHTTPHeaderPermission) (*routev3.HeaderMatcher, error) {
	m := &routev3.HeaderMatcher{Name: hp.Name, InvertMatch: hp.Invert}
	str := func(sm *matcherv3.StringMatcher) {
		sm.IgnoreCase = hp.IgnoreCase
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	}
	switch {
	case hp.Present:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	case hp.Exact != "":
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: hp.Exact}})
	case hp.Prefix != "":
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: hp.Prefix}})
	case hp.Suffix != "":
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: hp.Suffix}})
	case hp.Contains != "":
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: hp.Contains}})
	case hp.Regex != "":
		if _, err := regexp.Compile(hp.Regex); err != nil {
			return nil, fmt.Errorf("header %q: Regex %q: %v", hp.Name, hp.Regex, err)
		}
		// ignore_case has no effect on regexes, in Envoy as in package
		// intention.
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: regexMatcher(hp.Regex)}
	default:
		return nil, fmt.Errorf("header %q: no match rule", hp.Name)
	}
	return m, nil
}
