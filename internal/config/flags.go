package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// cliFlags is the result of parsing the agent's command line: the flags that
// steer loading, and the rest as a fileConfig layer.
type cliFlags struct {
	dev    bool
	format string   // -config-format: "", "json" or "hcl"
	paths  []string // -config-file and -config-dir, in command-line order
	hcl    []string // -hcl fragments, in order
	cfg    fileConfig
}

// newFlagSet binds every agent flag to f.
func newFlagSet(f *cliFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &f.cfg

	fs.BoolVar(&f.dev, "dev", false, "Start a single in-memory server for development: UI on, everything on 127.0.0.1.")
	fs.Var(appendFlag{&f.paths}, "config-file", "Load a JSON or HCL config file. Repeatable.")
	fs.Var(appendFlag{&f.paths}, "config-dir", "Load every .json and .hcl file in a directory, in lexical order. Repeatable.")
	fs.StringVar(&f.format, "config-format", "", "Read config files as this format (json or hcl) whatever their extension.")
	fs.Var(appendFlag{&f.hcl}, "hcl", "An HCL config fragment, applied after files and flags. Repeatable.")

	fs.Var(boolFlag{&c.Server}, "server", "Run as a server.")
	fs.Var(boolFlag{&c.Bootstrap}, "bootstrap", "Let this server elect itself leader of a new cluster.")
	fs.Var(intFlag{&c.BootstrapExpect}, "bootstrap-expect", "Wait for this many servers before bootstrapping.")
	fs.Var(stringFlag{&c.DataDir}, "data-dir", "Directory for the agent's state.")
	fs.Var(stringFlag{&c.NodeName}, "node", "Node name. Default: the hostname.")
	fs.Var(stringFlag{&c.NodeID}, "node-id", "Node ID, a UUID. Default: generated and persisted in the data dir.")
	fs.Var(stringFlag{&c.Datacenter}, "datacenter", "Datacenter name. Default: dc1.")

	fs.Var(stringFlag{&c.BindAddr}, "bind", "IP address to bind cluster communication to.")
	fs.Var(stringFlag{&c.AdvertiseAddr}, "advertise", "IP address to advertise to the cluster.")
	fs.Var(stringFlag{&c.ClientAddr}, "client", "Space-separated IP addresses for the HTTP, DNS and gRPC listeners.")
	fs.Var(intFlag{&c.Ports.HTTP}, "http-port", "HTTP API port; -1 disables, 0 picks a free port.")
	fs.Var(intFlag{&c.Ports.HTTPS}, "https-port", "HTTPS API port; -1 disables.")
	fs.Var(intFlag{&c.Ports.DNS}, "dns-port", "DNS port; -1 disables.")
	fs.Var(intFlag{&c.Ports.GRPC}, "grpc-port", "gRPC (xDS) port; -1 disables.")
	fs.Var(intFlag{&c.Ports.SerfLAN}, "serf-lan-port", "LAN gossip port.")
	fs.Var(intFlag{&c.Ports.SerfWAN}, "serf-wan-port", "WAN gossip port; -1 disables.")
	fs.Var(intFlag{&c.Ports.Server}, "server-port", "Server RPC port.")

	fs.Var(appendFlag{&c.StartJoin}, "join", "Join this agent's address at start. Repeatable.")
	fs.Var(appendFlag{&c.RetryJoin}, "retry-join", "Join this address, retrying until it succeeds. Repeatable.")
	fs.Var(durationFlag{&c.RetryInterval}, "retry-interval", "Time between -retry-join attempts.")
	fs.Var(intFlag{&c.RetryMax}, "retry-max", "Give up -retry-join after this many attempts; 0 never gives up.")
	fs.Var(appendFlag{&c.StartJoinWAN}, "join-wan", "Join this server's WAN pool address at start (servers only). Repeatable.")
	fs.Var(appendFlag{&c.RetryJoinWAN}, "retry-join-wan", "Join this WAN address, retrying until it succeeds (servers only). Repeatable.")
	fs.Var(durationFlag{&c.RetryIntervalWAN}, "retry-interval-wan", "Time between -retry-join-wan attempts.")
	fs.Var(intFlag{&c.RetryMaxWAN}, "retry-max-wan", "Give up -retry-join-wan after this many attempts; 0 never gives up.")
	fs.Var(stringFlag{&c.AdvertiseAddrWAN}, "advertise-wan", "IP address to advertise to the WAN pool.")

	fs.Var(stringFlag{&c.LogLevel}, "log-level", "Log level: trace, debug, info, warn or error.")
	fs.Var(boolFlag{&c.LogJSON}, "log-json", "Log in JSON.")
	fs.Var(boolFlag{&c.UIConfig.Enabled}, "ui", "Serve the web UI.")
	fs.Var(boolFlag{&c.EnableScriptChecks}, "enable-script-checks", "Allow script checks from any source, including the HTTP API.")
	fs.Var(boolFlag{&c.EnableLocalScriptChecks}, "enable-local-script-checks", "Allow script checks from config files only.")
	fs.Var(stringFlag{&c.PidFile}, "pid-file", "Write the agent's PID to this file.")

	fs.Var(appendFlag{&c.Recursors}, "recursor", "Upstream DNS server for non-Consul names. Repeatable.")
	fs.Var(stringFlag{&c.Domain}, "domain", "DNS domain to answer for. Default: consul.")
	fs.Var(stringFlag{&c.AltDomain}, "alt-domain", "A second DNS domain to answer for.")
	return fs
}

// parseFlags parses the arguments after "agent". A request for help comes
// back as an error wrapping flag.ErrHelp.
func parseFlags(args []string) (*cliFlags, error) {
	f := &cliFlags{}
	fs := newFlagSet(f)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	switch f.format {
	case "", "json", "hcl":
	default:
		return nil, fmt.Errorf("config: invalid value %q for flag -config-format: want json or hcl", f.format)
	}
	return f, nil
}

// PrintUsage writes the agent's flags and their descriptions to w.
func PrintUsage(w io.Writer) {
	fs := newFlagSet(&cliFlags{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// The flag.Value types below store into a fileConfig's pointer fields, so
// that a flag left off the command line leaves its field nil and does not
// override config files.

type stringFlag struct{ p **string }

func (v stringFlag) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return **v.p
}

func (v stringFlag) Set(s string) error { *v.p = &s; return nil }

type boolFlag struct{ p **bool }

func (v boolFlag) IsBoolFlag() bool { return true }

func (v boolFlag) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return strconv.FormatBool(**v.p)
}

func (v boolFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("not a boolean")
	}
	*v.p = &b
	return nil
}

type intFlag struct{ p **int }

func (v intFlag) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return strconv.Itoa(**v.p)
}

func (v intFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("not an integer")
	}
	*v.p = &n
	return nil
}

type durationFlag struct{ p **time.Duration }

func (v durationFlag) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return (**v.p).String()
}

func (v durationFlag) Set(s string) error {
	d, err := toDuration(s)
	if err != nil {
		return err
	}
	*v.p = &d
	return nil
}

// appendFlag is a repeatable flag.
type appendFlag struct{ p *[]string }

func (v appendFlag) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, " ")
}

func (v appendFlag) Set(s string) error { *v.p = append(*v.p, s); return nil }
