package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// build fills in defaults and validates the merged layers. Errors name the
// config key; the matching flag is in the key's documentation.
func build(fc *fileConfig, dev bool) (*RuntimeConfig, error) {
	rc := &RuntimeConfig{
		DevMode:                 dev,
		Server:                  boolOr(fc.Server, false),
		Bootstrap:               boolOr(fc.Bootstrap, false),
		BootstrapExpect:         intOr(fc.BootstrapExpect, 0),
		DataDir:                 strOr(fc.DataDir, ""),
		NodeID:                  strings.ToLower(strings.TrimSpace(strOr(fc.NodeID, ""))),
		NodeMeta:                fc.NodeMeta,
		Datacenter:              strings.ToLower(strOr(fc.Datacenter, "dc1")),
		Join:                    fc.StartJoin,
		RetryJoin:               fc.RetryJoin,
		RetryInterval:           durOr(fc.RetryInterval, 30*time.Second),
		ReconnectTimeout:        durOr(fc.ReconnectTimeout, 72*time.Hour),
		RetryMaxAttempts:        intOr(fc.RetryMax, 0),
		JoinWAN:                 fc.StartJoinWAN,
		RetryJoinWAN:            fc.RetryJoinWAN,
		RetryIntervalWAN:        durOr(fc.RetryIntervalWAN, 30*time.Second),
		RetryMaxAttemptsWAN:     intOr(fc.RetryMaxWAN, 0),
		LogLevel:                strings.ToLower(strOr(fc.LogLevel, "info")),
		LogJSON:                 boolOr(fc.LogJSON, false),
		UIEnabled:               boolOr(fc.UIConfig.Enabled, false),
		EnableDebug:             boolOr(fc.EnableDebug, false),
		PidFile:                 strOr(fc.PidFile, ""),
		DisableUpdateCheck:      boolOr(fc.DisableUpdateCheck, false),
		SkipLeaveOnInterrupt:    boolOr(fc.SkipLeaveOnInterrupt, false),
		LeaveOnTerm:             boolOr(fc.LeaveOnTerminate, false),
		EnableScriptChecks:      boolOr(fc.EnableScriptChecks, false),
		EnableLocalScriptChecks: boolOr(fc.EnableLocalScriptChecks, false),
		KVMaxValueSize:          intOr(fc.Limits.KVMaxValueSize, 512*1024),
	}
	rc.Services = append(append(rc.Services, fc.Service...), fc.Services...)
	rc.Checks = append(append(rc.Checks, fc.Check...), fc.Checks...)

	steps := []func(*RuntimeConfig, *fileConfig) error{
		buildServerMode,
		buildIdentity,
		buildAddrs,
		buildDNS,
		buildMisc,
		buildConnect, // connect.go
		validateDefinitions,
	}
	for _, step := range steps {
		if err := step(rc, fc); err != nil {
			return nil, err
		}
	}
	return rc, nil
}

func buildServerMode(rc *RuntimeConfig, fc *fileConfig) error {
	switch {
	case rc.BootstrapExpect < 0:
		return fmt.Errorf("config: bootstrap_expect: %d is negative", rc.BootstrapExpect)
	case rc.BootstrapExpect > 0 && rc.DevMode:
		return fmt.Errorf("config: bootstrap_expect cannot be used with -dev (a dev agent bootstraps itself)")
	case rc.BootstrapExpect > 0 && fc.Bootstrap != nil && *fc.Bootstrap:
		return fmt.Errorf("config: bootstrap and bootstrap_expect cannot both be set")
	case (rc.Bootstrap || rc.BootstrapExpect > 0) && !rc.Server:
		if rc.Bootstrap {
			return fmt.Errorf("config: bootstrap requires server = true")
		}
		return fmt.Errorf("config: bootstrap_expect requires server = true")
	}
	if rc.BootstrapExpect == 1 {
		// A cluster of one bootstraps itself; Consul treats it the same.
		rc.Bootstrap, rc.BootstrapExpect = true, 0
		rc.Warnings = append(rc.Warnings, "config: bootstrap_expect = 1 is the same as bootstrap = true")
	}
	if rc.DevMode {
		if rc.DataDir != "" {
			rc.Warnings = append(rc.Warnings, fmt.Sprintf("config: data_dir %q is not used with -dev: state is kept in memory", rc.DataDir))
		}
		rc.DataDir = ""
		return nil
	}
	if rc.DataDir == "" {
		if rc.Server && (rc.Bootstrap || rc.BootstrapExpect > 0) {
			return fmt.Errorf("config: data_dir cannot be empty: a bootstrapping server outside -dev needs one (-data-dir)")
		}
		return nil
	}
	if fi, err := os.Stat(rc.DataDir); err == nil && !fi.IsDir() {
		return fmt.Errorf("config: data_dir %q is not a directory", rc.DataDir)
	}
	return nil
}

func buildIdentity(rc *RuntimeConfig, fc *fileConfig) error {
	if fc.NodeName != nil {
		rc.NodeName = strings.TrimSpace(*fc.NodeName)
	} else {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("config: node_name not set and the hostname is unknown: %w", err)
		}
		rc.NodeName = host
	}
	if rc.NodeName == "" {
		return fmt.Errorf("config: node_name cannot be empty")
	}
	if !isDNSLabel(rc.NodeName) {
		rc.Warnings = append(rc.Warnings, fmt.Sprintf("config: node_name %q is not a valid DNS label: the node cannot be looked up over DNS", rc.NodeName))
	}
	if rc.NodeID != "" && !isUUID(rc.NodeID) {
		return fmt.Errorf("config: node_id %q is not a UUID", rc.NodeID)
	}
	if rc.Datacenter == "" {
		return fmt.Errorf("config: datacenter cannot be empty")
	}
	for _, r := range rc.Datacenter {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("config: datacenter %q: only letters, digits, - and _ are allowed", rc.Datacenter)
		}
	}
	return nil
}

func buildAddrs(rc *RuntimeConfig, fc *fileConfig) error {
	rc.BindAddr = strings.TrimSpace(strOr(fc.BindAddr, "0.0.0.0"))
	bind := net.ParseIP(rc.BindAddr)
	if bind == nil {
		return notIP("bind_addr", rc.BindAddr)
	}
	if fc.AdvertiseAddr != nil {
		rc.AdvertiseAddr = strings.TrimSpace(*fc.AdvertiseAddr)
		ip := net.ParseIP(rc.AdvertiseAddr)
		if ip == nil {
			return notIP("advertise_addr", rc.AdvertiseAddr)
		}
		if ip.IsUnspecified() {
			return fmt.Errorf("config: advertise_addr cannot be %s: peers need an address they can reach", rc.AdvertiseAddr)
		}
	} else {
		rc.AdvertiseAddr = rc.BindAddr
		if bind.IsUnspecified() {
			rc.AdvertiseAddr = "127.0.0.1"
			if bind.To4() == nil {
				rc.AdvertiseAddr = "::1"
			}
		}
	}

	var err error
	if rc.ClientAddrs, err = ipList("client_addr", strOr(fc.ClientAddr, "127.0.0.1")); err != nil {
		return err
	}
	if len(rc.ClientAddrs) == 0 {
		return fmt.Errorf("config: client_addr cannot be empty")
	}

	ports := []struct {
		key string
		p   *int
		def int
		out *int
	}{
		{"ports.http", fc.Ports.HTTP, 8500, &rc.HTTPPort},
		{"ports.https", fc.Ports.HTTPS, -1, &rc.HTTPSPort},
		{"ports.dns", fc.Ports.DNS, 8600, &rc.DNSPort},
		{"ports.grpc", fc.Ports.GRPC, -1, &rc.GRPCPort},
		{"ports.grpc_tls", fc.Ports.GRPCTLS, -1, &rc.GRPCTLSPort},
		{"ports.serf_lan", fc.Ports.SerfLAN, 8301, &rc.SerfLANPort},
		{"ports.serf_wan", fc.Ports.SerfWAN, 8302, &rc.SerfWANPort},
		{"ports.server", fc.Ports.Server, 8300, &rc.ServerPort},
	}
	for _, p := range ports {
		*p.out = intOr(p.p, p.def)
		if *p.out < -1 || *p.out > 65535 {
			return fmt.Errorf("config: %s: port %d out of range: want -1 (disabled) to 65535", p.key, *p.out)
		}
	}
	if err := buildSidecarPorts(rc, fc); err != nil {
		return err
	}
	if rc.SerfLANPort < 0 {
		return fmt.Errorf("config: ports.serf_lan cannot be disabled")
	}
	if rc.Server && rc.ServerPort < 0 {
		return fmt.Errorf("config: ports.server cannot be disabled on a server")
	}

	listeners := []struct {
		key      string
		override *string
		port     int
		out      *[]string
	}{
		{"addresses.http", fc.Addresses.HTTP, rc.HTTPPort, &rc.HTTPAddrs},
		{"addresses.https", fc.Addresses.HTTPS, rc.HTTPSPort, &rc.HTTPSAddrs},
		{"addresses.dns", fc.Addresses.DNS, rc.DNSPort, &rc.DNSAddrs},
		{"addresses.grpc", fc.Addresses.GRPC, rc.GRPCPort, &rc.GRPCAddrs},
	}
	for _, l := range listeners {
		ips := rc.ClientAddrs
		if l.override != nil {
			if ips, err = ipList(l.key, *l.override); err != nil {
				return err
			}
		}
		if l.port < 0 {
			continue
		}
		for _, ip := range ips {
			*l.out = append(*l.out, net.JoinHostPort(ip, strconv.Itoa(l.port)))
		}
	}
	return nil
}

// notIP is the error for a value of key that should be an IP address.
func notIP(key, s string) error {
	if strings.Contains(s, "{{") {
		return fmt.Errorf("config: %s: %q: go-sockaddr templates are not supported; give an IP address", key, s)
	}
	return fmt.Errorf("config: %s: %q is not an IP address", key, s)
}

// ipList splits a space-separated list of IP addresses.
func ipList(key, s string) ([]string, error) {
	var out []string
	for _, f := range strings.Fields(s) {
		if net.ParseIP(f) == nil {
			return nil, notIP(key, f)
		}
		out = append(out, f)
	}
	return out, nil
}

func buildDNS(rc *RuntimeConfig, fc *fileConfig) error {
	dc := fc.DNSConfig
	rc.DNS = DNSConfig{
		Domain:          fqdn(strOr(fc.Domain, "consul")),
		RecursorTimeout: durOr(dc.RecursorTimeout, 2*time.Second),
		NodeTTL:         durOr(dc.NodeTTL, 0),
		ServiceTTL:      dc.ServiceTTL,
		AllowStale:      boolOr(dc.AllowStale, true),
		MaxStale:        durOr(dc.MaxStale, 87600*time.Hour),
		OnlyPassing:     boolOr(dc.OnlyPassing, false),
		UDPAnswerLimit:  intOr(dc.UDPAnswerLimit, 3),
		EnableTruncate:  boolOr(dc.EnableTruncate, false),
		ARecordLimit:    intOr(dc.ARecordLimit, 0),
	}
	if rc.DNS.Domain == "." {
		return fmt.Errorf("config: domain cannot be empty")
	}
	if fc.AltDomain != nil && strings.Trim(*fc.AltDomain, ". ") != "" {
		rc.DNS.AltDomain = fqdn(*fc.AltDomain)
		if rc.DNS.AltDomain == rc.DNS.Domain {
			return fmt.Errorf("config: alt_domain %q cannot be the same as domain", rc.DNS.AltDomain)
		}
	}
	if rc.DNS.UDPAnswerLimit < 0 {
		return fmt.Errorf("config: dns_config.udp_answer_limit: %d is negative", rc.DNS.UDPAnswerLimit)
	}
	if rc.DNS.ARecordLimit < 0 {
		return fmt.Errorf("config: dns_config.a_record_limit: %d is negative", rc.DNS.ARecordLimit)
	}
	for _, r := range fc.Recursors {
		addr, err := recursorAddr(r)
		if err != nil {
			return err
		}
		rc.DNS.Recursors = append(rc.DNS.Recursors, addr)
	}
	return nil
}

// recursorAddr returns r as host:port, adding port 53 when r has none.
func recursorAddr(r string) (string, error) {
	r = strings.TrimSpace(r)
	if ip := net.ParseIP(strings.Trim(r, "[]")); ip != nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(r)
	if err == nil && net.ParseIP(host) != nil {
		if n, err := strconv.Atoi(port); err == nil && n > 0 && n <= 65535 {
			return r, nil
		}
	}
	return "", fmt.Errorf("config: recursors: %q is not an IP address or IP:port", r)
}

// fqdn lowercases a domain and gives it exactly one trailing dot.
func fqdn(s string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(s), ".")) + "."
}

func buildMisc(rc *RuntimeConfig, fc *fileConfig) error {
	switch rc.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	case "warning":
		rc.LogLevel = "warn"
	default:
		return fmt.Errorf("config: log_level %q: want trace, debug, info, warn or error", rc.LogLevel)
	}
	if rc.KVMaxValueSize <= 0 {
		return fmt.Errorf("config: limits.kv_max_value_size: %d must be positive", rc.KVMaxValueSize)
	}
	if rc.RetryMaxAttempts < 0 {
		return fmt.Errorf("config: retry_max: %d is negative", rc.RetryMaxAttempts)
	}
	if rc.ReconnectTimeout < 8*time.Hour {
		return fmt.Errorf("config: reconnect_timeout: %v is below the minimum of 8h", rc.ReconnectTimeout)
	}
	if rc.RetryMaxAttemptsWAN < 0 {
		return fmt.Errorf("config: retry_max_wan: %d is negative", rc.RetryMaxAttemptsWAN)
	}
	if (len(rc.JoinWAN) > 0 || len(rc.RetryJoinWAN) > 0) && !rc.Server {
		return fmt.Errorf("config: start_join_wan and retry_join_wan require server = true: only servers join the WAN pool")
	}
	rc.AdvertiseAddrWAN = rc.AdvertiseAddr
	if fc.AdvertiseAddrWAN != nil {
		rc.AdvertiseAddrWAN = strings.TrimSpace(*fc.AdvertiseAddrWAN)
		if ip := net.ParseIP(rc.AdvertiseAddrWAN); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("config: advertise_addr_wan: %q is not an IP address peers can reach", rc.AdvertiseAddrWAN)
		}
	}
	if err := buildACL(rc, fc); err != nil {
		return err
	}
	return buildAutopilot(rc, fc)
}

func buildACL(rc *RuntimeConfig, fc *fileConfig) error {
	rc.ACLEnabled = boolOr(fc.ACL.Enabled, false)
	rc.ACLDefaultPolicy = strings.ToLower(strOr(fc.ACL.DefaultPolicy, "allow"))
	if rc.ACLDefaultPolicy != "allow" && rc.ACLDefaultPolicy != "deny" {
		return fmt.Errorf("config: acl.default_policy: %q: want allow or deny", rc.ACLDefaultPolicy)
	}
	if rc.ACLEnabled {
		rc.Warnings = append(rc.Warnings, "config: acl.enabled: Trellis enforces no ACL tokens; "+
			"acl.default_policy only sets the default of intentions ("+rc.ACLDefaultPolicy+")")
	}
	return nil
}

func buildAutopilot(rc *RuntimeConfig, fc *fileConfig) error {
	ap := fc.Autopilot
	rc.Autopilot = AutopilotConfig{
		CleanupDeadServers:      boolOr(ap.CleanupDeadServers, true),
		LastContactThreshold:    durOr(ap.LastContactThreshold, 200*time.Millisecond),
		ServerStabilizationTime: durOr(ap.ServerStabilizationTime, 10*time.Second),
	}
	switch trailing, quorum := intOr(ap.MaxTrailingLogs, 250), intOr(ap.MinQuorum, 0); {
	case trailing < 0:
		return fmt.Errorf("config: autopilot.max_trailing_logs: %d is negative", trailing)
	case quorum < 0:
		return fmt.Errorf("config: autopilot.min_quorum: %d is negative", quorum)
	default:
		rc.Autopilot.MaxTrailingLogs, rc.Autopilot.MinQuorum = uint64(trailing), uint(quorum)
	}
	if rc.Autopilot.LastContactThreshold <= 0 {
		return fmt.Errorf("config: autopilot.last_contact_threshold: %v must be positive", rc.Autopilot.LastContactThreshold)
	}
	if rc.Autopilot.ServerStabilizationTime < 0 {
		return fmt.Errorf("config: autopilot.server_stabilization_time: %v is negative", rc.Autopilot.ServerStabilizationTime)
	}
	return nil
}

// validateDefinitions checks the services and checks from config files.
func validateDefinitions(rc *RuntimeConfig, _ *fileConfig) error {
	if err := validateServices(rc.Services); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for i, c := range rc.Checks {
		if err := validateCheck(c, i); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if c.Name == "" && c.CheckID == "" {
			return fmt.Errorf("config: check %d: missing name", i)
		}
	}
	return nil
}

// buildSidecarPorts reads ports.sidecar_min_port and sidecar_max_port.
func buildSidecarPorts(rc *RuntimeConfig, fc *fileConfig) error {
	rc.SidecarMinPort = intOr(fc.Ports.SidecarMinPort, 21000)
	rc.SidecarMaxPort = intOr(fc.Ports.SidecarMaxPort, 21255)
	if rc.SidecarMinPort == 0 && rc.SidecarMaxPort == 0 {
		return nil // automatic assignment off
	}
	if rc.SidecarMinPort < 1 || rc.SidecarMaxPort > 65535 || rc.SidecarMinPort > rc.SidecarMaxPort {
		return fmt.Errorf("config: ports.sidecar_min_port %d and ports.sidecar_max_port %d: want 1 <= min <= max <= 65535, or both 0 to turn assignment off",
			rc.SidecarMinPort, rc.SidecarMaxPort)
	}
	return nil
}

// validateServices checks service definitions, from config files or from a
// service definition file, and their checks.
func validateServices(services []*structs.ServiceDefinition) error {
	for _, s := range services {
		id := s.ID
		if id == "" {
			id = s.Name
		}
		if s.Name == "" {
			return fmt.Errorf("service %q: missing name", id)
		}
		if s.Port < 0 || s.Port > 65535 {
			return fmt.Errorf("service %q: port %d out of range", id, s.Port)
		}
		for i, c := range s.AllChecks() {
			if err := validateCheck(c, i); err != nil {
				return fmt.Errorf("service %q: %w", id, err)
			}
		}
		if err := s.ValidateConnect(); err != nil {
			return fmt.Errorf("service %q: %w", id, err)
		}
		if s.Connect != nil && s.Connect.SidecarService != nil {
			for i, c := range s.Connect.SidecarService.AllChecks() {
				if err := validateCheck(c, i); err != nil {
					return fmt.Errorf("service %q: sidecar_service: %w", id, err)
				}
			}
		}
	}
	return nil
}

// validateCheck checks that c names exactly one kind of check, with the
// interval that kind needs. i is c's position, for checks without a name.
func validateCheck(c *structs.CheckType, i int) error {
	name := c.CheckID
	if name == "" {
		name = c.Name
	}
	if name == "" {
		name = fmt.Sprintf("#%d", i)
	}
	var kinds []string
	if len(c.ScriptArgsOrArgs()) > 0 {
		kinds = append(kinds, "args")
	}
	if c.HTTP != "" {
		kinds = append(kinds, "http")
	}
	if c.TCP != "" {
		kinds = append(kinds, "tcp")
	}
	if c.GRPC != "" {
		kinds = append(kinds, "grpc")
	}
	if c.TTL > 0 {
		kinds = append(kinds, "ttl")
	}
	if c.AliasService != "" || c.AliasNode != "" {
		kinds = append(kinds, "alias_service")
	}
	switch len(kinds) {
	case 0:
		return fmt.Errorf("check %q: must have one of args, http, tcp, grpc, ttl or alias_service", name)
	case 1:
	default:
		return fmt.Errorf("check %q: has %s: a check can be only one kind", name, strings.Join(kinds, " and "))
	}
	switch kinds[0] {
	case "args", "http", "tcp", "grpc":
		if c.Interval <= 0 {
			return fmt.Errorf("check %q: interval is required for %s checks", name, c.Type())
		}
	}
	if c.Interval < 0 || c.Timeout < 0 || c.DeregisterCriticalServiceAfter < 0 {
		return fmt.Errorf("check %q: durations cannot be negative", name)
	}
	if c.Status != "" && !structs.ValidStatus(c.Status) {
		return fmt.Errorf("check %q: status %q: want passing, warning or critical", name, c.Status)
	}
	return nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of a UUID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func durOr(p *time.Duration, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	return *p
}
