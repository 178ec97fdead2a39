package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// RBAC, as Envoy's filters decide it. Principals are matched against
// the URI SANs of the peer's verified client certificate (Envoy's
// authenticated principal name; Trellis leaves carry their SPIFFE ID
// there). The network filter decides once per connection and admits no
// permission that needs a request; the HTTP filter decides each request
// on its path (without the query), headers and :method.
//
// A policy matches when one of its principals and one of its
// permissions match; an ALLOW engine lets through what some policy
// matches, a DENY engine what none does. What the principals of an
// engine's policies make of a peer does not change during its
// connection, so the HTTP filter works it out once per connection and
// engine (principalCache).

type principalFunc func(ids []string) bool
type permissionFunc func(r *http.Request) bool // r is nil for the network filter

type rbacPolicy struct {
	perms      []permissionFunc // any
	principals []principalFunc  // any
}

// rbacEngine is a compiled RBAC rule set; nil allows everything.
type rbacEngine struct {
	allow    bool // action ALLOW (else DENY)
	policies []rbacPolicy
}

// compileRBAC compiles rules for the HTTP filter, or for the network
// filter (no request) if network.
func compileRBAC(r *rbacv3.RBAC, network bool) (*rbacEngine, error) {
	if r == nil {
		return nil, nil // Envoy: no rules, no enforcement
	}
	e := &rbacEngine{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.allow = true
	case rbacv3.RBAC_DENY:
	default:
		return nil, fmt.Errorf("unsupported RBAC action %s", r.GetAction())
	}
	if r.GetAuditLoggingOptions() != nil {
		return nil, errors.New("audit_logging_options are not supported")
	}
	for _, name := range sortedPolicyNames(r.GetPolicies()) {
		p := r.GetPolicies()[name]
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("policy %q: conditions are not supported", name)
		}
		var pol rbacPolicy
		for _, pm := range p.GetPermissions() {
			f, err := compilePermission(pm, network)
			if err != nil {
				return nil, fmt.Errorf("policy %q: %w", name, err)
			}
			pol.perms = append(pol.perms, f)
		}
		for _, pr := range p.GetPrincipals() {
			f, err := compilePrincipal(pr)
			if err != nil {
				return nil, fmt.Errorf("policy %q: %w", name, err)
			}
			pol.principals = append(pol.principals, f)
		}
		e.policies = append(e.policies, pol)
	}
	return e, nil
}

// allowed decides a connection (r nil) or a request for a peer with the
// given URI SANs.
func (e *rbacEngine) allowed(ids []string, r *http.Request) bool {
	if e == nil {
		return true
	}
	return e.decide(e.peerMatches(ids), r)
}

// peerMatches says, per policy, whether the peer is one of its
// principals.
func (e *rbacEngine) peerMatches(ids []string) []bool {
	who := make([]bool, len(e.policies))
	for i, p := range e.policies {
		for _, pr := range p.principals {
			if pr(ids) {
				who[i] = true
				break
			}
		}
	}
	return who
}

// decide is allowed, with the peer's principals already matched.
func (e *rbacEngine) decide(who []bool, r *http.Request) bool {
	match := false
policies:
	for i, p := range e.policies {
		if !who[i] {
			continue
		}
		for _, pm := range p.perms {
			if pm(r) {
				match = true
				break policies
			}
		}
	}
	return match == e.allow
}

func compilePermission(p *rbacv3.Permission, network bool) (permissionFunc, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		v := r.Any
		return func(*http.Request) bool { return v }, nil
	case *rbacv3.Permission_AndRules:
		fs, err := compilePermissions(r.AndRules.GetRules(), network)
		if err != nil {
			return nil, err
		}
		return func(req *http.Request) bool {
			for _, f := range fs {
				if !f(req) {
					return false
				}
			}
			return true
		}, nil
	case *rbacv3.Permission_OrRules:
		fs, err := compilePermissions(r.OrRules.GetRules(), network)
		if err != nil {
			return nil, err
		}
		return func(req *http.Request) bool {
			for _, f := range fs {
				if f(req) {
					return true
				}
			}
			return false
		}, nil
	case *rbacv3.Permission_NotRule:
		f, err := compilePermission(r.NotRule, network)
		if err != nil {
			return nil, err
		}
		return func(req *http.Request) bool { return !f(req) }, nil
	case *rbacv3.Permission_Header:
		if network {
			return nil, errors.New("a header permission needs the HTTP RBAC filter")
		}
		m, err := compileHeaderMatcher(r.Header)
		if err != nil {
			return nil, err
		}
		return m.matches, nil
	case *rbacv3.Permission_UrlPath:
		if network {
			return nil, errors.New("a url_path permission needs the HTTP RBAC filter")
		}
		pm, ok := r.UrlPath.GetRule().(*matcherv3.PathMatcher_Path)
		if !ok {
			return nil, fmt.Errorf("url_path: unsupported rule %T", r.UrlPath.GetRule())
		}
		m, err := compileStringMatcher(pm.Path)
		if err != nil {
			return nil, fmt.Errorf("url_path: %w", err)
		}
		return func(req *http.Request) bool { return m(pathOnly(requestPath(req))) }, nil
	default:
		return nil, fmt.Errorf("unsupported RBAC permission %T", r)
	}
}

func compilePermissions(ps []*rbacv3.Permission, network bool) ([]permissionFunc, error) {
	out := make([]permissionFunc, 0, len(ps))
	for _, p := range ps {
		f, err := compilePermission(p, network)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func compilePrincipal(p *rbacv3.Principal) (principalFunc, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		v := id.Any
		return func([]string) bool { return v }, nil
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			// Envoy: any authenticated peer; every peer of a TLS listener
			// with a required client certificate is.
			return func(ids []string) bool { return len(ids) > 0 }, nil
		}
		m, err := compileStringMatcher(id.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, fmt.Errorf("principal_name: %w", err)
		}
		return func(ids []string) bool {
			for _, s := range ids {
				if m(s) {
					return true
				}
			}
			return false
		}, nil
	case *rbacv3.Principal_AndIds:
		fs, err := compilePrincipals(id.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool {
			for _, f := range fs {
				if !f(ids) {
					return false
				}
			}
			return true
		}, nil
	case *rbacv3.Principal_OrIds:
		fs, err := compilePrincipals(id.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool {
			for _, f := range fs {
				if f(ids) {
					return true
				}
			}
			return false
		}, nil
	case *rbacv3.Principal_NotId:
		f, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, err
		}
		return func(ids []string) bool { return !f(ids) }, nil
	default:
		return nil, fmt.Errorf("unsupported RBAC principal %T", id)
	}
}

func compilePrincipals(ps []*rbacv3.Principal) ([]principalFunc, error) {
	out := make([]principalFunc, 0, len(ps))
	for _, p := range ps {
		f, err := compilePrincipal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func sortedPolicyNames(m map[string]*rbacv3.Policy) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// principalCache is what an HTTP RBAC engine's principals make of one
// connection's peer.
type principalCache struct {
	e   *rbacEngine
	who []bool
}
