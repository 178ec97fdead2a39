package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Routing, as Envoy's router does it: the request's :authority picks a
// virtual host (exact domains, then the longest suffix wildcard "*.x",
// then the longest prefix wildcard "x.*", then "*"), whose first
// matching route sends it to a cluster. Path matches look at :path as
// the client sent it, not decoded: a prefix includes the query, an exact
// path or a regex does not.

// defaultRouteTimeout is Envoy's RouteAction.timeout when unset.
const defaultRouteTimeout = 15 * time.Second

// routeTable is a compiled RouteConfiguration.
type routeTable struct {
	name   string
	exact  map[string]*virtualHost // lower-case domain
	suffix []wildcardHost          // "*.example.com": the part after "*", longest first
	prefix []wildcardHost          // "example.*": the part before "*", longest first
	any    *virtualHost            // "*"
}

type wildcardHost struct {
	s  string
	vh *virtualHost
}

type virtualHost struct {
	name   string
	routes []*route
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

// route is a compiled Route with a RouteAction.
type route struct {
	name string

	kind    pathKind
	path    string
	regex   stringMatcher
	fold    bool // case_sensitive false
	headers []*headerMatcher
	query   []*queryMatcher
	grpc    bool

	cluster       string
	timeout       time.Duration // 0: none
	idle          time.Duration
	hasIdle       bool // idle_timeout set (0 disables the HCM's)
	retry         *retryPolicy
	hash          []hashPolicy
	rewrite       bool
	prefixRewrite string
	reqHeaders    []*headerMutation // route, virtual host, route configuration
	respHeaders   []*headerMutation
}

func compileRouteTable(rc *routev3.RouteConfiguration, clusters map[string]*cluster) (*routeTable, error) {
	if err := onlyFields(rc, "name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "validate_clusters"); err != nil {
		return nil, err
	}
	rcReq, err := compileHeaderMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("request headers: %w", err)
	}
	rcResp, err := compileHeaderMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("response headers: %w", err)
	}
	t := &routeTable{name: rc.GetName(), exact: map[string]*virtualHost{}}
	seen := map[string]bool{}
	for _, v := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(v, clusters, rcReq, rcResp)
		if err != nil {
			return nil, fmt.Errorf("virtual host %q: %w", v.GetName(), err)
		}
		if len(v.GetDomains()) == 0 {
			return nil, fmt.Errorf("virtual host %q: no domains", v.GetName())
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if seen[d] {
				return nil, fmt.Errorf("virtual host %q: domain %q is in two virtual hosts", v.GetName(), d)
			}
			seen[d] = true
			switch {
			case d == "*":
				t.any = vh
			case strings.HasPrefix(d, "*"):
				t.suffix = append(t.suffix, wildcardHost{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				t.prefix = append(t.prefix, wildcardHost{d[:len(d)-1], vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("virtual host %q: domain %q: a wildcard must be first or last", v.GetName(), d)
			default:
				t.exact[d] = vh
			}
		}
	}
	longestFirst := func(w []wildcardHost) {
		sort.SliceStable(w, func(i, j int) bool { return len(w[i].s) > len(w[j].s) })
	}
	longestFirst(t.suffix)
	longestFirst(t.prefix)
	return t, nil
}

func compileVirtualHost(v *routev3.VirtualHost, clusters map[string]*cluster, rcReq, rcResp *headerMutation) (*virtualHost, error) {
	if err := onlyFields(v, "name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "retry_policy"); err != nil {
		return nil, err
	}
	vhReq, err := compileHeaderMutation(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("request headers: %w", err)
	}
	vhResp, err := compileHeaderMutation(v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("response headers: %w", err)
	}
	vhRetry, err := compileRetryPolicy(v.GetRetryPolicy())
	if err != nil {
		return nil, fmt.Errorf("retry_policy: %w", err)
	}
	vh := &virtualHost{name: v.GetName()}
	for i, r := range v.GetRoutes() {
		rt, err := compileRoute(r, clusters)
		if err != nil {
			return nil, fmt.Errorf("route %d %q: %w", i, r.GetName(), err)
		}
		if rt.retry == nil {
			rt.retry = vhRetry
		}
		rt.reqHeaders = nonNil(rt.reqHeaders, vhReq, rcReq)
		rt.respHeaders = nonNil(rt.respHeaders, vhResp, rcResp)
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func nonNil(into []*headerMutation, ms ...*headerMutation) []*headerMutation {
	for _, m := range ms {
		if m != nil {
			into = append(into, m)
		}
	}
	return into
}

func compileRoute(r *routev3.Route, clusters map[string]*cluster) (*route, error) {
	if err := onlyFields(r, "name", "match", "route", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	rt := &route{name: r.GetName()}
	if err := rt.compileMatch(r.GetMatch()); err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	ra := r.GetRoute()
	if ra == nil {
		return nil, errors.New("only route actions are supported")
	}
	if err := onlyFields(ra, "cluster", "timeout", "idle_timeout", "retry_policy", "hash_policy", "prefix_rewrite"); err != nil {
		return nil, fmt.Errorf("route action: %w", err)
	}
	rt.cluster = ra.GetCluster()
	if rt.cluster == "" {
		return nil, errors.New("only a single cluster is supported")
	}
	if _, ok := clusters[rt.cluster]; !ok {
		return nil, fmt.Errorf("no cluster %q", rt.cluster)
	}
	rt.timeout = defaultRouteTimeout
	if d := ra.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("timeout %v is not a duration", d)
		}
		rt.timeout = d.AsDuration()
	}
	if d := ra.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("idle_timeout %v is not a duration", d)
		}
		rt.idle, rt.hasIdle = d.AsDuration(), true
	}
	var err error
	if rt.retry, err = compileRetryPolicy(ra.GetRetryPolicy()); err != nil {
		return nil, fmt.Errorf("retry_policy: %w", err)
	}
	if rt.hash, err = compileHashPolicies(ra.GetHashPolicy()); err != nil {
		return nil, err
	}
	if p := ra.GetPrefixRewrite(); p != "" {
		if rt.kind == pathRegex {
			return nil, errors.New("prefix_rewrite needs a prefix or path match")
		}
		rt.rewrite, rt.prefixRewrite = true, p
	}
	req, err := compileHeaderMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("request headers: %w", err)
	}
	resp, err := compileHeaderMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("response headers: %w", err)
	}
	rt.reqHeaders = nonNil(nil, req)
	rt.respHeaders = nonNil(nil, resp)
	return rt, nil
}

func (rt *route) compileMatch(m *routev3.RouteMatch) error {
	if m == nil {
		return errors.New("no match")
	}
	if err := onlyFields(m, "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive",
		"headers", "query_parameters", "grpc"); err != nil {
		return err
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rt.kind, rt.path = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rt.kind, rt.path = pathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rt.kind, rt.path = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		f, err := compileRegex(p.SafeRegex)
		if err != nil {
			return err
		}
		rt.kind, rt.regex = pathRegex, f
	default:
		return fmt.Errorf("unsupported path specifier %T", p)
	}
	if cs := m.GetCaseSensitive(); cs != nil {
		rt.fold = !cs.GetValue()
	}
	var err error
	if rt.headers, err = compileHeaderMatchers(m.GetHeaders()); err != nil {
		return err
	}
	for _, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q)
		if err != nil {
			return err
		}
		rt.query = append(rt.query, qm)
	}
	rt.grpc = m.GetGrpc() != nil
	return nil
}

// virtualHost picks the virtual host for an :authority.
func (t *routeTable) virtualHost(authority string) *virtualHost {
	if len(t.exact) == 0 && len(t.suffix) == 0 && len(t.prefix) == 0 {
		return t.any
	}
	host := strings.ToLower(authority)
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, w := range t.suffix {
		if len(host) > len(w.s) && strings.HasSuffix(host, w.s) {
			return w.vh
		}
	}
	for _, w := range t.prefix {
		if len(host) > len(w.s) && strings.HasPrefix(host, w.s) {
			return w.vh
		}
	}
	return t.any
}

// match returns the first route of vh that matches r, whose :path is
// path; query parses r's query once, if a route needs it.
func (vh *virtualHost) match(r *http.Request, path string, query *lazyQuery) *route {
	for _, rt := range vh.routes {
		if rt.matches(r, path, query) {
			return rt
		}
	}
	return nil
}

func (rt *route) matches(r *http.Request, path string, query *lazyQuery) bool {
	switch rt.kind {
	case pathPrefix:
		if !hasPrefix(path, rt.path, rt.fold) {
			return false
		}
	case pathExact:
		if p := pathOnly(path); !(p == rt.path || rt.fold && strings.EqualFold(p, rt.path)) {
			return false
		}
	case pathSeparatedPrefix:
		p := pathOnly(path)
		if !hasPrefix(p, rt.path, rt.fold) || len(p) > len(rt.path) && p[len(rt.path)] != '/' {
			return false
		}
	case pathRegex:
		if !rt.regex(pathOnly(path)) {
			return false
		}
	}
	if rt.grpc && !isGRPC(r) {
		return false
	}
	for _, h := range rt.headers {
		if !h.matches(r) {
			return false
		}
	}
	if len(rt.query) > 0 {
		q := query.get()
		for _, m := range rt.query {
			if !m.matches(q) {
				return false
			}
		}
	}
	return true
}

func hasPrefix(s, prefix string, fold bool) bool {
	if fold {
		return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
	}
	return strings.HasPrefix(s, prefix)
}

// rewritePath returns the path (with no query) to send upstream for a
// request to path, matched by rt.
func (rt *route) rewritePath(path string) string {
	p := pathOnly(path)
	if !rt.rewrite {
		return p
	}
	switch rt.kind {
	case pathExact:
		return rt.prefixRewrite
	default:
		return rt.prefixRewrite + p[min(len(rt.path), len(p)):]
	}
}
