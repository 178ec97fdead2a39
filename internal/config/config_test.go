package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// writeFile writes body to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, args ...string) *RuntimeConfig {
	t.Helper()
	rc, err := Load(args)
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return rc
}

func check[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestLoadDefaults(t *testing.T) {
	rc := mustLoad(t)
	host, _ := os.Hostname()
	check(t, "NodeName", rc.NodeName, host)
	check(t, "DevMode", rc.DevMode, false)
	check(t, "Server", rc.Server, false)
	check(t, "Datacenter", rc.Datacenter, "dc1")
	check(t, "NodeID", rc.NodeID, "")
	check(t, "BindAddr", rc.BindAddr, "0.0.0.0")
	check(t, "AdvertiseAddr", rc.AdvertiseAddr, "127.0.0.1")
	check(t, "ClientAddrs", rc.ClientAddrs, []string{"127.0.0.1"})
	check(t, "ports", []int{rc.HTTPPort, rc.HTTPSPort, rc.DNSPort, rc.GRPCPort, rc.GRPCTLSPort, rc.SerfLANPort, rc.SerfWANPort, rc.ServerPort},
		[]int{8500, -1, 8600, -1, -1, 8301, 8302, 8300})
	check(t, "HTTPAddrs", rc.HTTPAddrs, []string{"127.0.0.1:8500"})
	check(t, "DNSAddrs", rc.DNSAddrs, []string{"127.0.0.1:8600"})
	check(t, "HTTPSAddrs", rc.HTTPSAddrs, []string(nil))
	check(t, "GRPCAddrs", rc.GRPCAddrs, []string(nil))
	check(t, "LogLevel", rc.LogLevel, "info")
	check(t, "UIEnabled", rc.UIEnabled, false)
	check(t, "KVMaxValueSize", rc.KVMaxValueSize, 512*1024)
	check(t, "RetryInterval", rc.RetryInterval, 30*time.Second)
	check(t, "DNS", rc.DNS, DNSConfig{
		Domain:          "consul.",
		RecursorTimeout: 2 * time.Second,
		AllowStale:      true,
		MaxStale:        87600 * time.Hour,
		UDPAnswerLimit:  3,
	})
	if isDNSLabel(host) {
		check(t, "Warnings", rc.Warnings, []string(nil))
	}
}

func TestLoadDev(t *testing.T) {
	rc := mustLoad(t, "-dev")
	check(t, "DevMode", rc.DevMode, true)
	check(t, "Server", rc.Server, true)
	check(t, "Bootstrap", rc.Bootstrap, true)
	check(t, "BootstrapExpect", rc.BootstrapExpect, 0)
	check(t, "DataDir", rc.DataDir, "")
	check(t, "BindAddr", rc.BindAddr, "127.0.0.1")
	check(t, "AdvertiseAddr", rc.AdvertiseAddr, "127.0.0.1")
	check(t, "ClientAddrs", rc.ClientAddrs, []string{"127.0.0.1"})
	check(t, "UIEnabled", rc.UIEnabled, true)
	check(t, "GRPCPort", rc.GRPCPort, 8502)
	check(t, "GRPCAddrs", rc.GRPCAddrs, []string{"127.0.0.1:8502"})
	check(t, "HTTPPort", rc.HTTPPort, 8500)
	check(t, "LogLevel", rc.LogLevel, "debug")

	// Flags still override what -dev implies; a data dir is not used.
	dir := t.TempDir()
	rc = mustLoad(t, "-dev", "-node", "n1", "-http-port", "0", "-grpc-port=-1", "-ui=false", "-data-dir", dir)
	check(t, "HTTPAddrs", rc.HTTPAddrs, []string{"127.0.0.1:0"})
	check(t, "GRPCAddrs", rc.GRPCAddrs, []string(nil))
	check(t, "UIEnabled", rc.UIEnabled, false)
	check(t, "DataDir", rc.DataDir, "")
	if len(rc.Warnings) != 1 || !strings.Contains(rc.Warnings[0], "data_dir") {
		t.Errorf("Warnings = %q, want one about data_dir", rc.Warnings)
	}
}

func TestLoadFlags(t *testing.T) {
	dataDir := t.TempDir()
	nodeID := "0F6B9E4C-7D2A-4C1B-9E8F-1A2B3C4D5E6F"
	tests := []struct {
		name string
		args []string
		got  func(*RuntimeConfig) any
		want any
	}{
		{"server", []string{"-server"}, func(r *RuntimeConfig) any { return r.Server }, true},
		{"bootstrap", []string{"-server", "-bootstrap", "-data-dir", dataDir}, func(r *RuntimeConfig) any { return r.Bootstrap }, true},
		{"bootstrap-expect", []string{"-server", "-bootstrap-expect", "3", "-data-dir", dataDir}, func(r *RuntimeConfig) any { return r.BootstrapExpect }, 3},
		{"bootstrap-expect=1 is bootstrap", []string{"-server", "-bootstrap-expect=1", "-data-dir", dataDir}, func(r *RuntimeConfig) any { return []any{r.Bootstrap, r.BootstrapExpect} }, []any{true, 0}},
		{"data-dir", []string{"-data-dir", dataDir}, func(r *RuntimeConfig) any { return r.DataDir }, dataDir},
		{"node", []string{"-node", "n1"}, func(r *RuntimeConfig) any { return r.NodeName }, "n1"},
		{"node-id", []string{"-node-id", nodeID}, func(r *RuntimeConfig) any { return r.NodeID }, strings.ToLower(nodeID)},
		{"datacenter", []string{"-datacenter", "East-1"}, func(r *RuntimeConfig) any { return r.Datacenter }, "east-1"},
		{"bind", []string{"-bind", "10.0.0.5"}, func(r *RuntimeConfig) any { return []string{r.BindAddr, r.AdvertiseAddr} }, []string{"10.0.0.5", "10.0.0.5"}},
		{"bind ipv6 any", []string{"-bind", "::"}, func(r *RuntimeConfig) any { return r.AdvertiseAddr }, "::1"},
		{"advertise", []string{"-advertise", "10.0.0.6"}, func(r *RuntimeConfig) any { return r.AdvertiseAddr }, "10.0.0.6"},
		{"client list", []string{"-client", "127.0.0.1 ::1"}, func(r *RuntimeConfig) any { return r.HTTPAddrs }, []string{"127.0.0.1:8500", "[::1]:8500"}},
		{"http-port", []string{"-http-port", "0"}, func(r *RuntimeConfig) any { return r.HTTPAddrs }, []string{"127.0.0.1:0"}},
		{"http-port disabled", []string{"-http-port=-1"}, func(r *RuntimeConfig) any { return r.HTTPAddrs }, []string(nil)},
		{"https-port", []string{"-https-port", "8501"}, func(r *RuntimeConfig) any { return r.HTTPSAddrs }, []string{"127.0.0.1:8501"}},
		{"dns-port", []string{"-dns-port", "8653"}, func(r *RuntimeConfig) any { return r.DNSAddrs }, []string{"127.0.0.1:8653"}},
		{"grpc-port", []string{"-grpc-port", "8502"}, func(r *RuntimeConfig) any { return r.GRPCPort }, 8502},
		{"serf-lan-port", []string{"-serf-lan-port", "9301"}, func(r *RuntimeConfig) any { return r.SerfLANPort }, 9301},
		{"serf-wan-port", []string{"-serf-wan-port", "-1"}, func(r *RuntimeConfig) any { return r.SerfWANPort }, -1},
		{"server-port", []string{"-server-port", "9300"}, func(r *RuntimeConfig) any { return r.ServerPort }, 9300},
		{"join", []string{"-join", "a", "-join=b"}, func(r *RuntimeConfig) any { return r.Join }, []string{"a", "b"}},
		{"retry-join", []string{"-retry-join", "a", "-retry-join", "b"}, func(r *RuntimeConfig) any { return r.RetryJoin }, []string{"a", "b"}},
		{"retry-interval", []string{"-retry-interval", "5s"}, func(r *RuntimeConfig) any { return r.RetryInterval }, 5 * time.Second},
		{"retry-max", []string{"-retry-max", "4"}, func(r *RuntimeConfig) any { return r.RetryMaxAttempts }, 4},
		{"log-level", []string{"-log-level", "WARN"}, func(r *RuntimeConfig) any { return r.LogLevel }, "warn"},
		{"log-json", []string{"-log-json"}, func(r *RuntimeConfig) any { return r.LogJSON }, true},
		{"ui", []string{"-ui"}, func(r *RuntimeConfig) any { return r.UIEnabled }, true},
		{"enable-script-checks", []string{"-enable-script-checks"}, func(r *RuntimeConfig) any { return r.EnableScriptChecks }, true},
		{"enable-local-script-checks", []string{"-enable-local-script-checks=true"}, func(r *RuntimeConfig) any { return r.EnableLocalScriptChecks }, true},
		{"pid-file", []string{"-pid-file", "/run/t.pid"}, func(r *RuntimeConfig) any { return r.PidFile }, "/run/t.pid"},
		{"recursor", []string{"-recursor", "8.8.8.8", "-recursor", "1.1.1.1:5353", "-recursor", "::1"},
			func(r *RuntimeConfig) any { return r.DNS.Recursors }, []string{"8.8.8.8:53", "1.1.1.1:5353", "[::1]:53"}},
		{"domain", []string{"-domain", "Mesh"}, func(r *RuntimeConfig) any { return r.DNS.Domain }, "mesh."},
		{"alt-domain", []string{"-alt-domain", "alt.example."}, func(r *RuntimeConfig) any { return r.DNS.AltDomain }, "alt.example."},
		{"hcl", []string{"-hcl", `node_name = "h1"`, "-hcl", `ports { dns = -1 }`},
			func(r *RuntimeConfig) any { return []any{r.NodeName, r.DNSAddrs} }, []any{"h1", []string(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := mustLoad(t, tt.args...)
			check(t, "value", tt.got(rc), tt.want)
		})
	}
}

// exampleHCL and exampleJSON are the example in doc.go: they must load to
// the same config.
const exampleHCL = `
datacenter = "east"
data_dir   = "%DIR%"
server     = true
bootstrap  = true
ports {
  http = 8500
  grpc = 8502
}
dns_config {
  service_ttl { "*" = "5s" }
}
service {
  name = "web"
  port = 8080
  meta { version = "2" }
  check {
    http     = "http://127.0.0.1:8080/health"
    interval = "10s"
  }
}
`

const exampleJSON = `{
  "datacenter": "east",
  "data_dir": "%DIR%",
  "server": true,
  "bootstrap": true,
  "ports": {"http": 8500, "grpc": 8502},
  "dns_config": {"service_ttl": {"*": "5s"}},
  "service": {
    "name": "web",
    "port": 8080,
    "meta": {"version": "2"},
    "check": {"http": "http://127.0.0.1:8080/health", "interval": "10s"}
  }
}`

func TestLoadExampleFiles(t *testing.T) {
	for _, tt := range []struct{ name, body string }{
		{"example.hcl", exampleHCL},
		{"example.json", exampleJSON},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, tt.name, strings.ReplaceAll(tt.body, "%DIR%", dir))
			rc := mustLoad(t, "-node", "n1", "-config-file", p)
			check(t, "ConfigFiles", rc.ConfigFiles, []string{p})
			check(t, "Datacenter", rc.Datacenter, "east")
			check(t, "DataDir", rc.DataDir, dir)
			check(t, "Server/Bootstrap", []bool{rc.Server, rc.Bootstrap}, []bool{true, true})
			check(t, "GRPCAddrs", rc.GRPCAddrs, []string{"127.0.0.1:8502"})
			check(t, "ServiceTTL", rc.DNS.ServiceTTL, map[string]time.Duration{"*": 5 * time.Second})
			check(t, "Services", rc.Services, []*structs.ServiceDefinition{{
				Name: "web",
				Port: 8080,
				Meta: map[string]string{"version": "2"},
				Check: &structs.CheckType{
					HTTP:     "http://127.0.0.1:8080/health",
					Interval: structs.Duration(10 * time.Second),
				},
			}})
			check(t, "Warnings", rc.Warnings, []string(nil))
		})
	}
}

// TestLoadDefinitions checks service and check definitions with Consul's
// snake_case keys, in both formats, decode to the same structs.
func TestLoadDefinitions(t *testing.T) {
	const hclBody = `
services = [
  {
    id = "web-1"
    name = "web"
    tags = ["v1"]
    enable_tag_override = true
    meta { Build_ID = "abc" }
    tagged_addresses { lan { address = "10.0.0.1" port = 80 } }
    weights { passing = 5 warning = 1 }
    checks = [
      {
        id = "web-http"
        name = "HTTP"
        http = "https://localhost/health"
        tls_skip_verify = true
        header { X-Trace = ["1"] }
        interval = "10s"
        deregister_critical_service_after = "1m"
      }
    ]
    proxy {
      upstreams { destination_name = "db" local_bind_port = 9191 }
    }
  },
  {
    name = "db"
    port = "5432"
  }
]
check {
  id = "mem"
  name = "Memory"
  script_args = ["/bin/check_mem", "-w"]
  interval = "30s"
  timeout = "5s"
}
checks = [
  { name = "beat", ttl = "15s", service_id = "web-1", status = "passing" }
]
enable_local_script_checks = true
`
	const jsonBody = `{
  "services": [
    {
      "id": "web-1",
      "name": "web",
      "tags": ["v1"],
      "enable_tag_override": true,
      "meta": {"Build_ID": "abc"},
      "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}},
      "weights": {"passing": 5, "warning": 1},
      "checks": [{
        "id": "web-http",
        "name": "HTTP",
        "http": "https://localhost/health",
        "tls_skip_verify": true,
        "header": {"X-Trace": ["1"]},
        "interval": "10s",
        "deregister_critical_service_after": "1m"
      }],
      "proxy": {"upstreams": [{"destination_name": "db", "local_bind_port": 9191}]}
    },
    {"name": "db", "port": 5432}
  ],
  "check": {
    "id": "mem",
    "name": "Memory",
    "script_args": ["/bin/check_mem", "-w"],
    "interval": "30s",
    "timeout": "5s"
  },
  "checks": [{"name": "beat", "ttl": "15s", "service_id": "web-1", "status": "passing"}],
  "enable_local_script_checks": true
}`
	wantServices := []*structs.ServiceDefinition{
		{
			ID:                "web-1",
			Name:              "web",
			Tags:              []string{"v1"},
			EnableTagOverride: true,
			Meta:              map[string]string{"Build_ID": "abc"},
			TaggedAddresses:   map[string]structs.ServiceAddress{"lan": {Address: "10.0.0.1", Port: 80}},
			Weights:           &structs.Weights{Passing: 5, Warning: 1},
			Checks: []*structs.CheckType{{
				CheckID:                        "web-http",
				Name:                           "HTTP",
				HTTP:                           "https://localhost/health",
				TLSSkipVerify:                  true,
				Header:                         map[string][]string{"X-Trace": {"1"}},
				Interval:                       structs.Duration(10 * time.Second),
				DeregisterCriticalServiceAfter: structs.Duration(time.Minute),
			}},
		},
		{Name: "db", Port: 5432},
	}
	wantChecks := []*structs.CheckType{
		{
			CheckID:  "mem",
			Name:     "Memory",
			Args:     []string{"/bin/check_mem", "-w"},
			Interval: structs.Duration(30 * time.Second),
			Timeout:  structs.Duration(5 * time.Second),
		},
		{Name: "beat", TTL: structs.Duration(15 * time.Second), ServiceID: "web-1", Status: "passing"},
	}
	for _, tt := range []struct{ name, body string }{
		{"defs.hcl", hclBody},
		{"defs.json", jsonBody},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tt.name, tt.body)
			rc := mustLoad(t, "-node", "n1", "-config-file", p)
			check(t, "Warnings", rc.Warnings, []string(nil))
			check(t, "EnableLocalScriptChecks", rc.EnableLocalScriptChecks, true)
			if len(rc.Services) != 2 {
				t.Fatalf("got %d services, want 2", len(rc.Services))
			}
			// The proxy block decodes into typed fields: a one-upstream
			// list stays a list.
			proxy := rc.Services[0].Proxy
			rc.Services[0].Proxy = nil
			wantProxy := &structs.ConnectProxyConfig{Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}}}
			check(t, "Proxy", proxy, wantProxy)
			check(t, "Services", rc.Services, wantServices)
			check(t, "Checks", rc.Checks, wantChecks)
		})
	}
}

func TestLoadConfigDirOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "10-b.hcl", `node_name = "from-b"
service { name = "b" }
retry_join = ["b"]`)
	writeFile(t, dir, "02-a.json", `{"node_name": "from-a", "log_level": "debug", "service": {"name": "a"}, "retry_join": ["a"]}`)
	writeFile(t, dir, "20-c.json", `{"services": [{"name": "c"}]}`)
	writeFile(t, dir, "README.md", `not config`)
	writeFile(t, dir, "sub/99-z.json", `{"node_name": "from-sub"}`)

	rc := mustLoad(t, "-config-dir", dir)
	check(t, "ConfigFiles", rc.ConfigFiles, []string{
		filepath.Join(dir, "02-a.json"), filepath.Join(dir, "10-b.hcl"), filepath.Join(dir, "20-c.json"),
	})
	check(t, "NodeName", rc.NodeName, "from-b")
	check(t, "LogLevel", rc.LogLevel, "debug")
	check(t, "RetryJoin", rc.RetryJoin, []string{"a", "b"})
	var names []string
	for _, s := range rc.Services {
		names = append(names, s.Name)
	}
	check(t, "service names", names, []string{"a", "b", "c"})
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	first := writeFile(t, dir, "first.json", `{"node_name": "first", "datacenter": "one", "ports": {"http": 1111, "dns": 1112}, "recursors": ["1.1.1.1"]}`)
	second := writeFile(t, dir, "second.hcl", `node_name = "second"
ports { http = 2222 }
ui = true
ui_config { enabled = false }`)

	tests := []struct {
		name string
		args []string
		want []any // NodeName, Datacenter, HTTPPort, DNSPort, UIEnabled
	}{
		{"files in order", []string{"-config-file", first, "-config-file", second}, []any{"second", "one", 2222, 1112, false}},
		{"order reversed", []string{"-config-file", second, "-config-file", first}, []any{"first", "one", 1111, 1112, false}},
		{"flag beats file", []string{"-node", "flag", "-config-file", first, "-http-port", "3333", "-ui"}, []any{"flag", "one", 3333, 1112, true}},
		{"hcl beats flag", []string{"-config-file", first, "-node", "flag", "-hcl", `node_name = "hcl"`}, []any{"hcl", "one", 1111, 1112, false}},
		{"file beats dev", []string{"-dev", "-config-file", second}, []any{"second", "dc1", 2222, 8600, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := mustLoad(t, tt.args...)
			check(t, "got", []any{rc.NodeName, rc.Datacenter, rc.HTTPPort, rc.DNSPort, rc.UIEnabled}, tt.want)
		})
	}

	rc := mustLoad(t, "-config-file", first, "-recursor", "9.9.9.9")
	check(t, "Recursors append", rc.DNS.Recursors, []string{"1.1.1.1:53", "9.9.9.9:53"})
}

func TestLoadAddresses(t *testing.T) {
	rc := mustLoad(t, "-client", "0.0.0.0", "-hcl", `addresses { http = "127.0.0.1 ::1" dns = "10.0.0.1" }`, "-hcl", `ports { grpc = 8502 }`)
	check(t, "HTTPAddrs", rc.HTTPAddrs, []string{"127.0.0.1:8500", "[::1]:8500"})
	check(t, "DNSAddrs", rc.DNSAddrs, []string{"10.0.0.1:8600"})
	check(t, "GRPCAddrs", rc.GRPCAddrs, []string{"0.0.0.0:8502"})
}

func TestLoadDNSConfig(t *testing.T) {
	p := writeFile(t, t.TempDir(), "dns.hcl", `
domain = "Example.Mesh."
alt_domain = "alt"
recursors = ["8.8.8.8", "[2001:db8::1]:5353"]
dns_config {
  allow_stale = false
  node_ttl = "30s"
  service_ttl { "*" = "5s", "web" = "10s" }
  only_passing = true
  udp_answer_limit = 5
  enable_truncate = true
  a_record_limit = 2
  recursor_timeout = "1s"
  max_stale = "1m"
  soa { min_ttl = 60 }
}
limits { kv_max_value_size = 1024 rpc_rate = 10 }
`)
	rc := mustLoad(t, "-node", "n1", "-config-file", p)
	check(t, "DNS", rc.DNS, DNSConfig{
		Domain:          "example.mesh.",
		AltDomain:       "alt.",
		Recursors:       []string{"8.8.8.8:53", "[2001:db8::1]:5353"},
		RecursorTimeout: time.Second,
		NodeTTL:         30 * time.Second,
		ServiceTTL:      map[string]time.Duration{"*": 5 * time.Second, "web": 10 * time.Second},
		AllowStale:      false,
		MaxStale:        time.Minute,
		OnlyPassing:     true,
		UDPAnswerLimit:  5,
		EnableTruncate:  true,
		ARecordLimit:    2,
	})
	check(t, "KVMaxValueSize", rc.KVMaxValueSize, 1024)
	check(t, "Warnings", rc.Warnings, []string(nil))
}

func TestLoadWarnings(t *testing.T) {
	p := writeFile(t, t.TempDir(), "w.json", `{
  "foo": 1,
  "ports": {"http": 8500, "bogus": 2},
  "acl": {"enabled": true, "default_policy": "deny"},
  "connect": {"enabled": true},
  "performance": {"raft_multiplier": 1},
  "telemetry": {"prometheus_retention_time": "1m"},
  "ui_config": {"enabled": true, "content_path": "/ui/"},
  "service": {"name": "web", "colour": "blue"},
  "node_meta": {"rack": "r1"},
  "enable_debug": true,
  "disable_update_check": true,
  "skip_leave_on_interrupt": true,
  "leave_on_terminate": true,
  "pid_file": "/run/x.pid",
  "start_join": ["10.0.0.9"],
  "log_json": true
}`)
	rc := mustLoad(t, "-node", "n1", "-config-file", p)
	want := []string{
		`config: unknown key "foo" in file ` + p,
		`config: unknown key "ports.bogus" in file ` + p,
		`config: unknown key "service.colour" in file ` + p,
		// acl.enabled and default_policy are read (for intentions), and
		// say what they do not do.
		`config: acl.enabled: Trellis enforces no ACL tokens; acl.default_policy only sets the default of intentions (deny)`,
	}
	check(t, "Warnings", rc.Warnings, want)
	check(t, "UIEnabled", rc.UIEnabled, true)
	check(t, "ACL", []any{rc.ACLEnabled, rc.ACLDefaultPolicy}, []any{true, "deny"})
	check(t, "NodeMeta", rc.NodeMeta, map[string]string{"rack": "r1"})
	check(t, "flags", []bool{rc.EnableDebug, rc.DisableUpdateCheck, rc.SkipLeaveOnInterrupt, rc.LeaveOnTerm, rc.LogJSON},
		[]bool{true, true, true, true, true})
	check(t, "PidFile", rc.PidFile, "/run/x.pid")
	check(t, "Join", rc.Join, []string{"10.0.0.9"})
	check(t, "Services", len(rc.Services), 1)
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string { return writeFile(t, dir, name, body) }
	tests := []struct {
		name string
		args []string
		want string // substring of the error
	}{
		{"unknown flag", []string{"-frobnicate"}, "-frobnicate"},
		{"positional argument", []string{"-dev", "extra"}, `unexpected argument "extra"`},
		{"flag port not a number", []string{"-http-port", "abc"}, `invalid value "abc" for flag -http-port`},
		{"flag port out of range", []string{"-dns-port", "70000"}, "ports.dns"},
		{"file port not a number", []string{"-config-file", file("port.json", `{"ports": {"http": "abc"}}`)}, `key "ports.http" in file`},
		{"hcl port not a number", []string{"-hcl", `ports { serf_lan = "x" }`}, `key "ports.serf_lan" in -hcl fragment 1`},
		{"bad duration", []string{"-config-file", file("dur.hcl", `dns_config { node_ttl = "10 parsecs" }`)}, `key "dns_config.node_ttl"`},
		{"bad service_ttl", []string{"-hcl", `dns_config { service_ttl { web = "x" } }`}, `key "dns_config.service_ttl.web"`},
		{"bad check duration", []string{"-hcl", `check { name = "c" ttl = "soon" }`}, `key "check"`},
		{"bad bool", []string{"-config-file", file("bool.json", `{"server": "maybe"}`)}, `key "server"`},
		{"bad flag duration", []string{"-retry-interval", "x"}, "-retry-interval"},
		{"missing service name", []string{"-hcl", `service { port = 80 }`}, `service "": missing name`},
		{"check of no kind", []string{"-hcl", `check { name = "c" interval = "1s" }`}, `check "c": must have one of`},
		{"check of two kinds", []string{"-hcl", `check { name = "c" http = "http://x" tcp = "x:1" interval = "1s" }`}, `check "c": has http and tcp`},
		{"check without interval", []string{"-hcl", `service { name = "web" check { tcp = "localhost:80" } }`}, `service "web": check "#0": interval is required for tcp checks`},
		{"two check blocks in a service", []string{"-hcl", `service { name = "web" check { ttl = "1s" } check { ttl = "2s" } }`}, `key "service.check" in -hcl fragment 1: want one object, got 2`},
		{"check bad status", []string{"-hcl", `check { name = "c" ttl = "1s" status = "fine" }`}, `status "fine"`},
		{"bootstrap_expect with dev", []string{"-dev", "-bootstrap-expect", "3"}, "bootstrap_expect cannot be used with -dev"},
		{"bootstrap and expect", []string{"-server", "-bootstrap", "-bootstrap-expect", "3", "-data-dir", dir}, "bootstrap and bootstrap_expect"},
		{"bootstrap without server", []string{"-bootstrap", "-data-dir", dir}, "bootstrap requires server"},
		{"expect without server", []string{"-bootstrap-expect", "3", "-data-dir", dir}, "bootstrap_expect requires server"},
		{"bootstrap without data dir", []string{"-server", "-bootstrap"}, "data_dir cannot be empty"},
		{"expect without data dir", []string{"-server", "-bootstrap-expect", "3"}, "data_dir cannot be empty"},
		{"data dir is a file", []string{"-data-dir", file("plain.txt", "x")}, "is not a directory"},
		{"bad log level", []string{"-log-level", "loud"}, `log_level "loud"`},
		{"bad config format", []string{"-config-format", "yaml"}, "-config-format"},
		{"unknown extension", []string{"-config-file", file("x.conf", `{}`)}, "cannot tell the format"},
		{"missing file", []string{"-config-file", filepath.Join(dir, "nope.json")}, "nope.json"},
		{"malformed json", []string{"-config-file", file("bad.json", `{"server": tru}`)}, "parse file"},
		{"json not an object", []string{"-config-file", file("list.json", `[1]`)}, "top level must be an object"},
		{"malformed hcl", []string{"-hcl", `server = = true`}, "parse -hcl fragment 1"},
		{"node_id not a uuid", []string{"-node-id", "abc"}, `node_id "abc"`},
		{"bind not an ip", []string{"-bind", "localhost"}, `bind_addr: "localhost" is not an IP address`},
		{"bind template", []string{"-bind", `{{ GetPrivateIP }}`}, "templates are not supported"},
		{"docker check", []string{"-hcl", `check { name = "d" docker_container_id = "f00" args = ["true"] interval = "1s" }`}, `key "check.docker_container_id" in -hcl fragment 1: docker checks are not supported`},
		{"advertise unspecified", []string{"-advertise", "0.0.0.0"}, "advertise_addr"},
		{"client not an ip", []string{"-client", "127.0.0.1 nowhere"}, `client_addr: "nowhere"`},
		{"bad recursor", []string{"-recursor", "dns.google"}, `recursors: "dns.google"`},
		{"bad datacenter", []string{"-datacenter", "east coast"}, "datacenter"},
		{"kv size", []string{"-hcl", `limits { kv_max_value_size = 0 }`}, "limits.kv_max_value_size"},
		{"block not an object", []string{"-config-file", file("ports.json", `{"ports": 8500}`)}, `key "ports"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := Load(tt.args)
			if err == nil {
				t.Fatalf("Load(%q) = %+v, want an error containing %q", tt.args, rc, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%q) error = %q, want it to contain %q", tt.args, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q does not name the component", err)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	_, err := Load([]string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Load(-h) error = %v, want flag.ErrHelp", err)
	}
	var b strings.Builder
	PrintUsage(&b)
	for _, name := range []string{"-dev", "-config-file", "-http-port", "-retry-join", "-recursor"} {
		if !strings.Contains(b.String(), name) {
			t.Errorf("PrintUsage output lacks %s", name)
		}
	}
}

func TestLoadFileHandling(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "agent.conf", `node_name = "forced"`)
	empty := writeFile(t, dir, "empty.json", "  \n")
	null := writeFile(t, dir, "null.json", `{"node_name": null, "datacenter": "dc2"}`)
	sub := t.TempDir()
	writeFile(t, sub, "a.json", `{"node_name": "from-dir"}`)

	tests := []struct {
		name string
		args []string
		want string // NodeName
	}{
		{"config-format forces format", []string{"-config-format", "hcl", "-config-file", conf}, "forced"},
		{"empty file", []string{"-node", "n1", "-config-file", empty}, "n1"},
		{"null is unset", []string{"-node", "n1", "-config-file", null}, "n1"},
		{"config-file naming a directory", []string{"-config-file", sub}, "from-dir"},
		{"file and dir in command-line order", []string{"-config-dir", sub, "-config-file", conf, "-config-format=hcl"}, "forced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := mustLoad(t, tt.args...)
			check(t, "NodeName", rc.NodeName, tt.want)
		})
	}
}

func TestLoadNodeNameWarning(t *testing.T) {
	rc := mustLoad(t, "-node", "web.example")
	if len(rc.Warnings) != 1 || !strings.Contains(rc.Warnings[0], `node_name "web.example"`) {
		t.Errorf("Warnings = %q, want one naming node_name", rc.Warnings)
	}
}

// TestLoadCheckIDSpellings checks that a check's ID may be written "id", as
// Consul's config docs do, or "check_id"/"CheckID", as its API does.
func TestLoadCheckIDSpellings(t *testing.T) {
	for _, key := range []string{"id", "check_id", "CheckID", "checkid"} {
		t.Run(key, func(t *testing.T) {
			rc := mustLoad(t, "-node", "n1", "-hcl", `check { `+key+` = "c1" name = "C" ttl = "10s" }`)
			check(t, "CheckID", rc.Checks[0].CheckID, "c1")
			check(t, "Warnings", rc.Warnings, []string(nil))
		})
	}
}

func TestReconnectTimeout(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rc, err := Load([]string{"-dev"})
	if err != nil || rc.ReconnectTimeout != 72*time.Hour {
		t.Fatalf("default reconnect_timeout = %v, %v; want 72h", rc.ReconnectTimeout, err)
	}
	rc, err = Load([]string{"-dev", "-config-file", write(`{"reconnect_timeout": "12h"}`)})
	if err != nil || rc.ReconnectTimeout != 12*time.Hour {
		t.Fatalf("reconnect_timeout 12h = %v, %v", rc.ReconnectTimeout, err)
	}
	if _, err := Load([]string{"-dev", "-config-file", write(`{"reconnect_timeout": "1h"}`)}); err == nil || !strings.Contains(err.Error(), "reconnect_timeout") {
		t.Fatalf("reconnect_timeout below 8h: err = %v, want one naming the key", err)
	}
}

func TestWANAndAutopilot(t *testing.T) {
	rc := mustLoad(t, "-node", "n1")
	check(t, "default autopilot", rc.Autopilot, AutopilotConfig{CleanupDeadServers: true,
		LastContactThreshold: 200 * time.Millisecond, MaxTrailingLogs: 250, ServerStabilizationTime: 10 * time.Second})
	check(t, "default advertise_addr_wan", rc.AdvertiseAddrWAN, rc.AdvertiseAddr)

	rc = mustLoad(t, "-node", "n1", "-server", "-join-wan", "127.0.0.5", "-retry-join-wan", "127.0.0.6:8302",
		"-retry-interval-wan", "2s", "-advertise-wan", "127.0.0.9", "-hcl",
		`autopilot { cleanup_dead_servers = false last_contact_threshold = "1s" max_trailing_logs = 10 min_quorum = 3 server_stabilization_time = "0s" }`)
	check(t, "JoinWAN", rc.JoinWAN, []string{"127.0.0.5"})
	check(t, "RetryJoinWAN", rc.RetryJoinWAN, []string{"127.0.0.6:8302"})
	check(t, "RetryIntervalWAN", rc.RetryIntervalWAN, 2*time.Second)
	check(t, "AdvertiseAddrWAN", rc.AdvertiseAddrWAN, "127.0.0.9")
	check(t, "autopilot", rc.Autopilot, AutopilotConfig{LastContactThreshold: time.Second, MaxTrailingLogs: 10, MinQuorum: 3})

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-join-wan", "127.0.0.5"}, "require server = true"},
		{[]string{"-server", "-advertise-wan", "0.0.0.0"}, "advertise_addr_wan"},
		{[]string{"-hcl", `autopilot { max_trailing_logs = -1 }`}, "autopilot.max_trailing_logs"},
		{[]string{"-hcl", `autopilot { last_contact_threshold = "0s" }`}, "autopilot.last_contact_threshold"},
	} {
		if _, err := Load(append([]string{"-node", "n1"}, tt.args...)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) error = %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}

// The acl block: enabled and default_policy are read, the token keys
// still warn, and a bad policy is refused naming the key.
func TestLoadACL(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "acl.hcl")
	if err := os.WriteFile(p, []byte("acl {\n  enabled = true\n  default_policy = \"deny\"\n  tokens { agent = \"x\" }\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := mustLoad(t, "-node", "n1", "-config-file", p)
	check(t, "ACL", []any{rc.ACLEnabled, rc.ACLDefaultPolicy}, []any{true, "deny"})
	found := false
	for _, w := range rc.Warnings {
		if strings.Contains(w, `"acl.tokens"`) && strings.Contains(w, "not supported") {
			found = true
		}
	}
	if !found {
		t.Errorf("Warnings = %q, want one for acl.tokens", rc.Warnings)
	}
	rc = mustLoad(t, "-node", "n1")
	check(t, "ACL default", []any{rc.ACLEnabled, rc.ACLDefaultPolicy}, []any{false, "allow"})
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"acl": {"default_policy": "maybe"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{"-node", "n1", "-config-file", bad}); err == nil || !strings.Contains(err.Error(), "acl.default_policy") {
		t.Errorf("Load with a bad default_policy: %v, want an error naming acl.default_policy", err)
	}
}
