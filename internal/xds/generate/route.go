package generate

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
)

// The routes of an HTTP-like upstream: its listener's HTTP connection
// manager fetches them by RDS as the RouteConfiguration named after the
// upstream (UpstreamRouteName), one virtual host matching every
// authority, with the service-router's routes in order and then a
// catch-all. Every route leads to the upstream's one cluster: it decides
// timeouts, retries, rewrites, header changes and, for the hash-based
// load balancers, what a request is hashed on.

// Retry settings of every retry policy: Envoy's default back-off
// written out, and a retry tries another host when there is one.
const (
	retryBaseInterval          = 25 * time.Millisecond
	retryMaxInterval           = 250 * time.Millisecond
	hostSelectionRetryAttempts = 5
)

// UpstreamRouteName is the name of u's RouteConfiguration, and of its
// virtual host: the upstream's name, with "?dc=<dc>" for an upstream in
// another datacenter than localDC (Consul's form), since it leads to
// another cluster than the local one of the same name.
func UpstreamRouteName(u proxycfg.Upstream, localDC string) string {
	if u.Datacenter == "" || u.Datacenter == localDC {
		return u.Name
	}
	return u.Name + "?dc=" + u.Datacenter
}

// upstreamRoutes is the RouteConfiguration name of u, whose cluster is
// cluster.
func upstreamRoutes(name, cluster string, u proxycfg.Upstream) (*routev3.RouteConfiguration, error) {
	hash := hashPolicies(u.LoadBalancer)
	var routes []*routev3.Route
	for i, sr := range u.Routes {
		r, err := serviceRoute(cluster, u, hash, sr)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: service-router Routes[%d]: %w", u.Name, i, err)
		}
		routes = append(routes, r)
	}
	routes = append(routes, &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: routeAction(cluster, u.RequestTimeout, hash)},
	})
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}

// routeAction sends to cluster with timeout (0: Envoy's default) and
// hash policies.
func routeAction(cluster string, timeout time.Duration, hash []*routev3.RouteAction_HashPolicy) *routev3.RouteAction {
	a := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		HashPolicy:       hash,
	}
	if timeout > 0 {
		a.Timeout = durationpb.New(timeout)
	}
	return a
}

func serviceRoute(cluster string, u proxycfg.Upstream, hash []*routev3.RouteAction_HashPolicy, sr configentry.ServiceRoute) (*routev3.Route, error) {
	var h *configentry.ServiceRouteHTTPMatch
	if sr.Match != nil {
		h = sr.Match.HTTP
	}
	m, err := routeMatch(h)
	if err != nil {
		return nil, err
	}
	d := sr.Destination
	if d == nil {
		d = &configentry.ServiceRouteDestination{}
	}
	timeout := u.RequestTimeout
	if d.RequestTimeout > 0 {
		timeout = d.RequestTimeout
	}
	a := routeAction(cluster, timeout, hash)
	if d.IdleTimeout > 0 {
		a.IdleTimeout = durationpb.New(d.IdleTimeout)
	}
	a.PrefixRewrite = d.PrefixRewrite
	if d.HasRetries() {
		a.RetryPolicy = retryPolicy(d)
	}
	r := &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: a}}
	if hm := d.RequestHeaders; hm != nil {
		r.RequestHeadersToAdd, r.RequestHeadersToRemove = headersToAdd(hm), hm.Remove
	}
	if hm := d.ResponseHeaders; hm != nil {
		r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = headersToAdd(hm), hm.Remove
	}
	return r, nil
}

// routeMatch matches the requests h matches; nil (or empty) h matches
// every request.
func routeMatch(h *configentry.ServiceRouteHTTPMatch) (*routev3.RouteMatch, error) {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if h == nil {
		return m, nil
	}
	switch {
	case h.PathExact != "":
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: h.PathExact}
	case h.PathPrefix != "":
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: h.PathPrefix}
	case h.PathRegex != "":
		if err := checkRegex("PathRegex", h.PathRegex); err != nil {
			return nil, err
		}
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.PathRegex}}
	}
	for _, hm := range h.Header {
		hdr := &routev3.HeaderMatcher{Name: hm.Name, InvertMatch: hm.Invert}
		str := func(sm *matcherv3.StringMatcher) {
			hdr.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
		switch {
		case hm.Present:
			hdr.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		case hm.Exact != "":
			str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: hm.Exact}})
		case hm.Prefix != "":
			str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: hm.Prefix}})
		case hm.Suffix != "":
			str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: hm.Suffix}})
		case hm.Regex != "":
			if err := checkRegex(fmt.Sprintf("header %q Regex", hm.Name), hm.Regex); err != nil {
				return nil, err
			}
			str(regexMatcher(hm.Regex))
		default:
			return nil, fmt.Errorf("header %q: no match rule", hm.Name)
		}
		m.Headers = append(m.Headers, hdr)
	}
	if len(h.Methods) > 0 {
		// One header matcher on :method: the methods are tokens, so an
		// alternation of them, matched whole, is exact.
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Methods[0]}}
		if len(h.Methods) > 1 {
			quoted := make([]string, len(h.Methods))
			for i, meth := range h.Methods {
				quoted[i] = regexp.QuoteMeta(meth)
			}
			sm = regexMatcher(strings.Join(quoted, "|"))
		}
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}})
	}
	for _, q := range h.QueryParam {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		switch {
		case q.Present:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		case q.Exact != "":
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Exact}}}
		case q.Regex != "":
			if err := checkRegex(fmt.Sprintf("query parameter %q Regex", q.Name), q.Regex); err != nil {
				return nil, err
			}
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: regexMatcher(q.Regex)}
		default:
			return nil, fmt.Errorf("query parameter %q: no match rule", q.Name)
		}
		m.QueryParameters = append(m.QueryParameters, qm)
	}
	return m, nil
}

func checkRegex(what, re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s %q: %v", what, re, err)
	}
	return nil
}

// retryPolicy is d's retries, as Consul builds them: the RetryOn
// conditions, connect-failure for RetryOnConnectFailure, and
// retriable-status-codes for RetryOnStatusCodes. Each retry goes to
// another host than those already tried when there is one.
func retryPolicy(d *configentry.ServiceRouteDestination) *routev3.RetryPolicy {
	var on []string
	add := func(c string) {
		if !slices.Contains(on, c) {
			on = append(on, c)
		}
	}
	for _, c := range d.RetryOn {
		add(c)
	}
	if d.RetryOnConnectFailure {
		add("connect-failure")
	}
	if len(d.RetryOnStatusCodes) > 0 {
		add("retriable-status-codes")
	}
	// 0 is Envoy's default, 1, written out.
	n := max(d.NumRetries, 1)
	return &routev3.RetryPolicy{
		RetryOn:              strings.Join(on, ","),
		NumRetries:           wrapperspb.UInt32(n),
		RetriableStatusCodes: slices.Clone(d.RetryOnStatusCodes),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(retryBaseInterval),
			MaxInterval:  durationpb.New(retryMaxInterval),
		},
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: hostSelectionRetryAttempts,
	}
}

// hashPolicies are what a request is hashed on for the ring_hash and
// maglev policies; none for the others.
func hashPolicies(lb *configentry.LoadBalancer) []*routev3.RouteAction_HashPolicy {
	if lb == nil || (lb.Policy != configentry.LBPolicyRingHash && lb.Policy != configentry.LBPolicyMaglev) {
		return nil
	}
	var out []*routev3.RouteAction_HashPolicy
	for _, hp := range lb.HashPolicies {
		p := &routev3.RouteAction_HashPolicy{Terminal: hp.Terminal}
		switch {
		case hp.SourceIP:
			p.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
		case hp.Field == configentry.HashPolicyHeader:
			p.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: hp.FieldValue}}
		case hp.Field == configentry.HashPolicyQueryParameter:
			p.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: hp.FieldValue}}
		case hp.Field == configentry.HashPolicyCookie:
			c := &routev3.RouteAction_HashPolicy_Cookie{Name: hp.FieldValue}
			if cc := hp.CookieConfig; cc != nil {
				c.Path = cc.Path
				switch {
				case cc.Session:
					c.Ttl = durationpb.New(0) // a zero TTL makes a session cookie
				case cc.TTL > 0:
					c.Ttl = durationpb.New(cc.TTL)
				}
			}
			p.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}
		default:
			continue // refused by the config entry's validation
		}
		out = append(out, p)
	}
	return out
}

// headersToAdd is h's Add (appending) and Set (replacing) headers, sorted
// by name for a stable output.
func headersToAdd(h *configentry.HTTPHeaderModifiers) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, f := range []struct {
		m      map[string]string
		action corev3.HeaderValueOption_HeaderAppendAction
	}{{h.Add, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}, {h.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}} {
		for _, k := range slices.Sorted(maps.Keys(f.m)) {
			out = append(out, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: k, Value: f.m[k]},
				AppendAction: f.action,
			})
		}
	}
	return out
}
