package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// RuntimeConfig is the agent's validated configuration: every default is
// filled in and every value has been checked, so the agent uses it as is.
type RuntimeConfig struct {
	DevMode         bool
	Server          bool
	Bootstrap       bool // also set by bootstrap_expect = 1
	BootstrapExpect int  // 0 or > 1
	DataDir         string
	NodeName        string // default: the hostname
	NodeID          string // lowercase UUID, or "" for the agent to generate and persist
	NodeMeta        map[string]string
	Datacenter      string // lowercase; default "dc1"

	BindAddr      string   // default "0.0.0.0"; "127.0.0.1" with -dev
	AdvertiseAddr string   // default BindAddr, or loopback when BindAddr is unspecified
	ClientAddrs   []string // default ["127.0.0.1"]

	// Listener addresses, host:port, one per client address (or per
	// addresses.* entry); empty when the port is -1. Port 0 is kept: the
	// listener asks the OS for a free port.
	HTTPAddrs  []string
	HTTPSAddrs []string
	DNSAddrs   []string
	GRPCAddrs  []string

	// Ports: -1 disables, 0 picks a free port.
	HTTPPort    int // default 8500
	HTTPSPort   int // default -1
	DNSPort     int // default 8600
	GRPCPort    int // default -1; 8502 with -dev
	GRPCTLSPort int // default -1: Trellis has no TLS
	SerfLANPort int // default 8301
	SerfWANPort int // default 8302
	ServerPort  int // default 8300

	// SidecarMinPort and SidecarMaxPort bound the ports the agent gives
	// sidecar_service registrations that name none; both 0 when
	// automatic assignment is off.
	SidecarMinPort int // default 21000
	SidecarMaxPort int // default 21255

	Join             []string // start_join and -join
	RetryJoin        []string
	RetryInterval    time.Duration // default 30s
	ReconnectTimeout time.Duration // default 72h; at least 8h
	RetryMaxAttempts int           // 0: forever

	// The WAN pool (servers only).
	JoinWAN             []string // start_join_wan and -join-wan
	RetryJoinWAN        []string
	RetryIntervalWAN    time.Duration // default 30s
	RetryMaxAttemptsWAN int           // 0: forever
	AdvertiseAddrWAN    string        // default AdvertiseAddr

	Autopilot AutopilotConfig
	Connect   ConnectConfig // connect.go

	// ACLEnabled and ACLDefaultPolicy ("allow" or "deny") are acl.enabled
	// and acl.default_policy; they only set the intentions' default.
	ACLEnabled       bool
	ACLDefaultPolicy string

	LogLevel             string // trace, debug, info, warn or error; default "info", "debug" with -dev
	LogJSON              bool
	UIEnabled            bool
	EnableDebug          bool
	PidFile              string
	DisableUpdateCheck   bool
	SkipLeaveOnInterrupt bool
	LeaveOnTerm          bool

	EnableScriptChecks      bool
	EnableLocalScriptChecks bool
	Services                []*structs.ServiceDefinition // "service" and "services", in load order
	Checks                  []*structs.CheckType         // "check" and "checks", in load order

	DNS            DNSConfig
	KVMaxValueSize int // bytes; default 512 KiB

	// ConfigFiles lists the files loaded, in order.
	ConfigFiles []string
	// Warnings are problems that did not stop loading, such as unknown
	// keys, one sentence each, for the agent to log.
	Warnings []string
}

// DNSConfig configures the DNS interface.
type DNSConfig struct {
	Domain          string                   // lowercase, fully qualified; default "consul."
	AltDomain       string                   // like Domain, or ""
	Recursors       []string                 // host:port; port 53 when none was given
	RecursorTimeout time.Duration            // default 2s
	NodeTTL         time.Duration            // default 0
	ServiceTTL      map[string]time.Duration // by service name; "*" matches any
	AllowStale      bool                     // default true
	MaxStale        time.Duration            // default 87600h
	OnlyPassing     bool
	UDPAnswerLimit  int // default 3
	EnableTruncate  bool
	ARecordLimit    int // 0: no limit
}

// Load parses args (the arguments after "agent", e.g.
// []string{"-dev", "-http-port", "0"}) and the config files and directories
// they name, and returns the merged, validated config.
//
// Unknown config-file keys do not fail the load: they are reported in
// RuntimeConfig.Warnings. A malformed file, an unknown flag, or a bad or
// inconsistent value fails it with an error naming the flag or key and the
// file. When -h or -help is given the error wraps flag.ErrHelp.
func Load(args []string) (*RuntimeConfig, error) {
	fl, err := parseFlags(args)
	if err != nil {
		return nil, err
	}

	merged := &fileConfig{}
	if fl.dev {
		merge(reflect.ValueOf(merged).Elem(), reflect.ValueOf(devLayer()).Elem())
	}
	var warnings []string
	apply := func(src, format string, data []byte) error {
		tree, err := parseSource(src, format, data)
		if err != nil {
			return err
		}
		d := &decoder{src: src}
		fc, err := d.decode(tree)
		if err != nil {
			return err
		}
		warnings = append(warnings, d.warnings...)
		merge(reflect.ValueOf(merged).Elem(), reflect.ValueOf(fc).Elem())
		return nil
	}

	var files []string
	for _, p := range fl.paths {
		found, err := configFiles(p, fl.format)
		if err != nil {
			return nil, err
		}
		for _, f := range found {
			data, err := os.ReadFile(f.path)
			if err != nil {
				return nil, fmt.Errorf("config: %w", err)
			}
			if err := apply("file "+f.path, f.format, data); err != nil {
				return nil, err
			}
			files = append(files, f.path)
		}
	}
	merge(reflect.ValueOf(merged).Elem(), reflect.ValueOf(&fl.cfg).Elem())
	for i, frag := range fl.hcl {
		if err := apply(fmt.Sprintf("-hcl fragment %d", i+1), "hcl", []byte(frag)); err != nil {
			return nil, err
		}
	}

	rc, err := build(merged, fl.dev)
	if err != nil {
		return nil, err
	}
	rc.ConfigFiles = files
	rc.Warnings = append(warnings, rc.Warnings...)
	return rc, nil
}

// devLayer holds what -dev changes from the defaults; files and flags can
// still override it.
func devLayer() *fileConfig {
	loopback := "127.0.0.1"
	yes := true
	grpc := 8502
	debug := "debug"
	fc := &fileConfig{
		BindAddr:   &loopback,
		ClientAddr: &loopback,
		Server:     &yes,
		Bootstrap:  &yes,
		LogLevel:   &debug,
	}
	fc.UIConfig.Enabled = &yes
	fc.Ports.GRPC = &grpc
	return fc
}

type configFile struct {
	path   string
	format string
}

// configFiles resolves a -config-file or -config-dir argument to the files
// it stands for. A directory yields its .json and .hcl files in lexical
// order; subdirectories are not read.
func configFiles(path, forced string) ([]configFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.IsDir() {
		format := forced
		if format == "" {
			format = formatOf(path)
		}
		if format == "" {
			return nil, fmt.Errorf("config: file %s: cannot tell the format from the extension: name it .json or .hcl, or pass -config-format", path)
		}
		return []configFile{{path: path, format: format}}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var out []configFile
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		format := formatOf(p)
		if format == "" {
			continue
		}
		// Stat rather than e.Type, so symlinks to files (as config
		// management tools lay down) count as files.
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			continue
		}
		if forced != "" {
			format = forced
		}
		out = append(out, configFile{path: p, format: format})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

func formatOf(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return "json"
	case ".hcl":
		return "hcl"
	}
	return ""
}

// AutopilotConfig is the autopilot block, as Consul's: the leader's view
// of server health, and dead-server cleanup.
type AutopilotConfig struct {
	CleanupDeadServers      bool          // default true
	LastContactThreshold    time.Duration // default 200ms
	MaxTrailingLogs         uint64        // default 250
	MinQuorum               uint          // default 0: no floor
	ServerStabilizationTime time.Duration // default 10s
}
