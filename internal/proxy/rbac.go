package proxy

import (
	"fmt"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// The network RBAC filter decides once per connection, on the SPIFFE ID
// of the verified client certificate (Envoy's authenticated principal
// name; we use the URI SANs only, which is what Trellis leaves carry).
//
// Until the L7 increment, an HTTP RBAC filter is also decided at
// connection time, fail-closed: a permission that needs the request
// (path, header, method) is "unknown", evaluated with Kleene logic, and an
// unknown outcome denies — an ALLOW policy must match for certain, a DENY
// policy that may match denies.

type tri int8

const (
	no tri = iota
	unknown
	yes
)

func triOf(b bool) tri {
	if b {
		return yes
	}
	return no
}

func (t tri) not() tri { return yes - t }

type principalFunc func(ids []string) bool
type permissionFunc func() tri

type rbacPolicy struct {
	perms      []permissionFunc // any
	principals []principalFunc  // any
}

// rbacEngine is a compiled RBAC rule set; nil allows every connection.
type rbacEngine struct {
	allow    bool // action ALLOW (else DENY)
	policies []rbacPolicy
}

func compileRBAC(r *rbacv3.RBAC) (*rbacEngine, error) {
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
	for name, p := range r.GetPolicies() {
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("policy %q: conditions are not supported", name)
		}
		var pol rbacPolicy
		for _, pm := range p.GetPermissions() {
			f, err := compilePermission(pm)
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

// allowed decides for a peer with the given URI SANs.
func (e *rbacEngine) allowed(ids []string) bool {
	if e == nil {
		return true
	}
	match := no
	for _, p := range e.policies {
		match = max(match, p.matches(ids))
	}
	if e.allow {
		return match == yes
	}
	return match == no
}

func (p rbacPolicy) matches(ids []string) tri {
	who := false
	for _, pr := range p.principals {
		if pr(ids) {
			who = true
			break
		}
	}
	if !who {
		return no
	}
	what := no
	for _, pm := range p.perms {
		what = max(what, pm())
	}
	return what
}

func compilePermission(p *rbacv3.Permission) (permissionFunc, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		v := triOf(r.Any)
		return func() tri { return v }, nil
	case *rbacv3.Permission_AndRules:
		fs, err := compilePermissions(r.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func() tri {
			v := yes
			for _, f := range fs {
				v = min(v, f())
			}
			return v
		}, nil
	case *rbacv3.Permission_OrRules:
		fs, err := compilePermissions(r.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func() tri {
			v := no
			for _, f := range fs {
				v = max(v, f())
			}
			return v
		}, nil
	case *rbacv3.Permission_NotRule:
		f, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return func() tri { return f().not() }, nil
	case *rbacv3.Permission_Header, *rbacv3.Permission_UrlPath:
		// Needs the request: see the comment at the top of the file.
		return func() tri { return unknown }, nil
	default:
		return nil, fmt.Errorf("unsupported RBAC permission %T", r)
	}
}

func compilePermissions(ps []*rbacv3.Permission) ([]permissionFunc, error) {
	out := make([]permissionFunc, 0, len(ps))
	for _, p := range ps {
		f, err := compilePermission(p)
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
