package configentry

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// WildcardName matches every service in an intention.
const WildcardName = "*"

// IntentionPrecedence is the precedence of an intention from source to
// destination, as Consul documents it for the default namespace: exact
// names outrank the wildcard, and the destination counts more than the
// source.
//
//	source  destination  precedence
//	exact   exact        9
//	*       exact        8
//	exact   *            6
//	*       *            5
func IntentionPrecedence(source, destination string) int {
	p := 9
	if destination == WildcardName {
		p = 6
	}
	if source == WildcardName {
		p--
	}
	return p
}

func validOneOf(path, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	quoted := make([]string, 0, len(allowed))
	for _, a := range allowed {
		if a != "" {
			quoted = append(quoted, fmt.Sprintf("%q", a))
		}
	}
	return fmt.Errorf("%s: invalid value %q: must be one of %s", path, v, strings.Join(quoted, ", "))
}

func (e *ProxyConfigEntry) Normalize() {
	e.Kind = ProxyDefaults
	if e.Name == "" {
		e.Name = ProxyConfigGlobal
	}
	e.Mode = strings.ToLower(e.Mode)
	e.MutualTLSMode = strings.ToLower(e.MutualTLSMode)
	e.MeshGateway.Mode = strings.ToLower(e.MeshGateway.Mode)
	if p, ok := e.Config["protocol"].(string); ok {
		e.Config["protocol"] = strings.ToLower(p)
	}
	normalizeExpose(&e.Expose)
}

func (e *ProxyConfigEntry) Validate() error {
	if e.Name != ProxyConfigGlobal {
		return fmt.Errorf("Name: invalid name (%q), only %q is supported", e.Name, ProxyConfigGlobal)
	}
	if err := validateCommon(e.Partition, e.Namespace, e.Mode, e.MutualTLSMode, e.MeshGateway, e.Expose); err != nil {
		return err
	}
	if raw, ok := e.Config["protocol"]; ok {
		p, isStr := raw.(string)
		if !isStr {
			return fmt.Errorf("Config.protocol: must be a string")
		}
		if err := validOneOf("Config.protocol", p, "tcp", "http", "http2", "grpc"); err != nil {
			return err
		}
	}
	if l := e.AccessLogs; l != nil {
		if err := validOneOf("AccessLogs.Type", l.Type, "", "file", "stderr", "stdout"); err != nil {
			return err
		}
		if l.Type == "file" && l.Path == "" {
			return errors.New("AccessLogs.Path: required when AccessLogs.Type is \"file\"")
		}
		if l.Type != "file" && l.Path != "" {
			return errors.New("AccessLogs.Path: only allowed when AccessLogs.Type is \"file\"")
		}
		if l.JSONFormat != "" && l.TextFormat != "" {
			return errors.New("AccessLogs: JSONFormat and TextFormat cannot both be set")
		}
	}
	return nil
}

func normalizeExpose(x *ExposeConfig) {
	for i := range x.Paths {
		x.Paths[i].Protocol = strings.ToLower(x.Paths[i].Protocol)
		if x.Paths[i].Protocol == "" {
			x.Paths[i].Protocol = "http"
		}
	}
}

// validateCommon checks the fields proxy-defaults and service-defaults
// share.
func validateCommon(partition, namespace, mode, mtls string, mgw MeshGatewayConfig, expose ExposeConfig) error {
	if partition != "" && partition != "default" {
		return fmt.Errorf("Partition: %q: admin partitions are not supported", partition)
	}
	if namespace != "" && namespace != "default" {
		return fmt.Errorf("Namespace: %q: namespaces are not supported", namespace)
	}
	if err := validOneOf("Mode", mode, "", "direct", "transparent"); err != nil {
		return err
	}
	if err := validOneOf("MutualTLSMode", mtls, "", "strict", "permissive"); err != nil {
		return err
	}
	if err := validOneOf("MeshGateway.Mode", mgw.Mode, "", "none", "local", "remote"); err != nil {
		return err
	}
	for i, p := range expose.Paths {
		path := fmt.Sprintf("Expose.Paths[%d]", i)
		if !strings.HasPrefix(p.Path, "/") {
			return fmt.Errorf("%s.Path: %q must begin with a '/'", path, p.Path)
		}
		if err := validOneOf(path+".Protocol", p.Protocol, "http", "http2"); err != nil {
			return err
		}
		if p.ListenerPort < 0 || p.ListenerPort > 65535 || p.LocalPathPort < 0 || p.LocalPathPort > 65535 {
			return fmt.Errorf("%s: ports must be between 0 and 65535", path)
		}
	}
	return nil
}

// defaultConnectTimeoutMs is an upstream's connect timeout when none is
// set, as Consul's.
const defaultConnectTimeoutMs = 5000

func (e *ServiceConfigEntry) Normalize() {
	e.Kind = ServiceDefaults
	e.Protocol = strings.ToLower(e.Protocol)
	e.Mode = strings.ToLower(e.Mode)
	e.MutualTLSMode = strings.ToLower(e.MutualTLSMode)
	e.MeshGateway.Mode = strings.ToLower(e.MeshGateway.Mode)
	normalizeExpose(&e.Expose)
	if u := e.UpstreamConfig; u != nil {
		for _, o := range u.Overrides {
			if o != nil {
				o.normalize()
			}
		}
		if u.Defaults != nil {
			u.Defaults.normalize()
		}
	}
}

func (u *UpstreamConfig) normalize() {
	u.Protocol = strings.ToLower(u.Protocol)
	u.MeshGateway.Mode = strings.ToLower(u.MeshGateway.Mode)
	if u.ConnectTimeoutMs == 0 {
		u.ConnectTimeoutMs = defaultConnectTimeoutMs
	}
}

func (e *ServiceConfigEntry) Validate() error {
	if e.Name == "" {
		return errors.New("Name: required")
	}
	if e.Name == WildcardName {
		return errors.New("Name: service-defaults cannot be defined for the wildcard \"*\"")
	}
	if err := validateCommon(e.Partition, e.Namespace, e.Mode, e.MutualTLSMode, e.MeshGateway, e.Expose); err != nil {
		return err
	}
	if err := validOneOf("Protocol", e.Protocol, "", "tcp", "http", "http2", "grpc"); err != nil {
		return err
	}
	if err := validOneOf("BalanceInboundConnections", e.BalanceInboundConnections, "", "exact_balance"); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxInboundConnections", e.MaxInboundConnections},
		{"LocalConnectTimeoutMs", e.LocalConnectTimeoutMs}, {"LocalRequestTimeoutMs", e.LocalRequestTimeoutMs}} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", f.name, f.v)
		}
	}
	if d := e.Destination; d != nil {
		if len(d.Addresses) == 0 {
			return errors.New("Destination.Addresses: at least one address is required")
		}
		for i, a := range d.Addresses {
			if a == "" {
				return fmt.Errorf("Destination.Addresses[%d]: must not be empty", i)
			}
		}
		if d.Port < 1 || d.Port > 65535 {
			return fmt.Errorf("Destination.Port: %d is not a valid port", d.Port)
		}
	}
	if u := e.UpstreamConfig; u != nil {
		seen := map[string]int{}
		for i, o := range u.Overrides {
			path := fmt.Sprintf("UpstreamConfig.Overrides[%d]", i)
			if o == nil {
				return fmt.Errorf("%s: must not be null", path)
			}
			if o.Name == "" {
				return fmt.Errorf("%s.Name: required", path)
			}
			key := o.Peer + "/" + o.Name
			if j, dup := seen[key]; dup {
				return fmt.Errorf("%s: upstream %q is already overridden by UpstreamConfig.Overrides[%d]", path, o.Name, j)
			}
			seen[key] = i
			if err := o.validate(path); err != nil {
				return err
			}
		}
		if d := u.Defaults; d != nil {
			if d.Name != "" || d.Peer != "" || d.Namespace != "" || d.Partition != "" {
				return errors.New("UpstreamConfig.Defaults: Name, Peer, Namespace and Partition must be empty")
			}
			if err := d.validate("UpstreamConfig.Defaults"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (u *UpstreamConfig) validate(path string) error {
	if err := validOneOf(path+".Protocol", u.Protocol, "", "tcp", "http", "http2", "grpc"); err != nil {
		return err
	}
	if err := validOneOf(path+".MeshGateway.Mode", u.MeshGateway.Mode, "", "none", "local", "remote"); err != nil {
		return err
	}
	if err := validOneOf(path+".BalanceOutboundConnections", u.BalanceOutboundConnections, "", "exact_balance"); err != nil {
		return err
	}
	if u.ConnectTimeoutMs < 0 {
		return fmt.Errorf("%s.ConnectTimeoutMs: must not be negative, got %d", path, u.ConnectTimeoutMs)
	}
	if err := u.Limits.validate(path + ".Limits"); err != nil {
		return err
	}
	return u.PassiveHealthCheck.validate(path + ".PassiveHealthCheck")
}

func (l *UpstreamLimits) validate(path string) error {
	if l == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		v    *int
	}{{"MaxConnections", l.MaxConnections}, {"MaxPendingRequests", l.MaxPendingRequests}, {"MaxConcurrentRequests", l.MaxConcurrentRequests}} {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("%s.%s: must not be negative, got %d", path, f.name, *f.v)
		}
	}
	return nil
}

func (p *PassiveHealthCheck) validate(path string) error {
	if p == nil {
		return nil
	}
	if p.Interval < 0 {
		return fmt.Errorf("%s.Interval: must not be negative", path)
	}
	if p.BaseEjectionTime != nil && *p.BaseEjectionTime < 0 {
		return fmt.Errorf("%s.BaseEjectionTime: must not be negative", path)
	}
	// Percentages: Envoy refuses a cluster with one above 100.
	for _, f := range []struct {
		name string
		v    *uint32
	}{{"MaxEjectionPercent", p.MaxEjectionPercent}, {"EnforcingConsecutive5xx", p.EnforcingConsecutive5xx},
		{"EnforcingConsecutiveGatewayFailure", p.EnforcingConsecutiveGatewayFailure}} {
		if f.v != nil && *f.v > 100 {
			return fmt.Errorf("%s.%s: must be at most 100, got %d", path, f.name, *f.v)
		}
	}
	return nil
}

// DecodeUpstreamRegistrationConfig reads the keys of an upstream
// registration's opaque Config that override its service-defaults
// UpstreamConfig, as Consul's: "limits" and "passive_health_check" (with
// the lenient key matching of config entries, so "Limits" or
// "max_connections" both work). Other keys are left alone; an error names
// the key and field, and nothing is returned with it.
func DecodeUpstreamRegistrationConfig(cfg map[string]any) (*UpstreamConfig, error) {
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key is always the same
	u := &UpstreamConfig{}
	seen := map[string]string{}
	for _, k := range keys {
		norm := normKey(k)
		if prev, dup := seen[norm]; dup {
			return nil, fmt.Errorf("%s: given twice (%q and %q)", k, prev, k)
		}
		seen[norm] = k
		var out any
		switch norm {
		case "limits":
			out = &u.Limits
		case "passivehealthcheck":
			out = &u.PassiveHealthCheck
		default:
			continue
		}
		if err := decodeValue(k, cfg[k], reflect.ValueOf(out).Elem()); err != nil {
			return nil, err
		}
	}
	if l := u.Limits; l != nil {
		l.PassiveHealthCheck = nil // Consul's api-gateway-only field
	}
	if err := u.Limits.validate("limits"); err != nil {
		return nil, err
	}
	if err := u.PassiveHealthCheck.validate("passive_health_check"); err != nil {
		return nil, err
	}
	return u, nil
}

func (e *MeshConfigEntry) Normalize() {
	e.Kind = MeshConfig
	if e.Name == "" {
		e.Name = MeshConfigMesh
	}
}

var tlsVersions = []string{"", "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"}

func (e *MeshConfigEntry) Validate() error {
	if e.Name != MeshConfigMesh {
		return fmt.Errorf("Name: invalid name (%q), only %q is supported", e.Name, MeshConfigMesh)
	}
	if e.Partition != "" && e.Partition != "default" {
		return fmt.Errorf("Partition: %q: admin partitions are not supported", e.Partition)
	}
	if err := validOneOf("DefaultIntentionPolicy", e.DefaultIntentionPolicy, "", IntentionDefaultAllow, IntentionDefaultDeny); err != nil {
		return err
	}
	if t := e.TLS; t != nil {
		for _, f := range []struct {
			dir string
			d   *MeshDirectionalTLSConfig
		}{{"Incoming", t.Incoming}, {"Outgoing", t.Outgoing}} {
			d := f.d
			if d == nil {
				continue
			}
			path := "TLS." + f.dir
			if err := validOneOf(path+".TLSMinVersion", d.TLSMinVersion, tlsVersions...); err != nil {
				return err
			}
			if err := validOneOf(path+".TLSMaxVersion", d.TLSMaxVersion, tlsVersions...); err != nil {
				return err
			}
			if tlsRank(d.TLSMinVersion) > 0 && tlsRank(d.TLSMaxVersion) > 0 && tlsRank(d.TLSMinVersion) > tlsRank(d.TLSMaxVersion) {
				return fmt.Errorf("%s: TLSMinVersion %s is above TLSMaxVersion %s", path, d.TLSMinVersion, d.TLSMaxVersion)
			}
		}
	}
	if h := e.HTTP; h != nil && h.Incoming != nil && h.Incoming.RequestNormalization != nil {
		rn := h.Incoming.RequestNormalization
		const p = "HTTP.Incoming.RequestNormalization."
		if err := validOneOf(p+"PathWithEscapedSlashesAction", rn.PathWithEscapedSlashesAction,
			"", "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD"); err != nil {
			return err
		}
		if err := validOneOf(p+"HeadersWithUnderscoresAction", rn.HeadersWithUnderscoresAction,
			"", "ALLOW", "REJECT_REQUEST", "DROP_HEADER"); err != nil {
			return err
		}
	}
	return nil
}

// tlsRank orders TLS versions; TLS_AUTO and "" are 0.
func tlsRank(v string) int {
	for i, x := range tlsVersions[2:] {
		if v == x {
			return i + 1
		}
	}
	return 0
}

func (e *ServiceIntentionsConfigEntry) Normalize() {
	e.Kind = ServiceIntentions
	for _, s := range e.Sources {
		if s == nil {
			continue
		}
		if s.Type == "" {
			s.Type = "consul"
		}
		s.Action = strings.ToLower(s.Action)
		s.Precedence = IntentionPrecedence(s.Name, e.Name)
		for _, p := range s.Permissions {
			if p == nil {
				continue
			}
			p.Action = strings.ToLower(p.Action)
			if p.HTTP != nil {
				for i, m := range p.HTTP.Methods {
					p.HTTP.Methods[i] = strings.ToUpper(m)
				}
			}
		}
	}
}

// sortSources orders the sources most specific first, then by name, so
// that every reader sees them in the order they are evaluated. It runs
// after Validate, whose errors name the sources by their index as given.
func (e *ServiceIntentionsConfigEntry) sortSources() {
	sort.SliceStable(e.Sources, func(i, j int) bool {
		a, b := e.Sources[i], e.Sources[j]
		if a == nil || b == nil {
			return b == nil && a != nil
		}
		if a.Precedence != b.Precedence {
			return a.Precedence > b.Precedence
		}
		return a.Name < b.Name
	})
}

var httpMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodConnect: true,
	http.MethodOptions: true, http.MethodTrace: true,
}

func (e *ServiceIntentionsConfigEntry) Validate() error {
	if e.Name == "" {
		return errors.New("Name: required")
	}
	if e.Partition != "" && e.Partition != "default" {
		return fmt.Errorf("Partition: %q: admin partitions are not supported", e.Partition)
	}
	if e.Namespace != "" && e.Namespace != "default" {
		return fmt.Errorf("Namespace: %q: namespaces are not supported", e.Namespace)
	}
	if e.JWT != nil {
		return errors.New("JWT: JWT requirements are not supported")
	}
	seen := map[string]int{}
	for i, s := range e.Sources {
		path := fmt.Sprintf("Sources[%d]", i)
		if s == nil {
			return fmt.Errorf("%s: must not be null", path)
		}
		if s.Name == "" {
			return fmt.Errorf("%s.Name: required", path)
		}
		if strings.Contains(s.Name, "*") && s.Name != WildcardName {
			return fmt.Errorf("%s.Name: %q: a wildcard must be the whole name", path, s.Name)
		}
		if s.Peer != "" && s.SamenessGroup != "" {
			return fmt.Errorf("%s: Peer and SamenessGroup cannot both be set", path)
		}
		if s.Partition != "" && s.Partition != "default" {
			return fmt.Errorf("%s.Partition: %q: admin partitions are not supported", path, s.Partition)
		}
		if s.Namespace != "" && s.Namespace != "default" {
			return fmt.Errorf("%s.Namespace: %q: namespaces are not supported", path, s.Namespace)
		}
		key := s.Peer + "\x00" + s.SamenessGroup + "\x00" + s.Name
		if j, dup := seen[key]; dup {
			return fmt.Errorf("%s: Sources[%d] already defines an intention from %q", path, j, s.Name)
		}
		seen[key] = i
		if s.Type != "consul" {
			return fmt.Errorf("%s.Type: %q: must be \"consul\"", path, s.Type)
		}
		if len(s.Description) > 512 {
			return fmt.Errorf("%s.Description: longer than 512 characters", path)
		}
		if len(s.Permissions) == 0 {
			if s.Action != ActionAllow && s.Action != ActionDeny {
				return fmt.Errorf("%s.Action: must be set to \"allow\" or \"deny\", got %q", path, s.Action)
			}
			continue
		}
		if s.Action != "" {
			return fmt.Errorf("%s.Action: must be omitted if Permissions are specified", path)
		}
		if e.Name == WildcardName {
			return fmt.Errorf("%s.Permissions: cannot be specified on intentions with a wildcard destination", path)
		}
		for j, p := range s.Permissions {
			if err := p.validate(fmt.Sprintf("%s.Permissions[%d]", path, j)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *IntentionPermission) validate(path string) error {
	if p == nil {
		return fmt.Errorf("%s: must not be null", path)
	}
	if p.Action != ActionAllow && p.Action != ActionDeny {
		return fmt.Errorf("%s.Action: must be set to \"allow\" or \"deny\", got %q", path, p.Action)
	}
	if p.JWT != nil {
		return fmt.Errorf("%s.JWT: JWT requirements are not supported", path)
	}
	h := p.HTTP
	if h == nil {
		return fmt.Errorf("%s.HTTP: required", path)
	}
	path += ".HTTP"
	paths := 0
	for _, f := range []struct{ name, v string }{{"PathExact", h.PathExact}, {"PathPrefix", h.PathPrefix}, {"PathRegex", h.PathRegex}} {
		name, v := f.name, f.v
		if v == "" {
			continue
		}
		paths++
		if name != "PathRegex" && !strings.HasPrefix(v, "/") {
			return fmt.Errorf("%s.%s: %q must begin with a '/'", path, name, v)
		}
	}
	if paths > 1 {
		return fmt.Errorf("%s: should only contain at most one of PathExact, PathPrefix, or PathRegex", path)
	}
	if h.PathRegex != "" {
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			return fmt.Errorf("%s.PathRegex: %q is not a valid regular expression: %v", path, h.PathRegex, err)
		}
	}
	if paths == 0 && len(h.Header) == 0 && len(h.Methods) == 0 {
		return fmt.Errorf("%s: should not be empty", path)
	}
	for i, hp := range h.Header {
		hpath := fmt.Sprintf("%s.Header[%d]", path, i)
		if hp.Name == "" {
			return fmt.Errorf("%s.Name: required", hpath)
		}
		n := 0
		if hp.Present {
			n++
		}
		for _, v := range []string{hp.Exact, hp.Prefix, hp.Suffix, hp.Contains, hp.Regex} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: should only contain one of Present, Exact, Prefix, Suffix, Contains, or Regex", hpath)
		}
		if hp.Regex != "" {
			if _, err := regexp.Compile(hp.Regex); err != nil {
				return fmt.Errorf("%s.Regex: %q is not a valid regular expression: %v", hpath, hp.Regex, err)
			}
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
