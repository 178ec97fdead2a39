package configentry

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// notSupported is the error for a field Consul has and Trellis does not
// act on yet: refusing it beats storing a setting that silently does
// nothing.
func notSupported(path, what string) error {
	return fmt.Errorf("%s: %s is not supported yet", path, what)
}

// validateNameScope checks the name, partition and namespace of a
// discovery chain entry.
func validateNameScope(kind, name, partition, namespace string) error {
	if name == "" {
		return errors.New("Name: required")
	}
	if name == WildcardName {
		return fmt.Errorf("Name: %s cannot be defined for the wildcard \"*\"", kind)
	}
	if partition != "" && partition != "default" {
		return fmt.Errorf("Partition: %q: admin partitions are not supported", partition)
	}
	if namespace != "" && namespace != "default" {
		return fmt.Errorf("Namespace: %q: namespaces are not supported", namespace)
	}
	return nil
}

func (e *ServiceResolverConfigEntry) Normalize() {
	e.Kind = ServiceResolver
	if lb := e.LoadBalancer; lb != nil {
		lb.Policy = strings.ToLower(lb.Policy)
		for i := range lb.HashPolicies {
			lb.HashPolicies[i].Field = strings.ToLower(lb.HashPolicies[i].Field)
		}
	}
}

// Envoy's bounds of a ring_hash ring.
const maxRingSize = 8 * 1024 * 1024

func (e *ServiceResolverConfigEntry) Validate() error {
	if err := validateNameScope(ServiceResolver, e.Name, e.Partition, e.Namespace); err != nil {
		return err
	}
	switch {
	case e.DefaultSubset != "":
		return notSupported("DefaultSubset", "a default subset")
	case len(e.Subsets) > 0:
		return notSupported("Subsets", "a subset")
	case e.Redirect != nil:
		return notSupported("Redirect", "a redirect")
	case len(e.Failover) > 0:
		return notSupported("Failover", "failover")
	case e.PrioritizeByLocality != nil:
		return notSupported("PrioritizeByLocality", "locality prioritization")
	}
	if e.ConnectTimeout < 0 {
		return fmt.Errorf("ConnectTimeout: must not be negative, got %s", e.ConnectTimeout)
	}
	if e.RequestTimeout < 0 {
		return fmt.Errorf("RequestTimeout: must not be negative, got %s", e.RequestTimeout)
	}
	if lb := e.LoadBalancer; lb != nil {
		return lb.validate("LoadBalancer")
	}
	return nil
}

func (lb *LoadBalancer) validate(path string) error {
	if err := validOneOf(path+".Policy", lb.Policy, "", LBPolicyRoundRobin, LBPolicyLeastRequest,
		LBPolicyRandom, LBPolicyRingHash, LBPolicyMaglev); err != nil {
		return err
	}
	if c := lb.LeastRequestConfig; c != nil {
		if lb.Policy != LBPolicyLeastRequest {
			return fmt.Errorf("%s.LeastRequestConfig: only allowed with Policy %q, not %q", path, LBPolicyLeastRequest, lb.Policy)
		}
		if c.ChoiceCount == 1 {
			return fmt.Errorf("%s.LeastRequestConfig.ChoiceCount: must be at least 2 (or 0 for the default, 2)", path)
		}
	}
	if c := lb.RingHashConfig; c != nil {
		if lb.Policy != LBPolicyRingHash {
			return fmt.Errorf("%s.RingHashConfig: only allowed with Policy %q, not %q", path, LBPolicyRingHash, lb.Policy)
		}
		if c.MinimumRingSize > maxRingSize {
			return fmt.Errorf("%s.RingHashConfig.MinimumRingSize: must be at most %d, got %d", path, maxRingSize, c.MinimumRingSize)
		}
		if c.MaximumRingSize > maxRingSize {
			return fmt.Errorf("%s.RingHashConfig.MaximumRingSize: must be at most %d, got %d", path, maxRingSize, c.MaximumRingSize)
		}
		if c.MinimumRingSize > 0 && c.MaximumRingSize > 0 && c.MinimumRingSize > c.MaximumRingSize {
			return fmt.Errorf("%s.RingHashConfig: MinimumRingSize %d is above MaximumRingSize %d", path, c.MinimumRingSize, c.MaximumRingSize)
		}
	}
	if len(lb.HashPolicies) > 0 && lb.Policy != LBPolicyRingHash && lb.Policy != LBPolicyMaglev {
		return fmt.Errorf("%s.HashPolicies: only allowed with Policy %q or %q, not %q", path, LBPolicyRingHash, LBPolicyMaglev, lb.Policy)
	}
	for i, hp := range lb.HashPolicies {
		if err := hp.validate(fmt.Sprintf("%s.HashPolicies[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func (hp *HashPolicy) validate(path string) error {
	if err := validOneOf(path+".Field", hp.Field, "", HashPolicyHeader, HashPolicyCookie, HashPolicyQueryParameter); err != nil {
		return err
	}
	switch {
	case hp.SourceIP && (hp.Field != "" || hp.FieldValue != ""):
		return fmt.Errorf("%s: SourceIP cannot be set with Field or FieldValue: a policy hashes one input", path)
	case !hp.SourceIP && hp.Field == "":
		if hp.FieldValue != "" {
			return fmt.Errorf("%s.FieldValue: requires a Field to apply to", path)
		}
		return fmt.Errorf("%s: set Field (with FieldValue) or SourceIP", path)
	case hp.Field != "" && hp.FieldValue == "":
		return fmt.Errorf("%s.FieldValue: required with Field %q: the name of the %s to hash", path, hp.Field, strings.ReplaceAll(hp.Field, "_", " "))
	}
	if c := hp.CookieConfig; c != nil {
		if hp.Field != HashPolicyCookie {
			return fmt.Errorf("%s.CookieConfig: only allowed with Field %q", path, HashPolicyCookie)
		}
		if c.TTL < 0 {
			return fmt.Errorf("%s.CookieConfig.TTL: must not be negative, got %s", path, c.TTL)
		}
		if c.Session && c.TTL != 0 {
			return fmt.Errorf("%s.CookieConfig: a Session cookie cannot have a TTL", path)
		}
	}
	return nil
}

// RequiresL7 says why the resolver needs an HTTP-like protocol for its
// service, "" when it does not: hash policies hash HTTP requests.
func (e *ServiceResolverConfigEntry) RequiresL7() string {
	if e.LoadBalancer != nil && len(e.LoadBalancer.HashPolicies) > 0 {
		return "LoadBalancer.HashPolicies"
	}
	return ""
}

func (e *ServiceRouterConfigEntry) Normalize() {
	e.Kind = ServiceRouter
	for _, r := range e.Routes {
		if r.Match != nil && r.Match.HTTP != nil {
			for i, m := range r.Match.HTTP.Methods {
				r.Match.HTTP.Methods[i] = strings.ToUpper(m)
			}
		}
	}
}

// RetryOn values a route may name, as Envoy's x-envoy-retry-on and
// x-envoy-retry-grpc-on conditions. Consul also has envoy-ratelimited
// and retriable-4xx, which Trellis's proxy does not implement yet.
var routeRetryOn = []string{"5xx", "gateway-error", "reset", "connect-failure", "refused-stream",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

func (e *ServiceRouterConfigEntry) Validate() error {
	if err := validateNameScope(ServiceRouter, e.Name, e.Partition, e.Namespace); err != nil {
		return err
	}
	for i, r := range e.Routes {
		path := fmt.Sprintf("Routes[%d]", i)
		var h *ServiceRouteHTTPMatch
		if r.Match != nil {
			h = r.Match.HTTP
		}
		if h != nil {
			if err := h.validate(path + ".Match.HTTP"); err != nil {
				return err
			}
		}
		if d := r.Destination; d != nil {
			if err := d.validate(path+".Destination", e.Name); err != nil {
				return err
			}
			if d.PrefixRewrite != "" && (h == nil || (h.PathPrefix == "" && h.PathExact == "")) {
				return fmt.Errorf("%s.Destination.PrefixRewrite: needs Match.HTTP.PathPrefix or PathExact to replace", path)
			}
		}
	}
	return nil
}

func (h *ServiceRouteHTTPMatch) validate(path string) error {
	if h.CaseInsensitive {
		return notSupported(path+".CaseInsensitive", "case-insensitive path matching")
	}
	paths := 0
	for _, f := range []struct{ name, v string }{{"PathExact", h.PathExact}, {"PathPrefix", h.PathPrefix}, {"PathRegex", h.PathRegex}} {
		if f.v == "" {
			continue
		}
		paths++
		if f.name != "PathRegex" && !strings.HasPrefix(f.v, "/") {
			return fmt.Errorf("%s.%s: %q must begin with a '/'", path, f.name, f.v)
		}
	}
	if paths > 1 {
		return fmt.Errorf("%s: should only contain at most one of PathExact, PathPrefix, or PathRegex", path)
	}
	if err := validRegex(path+".PathRegex", h.PathRegex); err != nil {
		return err
	}
	for i, hm := range h.Header {
		hpath := fmt.Sprintf("%s.Header[%d]", path, i)
		if hm.Name == "" {
			return fmt.Errorf("%s.Name: required", hpath)
		}
		if countSet(hm.Present, hm.Exact, hm.Prefix, hm.Suffix, hm.Regex) != 1 {
			return fmt.Errorf("%s: should only contain one of Present, Exact, Prefix, Suffix, or Regex", hpath)
		}
		if err := validRegex(hpath+".Regex", hm.Regex); err != nil {
			return err
		}
	}
	for i, q := range h.QueryParam {
		qpath := fmt.Sprintf("%s.QueryParam[%d]", path, i)
		if q.Name == "" {
			return fmt.Errorf("%s.Name: required", qpath)
		}
		if countSet(q.Present, q.Exact, q.Regex) != 1 {
			return fmt.Errorf("%s: should only contain one of Present, Exact, or Regex", qpath)
		}
		if err := validRegex(qpath+".Regex", q.Regex); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, m := range h.Methods {
		if !httpMethods[m] {
			return fmt.Errorf("%s.Methods[%d]: %q is not a valid HTTP method", path, i, m)
		}
		if seen[m] {
			return fmt.Errorf("%s.Methods[%d]: %q given more than once", path, i, m)
		}
		seen[m] = true
	}
	return nil
}

func (d *ServiceRouteDestination) validate(path, router string) error {
	switch {
	case d.Service != "" && d.Service != router:
		return notSupported(path+".Service", fmt.Sprintf("routing to another service (%q)", d.Service))
	case d.ServiceSubset != "":
		return notSupported(path+".ServiceSubset", "a subset")
	case d.Namespace != "" && d.Namespace != "default":
		return fmt.Errorf("%s.Namespace: %q: namespaces are not supported", path, d.Namespace)
	case d.Partition != "" && d.Partition != "default":
		return fmt.Errorf("%s.Partition: %q: admin partitions are not supported", path, d.Partition)
	case d.RequestTimeout < 0:
		return fmt.Errorf("%s.RequestTimeout: must not be negative, got %s", path, d.RequestTimeout)
	case d.IdleTimeout < 0:
		return fmt.Errorf("%s.IdleTimeout: must not be negative, got %s", path, d.IdleTimeout)
	}
	if d.PrefixRewrite != "" && !strings.HasPrefix(d.PrefixRewrite, "/") {
		return fmt.Errorf("%s.PrefixRewrite: %q must begin with a '/'", path, d.PrefixRewrite)
	}
	for i, r := range d.RetryOn {
		rpath := fmt.Sprintf("%s.RetryOn[%d]", path, i)
		switch r {
		case "envoy-ratelimited", "retriable-4xx":
			return notSupported(rpath, fmt.Sprintf("retrying on %q", r))
		case "retriable-status-codes":
			return fmt.Errorf("%s: %q is implied by RetryOnStatusCodes: list the codes there", rpath, r)
		}
		if err := validOneOf(rpath, r, routeRetryOn...); err != nil {
			return err
		}
	}
	for i, c := range d.RetryOnStatusCodes {
		if c < 100 || c > 599 {
			return fmt.Errorf("%s.RetryOnStatusCodes[%d]: %d is not an HTTP status code (100-599)", path, i, c)
		}
	}
	for _, m := range []struct {
		name string
		h    *HTTPHeaderModifiers
	}{{"RequestHeaders", d.RequestHeaders}, {"ResponseHeaders", d.ResponseHeaders}} {
		if err := m.h.validate(path + "." + m.name); err != nil {
			return err
		}
	}
	return nil
}

func (h *HTTPHeaderModifiers) validate(path string) error {
	if h == nil {
		return nil
	}
	check := func(field, name string) error {
		switch {
		case name == "":
			return fmt.Errorf("%s.%s: a header name must not be empty", path, field)
		case strings.HasPrefix(name, ":") || strings.EqualFold(name, "host"):
			return fmt.Errorf("%s.%s: %q cannot be modified", path, field, name)
		case strings.ContainsAny(name, " \t\r\n"):
			return fmt.Errorf("%s.%s: %q is not a valid header name", path, field, name)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		m    map[string]string
	}{{"Add", h.Add}, {"Set", h.Set}} {
		for k, v := range f.m {
			if err := check(fmt.Sprintf("%s[%q]", f.name, k), k); err != nil {
				return err
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Errorf("%s.%s[%q]: the value must not contain CR, LF or NUL", path, f.name, k)
			}
		}
	}
	for i, k := range h.Remove {
		if err := check(fmt.Sprintf("Remove[%d]", i), k); err != nil {
			return err
		}
	}
	return nil
}

func validRegex(path, re string) error {
	if re == "" {
		return nil
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s: %q is not a valid regular expression: %v", path, re, err)
	}
	return nil
}

// countSet counts the given match rules: true booleans and non-empty
// strings.
func countSet(present bool, values ...string) int {
	n := 0
	if present {
		n++
	}
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}
