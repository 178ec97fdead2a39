package generate

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/intention"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// The RBAC filters generated must decide as package intention does. This
// evaluates them as Envoy does, for the subset of RBAC generate emits, and
// compares with intention.Set over a grid of callers and requests.

type request struct {
	method, path string
	header       http.Header
}

func evalString(t *testing.T, m *matcherv3.StringMatcher, v string) bool {
	want := func(s string) string { return s }
	if m.IgnoreCase {
		v = strings.ToLower(v)
		want = strings.ToLower
	}
	switch p := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == want(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, want(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, want(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, want(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		return regexp.MustCompile("^(?:" + p.SafeRegex.Regex + ")$").MatchString(v)
	}
	t.Fatalf("unexpected string matcher %v", m)
	return false
}

func evalPrincipal(t *testing.T, p *rbacv3.Principal, uri string) bool {
	switch id := p.Identifier.(type) {
	case *rbacv3.Principal_Authenticated_:
		return evalString(t, id.Authenticated.PrincipalName, uri)
	case *rbacv3.Principal_AndIds:
		for _, q := range id.AndIds.Ids {
			if !evalPrincipal(t, q, uri) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		for _, q := range id.OrIds.Ids {
			if evalPrincipal(t, q, uri) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_NotId:
		return !evalPrincipal(t, id.NotId, uri)
	}
	t.Fatalf("unexpected principal %v", p)
	return false
}

func evalHeader(t *testing.T, h *routev3.HeaderMatcher, r request) bool {
	var vals []string
	if h.Name == ":method" {
		vals = []string{r.method}
	} else {
		vals = r.header.Values(h.Name)
	}
	_, isPresent := h.HeaderMatchSpecifier.(*routev3.HeaderMatcher_PresentMatch)
	if len(vals) == 0 {
		return h.InvertMatch && isPresent
	}
	var m bool
	switch s := h.HeaderMatchSpecifier.(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		m = s.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		m = evalString(t, s.StringMatch, strings.Join(vals, ","))
	default:
		t.Fatalf("unexpected header matcher %v", h)
	}
	return m != h.InvertMatch
}

func evalPermission(t *testing.T, p *rbacv3.Permission, r request) bool {
	switch rule := p.Rule.(type) {
	case *rbacv3.Permission_Any:
		return rule.Any
	case *rbacv3.Permission_AndRules:
		for _, q := range rule.AndRules.Rules {
			if !evalPermission(t, q, r) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		for _, q := range rule.OrRules.Rules {
			if evalPermission(t, q, r) {
				return true
			}
		}
		return false
	case *rbacv3.Permission_NotRule:
		return !evalPermission(t, rule.NotRule, r)
	case *rbacv3.Permission_UrlPath:
		return evalString(t, rule.UrlPath.GetPath(), r.path)
	case *rbacv3.Permission_Header:
		return evalHeader(t, rule.Header, r)
	}
	t.Fatalf("unexpected permission %v", p)
	return false
}

// evalRBAC is Envoy's decision: ALLOW lets through what a policy matches,
// DENY refuses it.
func evalRBAC(t *testing.T, rules *rbacv3.RBAC, uri string, r request) bool {
	matched := false
	for _, pol := range rules.Policies {
		pm, qm := false, false
		for _, p := range pol.Principals {
			pm = pm || evalPrincipal(t, p, uri)
		}
		for _, p := range pol.Permissions {
			qm = qm || evalPermission(t, p, r)
		}
		if pm && qm {
			matched = true
		}
	}
	if rules.Action == rbacv3.RBAC_ALLOW {
		return matched
	}
	return !matched
}

func TestRBACMatchesIntentions(t *testing.T) {
	sets := map[string][]*configentry.ServiceIntentionsConfigEntry{}
	for name, s := range snapshots() {
		sets[name] = s.Intentions
	}
	sets["wildcard_destination_l7"] = []*configentry.ServiceIntentionsConfigEntry{
		ixns("*", l7("web", perm(configentry.ActionDeny, configentry.IntentionHTTPPermission{Methods: []string{"delete"}}),
			perm(configentry.ActionAllow, configentry.IntentionHTTPPermission{PathPrefix: "/"}))),
		ixns("api", src("web", configentry.ActionDeny), src("*", configentry.ActionAllow)),
		ixns("*", src("*", configentry.ActionDeny), src("frontend", configentry.ActionAllow)),
	}
	sources := []string{"web", "frontend", "legacy", "monitor", "x"}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	reqs := []request{
		{"GET", "/public/a", hdr()},
		{"head", "/public/", hdr()},
		{"POST", "/public/a", hdr()},
		{"DELETE", "/x", hdr()},
		{"GET", "/admin/x", hdr()},
		{"GET", "/secret", hdr("x-debug", "1")},
		{"GET", "/secret", hdr("x-debug", "1", "x-user", "bob")},
		{"GET", "/secret", hdr("x-debug", "1", "x-user", "alice")},
		{"GET", "/secret", hdr()},
	}
	for setName, entries := range sets {
		for _, dest := range []string{"web", "api", "db"} {
			for _, protocol := range []string{"tcp", "http"} {
				for _, defaultAllow := range []bool{false, true} {
					snap := baseSnapshot(dest, protocol)
					snap.Intentions, snap.DefaultAllow = entries, defaultAllow
					g := &gen{snap: snap}
					rules := g.rules()
					set := intention.NewSet(entries)
					net := networkRBAC(td, rules, defaultAllow, protocol == "http")
					h, err := httpRBAC(td, rules, defaultAllow)
					if err != nil {
						t.Fatal(err)
					}
					for _, source := range sources {
						uri := connect.ServiceID{TrustDomain: td, Datacenter: "dc2", Service: source}.String()
						name := fmt.Sprintf("%s/%s=>%s/%s/default-allow=%v", setName, source, dest, protocol, defaultAllow)
						if protocol == "tcp" {
							got := evalRBAC(t, net.Rules, uri, request{})
							if want := set.L4(source, dest, defaultAllow).Allowed; got != want {
								t.Errorf("%s: connection allowed %v, want %v", name, got, want)
							}
							continue
						}
						for _, r := range reqs {
							got := evalRBAC(t, net.Rules, uri, request{}) && evalRBAC(t, h.Rules, uri, r)
							want := set.HTTP(source, dest, intention.Request{Method: r.method, Path: r.path, Header: r.header}, defaultAllow).Allowed
							if got != want {
								t.Errorf("%s: %s %s %v: allowed %v, want %v", name, r.method, r.path, r.header, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// A caller from another trust domain matches no intention's source.
func TestRBACOtherTrustDomain(t *testing.T) {
	rules := (&gen{snap: &proxycfg.Snapshot{Service: "web", Intentions: []*configentry.ServiceIntentionsConfigEntry{
		ixns("web", src("*", configentry.ActionAllow)),
	}}}).rules()
	net := networkRBAC(td, rules, false, false)
	uri := connect.ServiceID{TrustDomain: "other.consul", Datacenter: "dc1", Service: "web"}.String()
	if evalRBAC(t, net.Rules, uri, request{}) {
		t.Error("caller of another trust domain allowed by a wildcard intention")
	}
}
