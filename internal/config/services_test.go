package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func TestParseServiceDefinitions(t *testing.T) {
	webHCL := `
service {
  name = "web"
  id   = "web-1"
  port = 8080
  enable_tag_override = true
  meta { Team_Name = "edge" }
  check {
    id       = "web-http"
    http     = "http://localhost:8080/health"
    interval = "10s"
    header { X-A = ["1"] }
  }
}
`
	webJSON := `{"service": {
  "name": "web", "id": "web-1", "port": 8080, "enable_tag_override": true,
  "meta": {"Team_Name": "edge"},
  "check": {"id": "web-http", "http": "http://localhost:8080/health", "interval": "10s", "header": {"X-A": ["1"]}}
}}`
	web := &structs.ServiceDefinition{
		ID: "web-1", Name: "web", Port: 8080, EnableTagOverride: true,
		// Meta keys are user data: kept as written.
		Meta: map[string]string{"Team_Name": "edge"},
		Check: &structs.CheckType{
			CheckID: "web-http", HTTP: "http://localhost:8080/health",
			Interval: structs.Duration(10 * time.Second), Header: map[string][]string{"X-A": {"1"}},
		},
	}
	tests := []struct {
		name     string
		file     string
		src      string
		want     []*structs.ServiceDefinition
		warnings []string
		err      string // substring of the error; "" for none
	}{
		{name: "hcl single", file: "web.hcl", src: webHCL, want: []*structs.ServiceDefinition{web}},
		{name: "json single", file: "web.json", src: webJSON, want: []*structs.ServiceDefinition{web}},
		{
			name: "hcl repeated services blocks",
			file: "x.hcl",
			src:  "services {\n name = \"a\"\n}\nservices {\n name = \"b\"\n port = \"81\"\n}\n",
			want: []*structs.ServiceDefinition{{Name: "a"}, {Name: "b", Port: 81}},
		},
		{
			name: "json list with nested checks, snake_case and CamelCase",
			file: "x.json",
			src: `{"services": [
  {"name": "api", "tagged_addresses": {"lan": {"address": "10.0.0.5", "port": 9000}},
   "checks": [{"check_id": "api-ttl", "ttl": "15s"}, {"CheckID": "api-ttl-2", "TTL": "20s", "DeregisterCriticalServiceAfter": "90m"}]},
  {"Name": "worker", "ID": "worker-a"}
]}`,
			want: []*structs.ServiceDefinition{
				{
					Name:            "api",
					TaggedAddresses: map[string]structs.ServiceAddress{"lan": {Address: "10.0.0.5", Port: 9000}},
					Checks: []*structs.CheckType{
						{CheckID: "api-ttl", TTL: structs.Duration(15 * time.Second)},
						{CheckID: "api-ttl-2", TTL: structs.Duration(20 * time.Second), DeregisterCriticalServiceAfter: structs.Duration(90 * time.Minute)},
					},
				},
				{Name: "worker", ID: "worker-a"},
			},
		},
		{
			name: "service and services together, service first",
			file: "x.hcl",
			src:  "services = [{ name = \"b\" }]\nservice { name = \"a\" }\n",
			want: []*structs.ServiceDefinition{{Name: "a"}, {Name: "b"}},
		},
		{
			name: "json lone service object in services",
			file: "x.json",
			src:  `{"services": {"name": "a", "check": {"id": "c1", "args": ["/bin/true"], "interval": "10s"}}}`,
			want: []*structs.ServiceDefinition{{Name: "a", Check: &structs.CheckType{CheckID: "c1", Args: []string{"/bin/true"}, Interval: structs.Duration(10 * time.Second)}}},
		},
		{
			name: "other extension sniffed as json, lone check for checks",
			file: "x.conf",
			src:  `{"service": {"name": "a", "checks": {"http": "http://localhost/", "interval": "5s", "header": {"X-A": ["1"]}}}}`,
			want: []*structs.ServiceDefinition{{Name: "a", Checks: []*structs.CheckType{{HTTP: "http://localhost/", Interval: structs.Duration(5 * time.Second), Header: map[string][]string{"X-A": {"1"}}}}}},
		},
		{
			name: "other extension sniffed as hcl",
			file: "x.conf",
			src:  "service { name = \"a\" }\n",
			want: []*structs.ServiceDefinition{{Name: "a"}},
		},
		{
			name: "hcl proxy decodes, upstreams stay a list",
			file: "x.hcl",
			src:  "service {\n name = \"p\"\n kind = \"connect-proxy\"\n port = 21000\n proxy {\n destination_service_name = \"web\"\n upstreams {\n destination_name = \"db\"\n local_bind_port = 9191\n }\n }\n}\n",
			want: []*structs.ServiceDefinition{{Name: "p", Kind: "connect-proxy", Port: 21000, Proxy: &structs.ConnectProxyConfig{
				DestinationServiceName: "web",
				Upstreams:              []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191}},
			}}},
		},
		{
			// Before the CLI shared this decoder, config files turned
			// "tags": null into a tag "".
			name: "json null is unset",
			file: "x.json",
			src:  `{"service": {"name": "a", "tags": null, "checks": null}}`,
			want: []*structs.ServiceDefinition{{Name: "a"}},
		},
		{
			name: "unknown keys are dropped with a warning",
			file: "x.hcl",
			src:  "datacenter = \"dc1\"\nservice {\n name = \"a\"\n locality = \"x\"\n}\n",
			want: []*structs.ServiceDefinition{{Name: "a"}},
			warnings: []string{
				`config: key "datacenter" in file x.hcl is not a service definition and is ignored`,
				`config: unknown key "service.locality" in file x.hcl`,
			},
		},
		{
			name:     "unknown key in a list element",
			file:     "x.json",
			src:      `{"services": [{"name": "a"}, {"name": "b", "checks": [{"ttl": "1s", "colour": "red"}]}]}`,
			want:     []*structs.ServiceDefinition{{Name: "a"}, {Name: "b", Checks: []*structs.CheckType{{TTL: structs.Duration(time.Second)}}}},
			warnings: []string{`config: unknown key "services[1].checks[0].colour" in file x.json`},
		},
		{name: "missing name", file: "x.json", src: `{"service": {"port": 1}}`, err: `config: file x.json: service "": missing name`},
		{name: "missing name in a list", file: "x.hcl", src: "services = [{ name = \"a\" }, { id = \"b-1\" }]", err: `config: file x.hcl: service "b-1": missing name`},
		{name: "port out of range", file: "x.json", src: `{"service": {"name": "a", "port": 70000}}`, err: `service "a": port 70000 out of range`},
		{name: "check of no kind", file: "x.hcl", src: "service {\n name = \"a\"\n check { interval = \"1s\" }\n}", err: `service "a": check "#0": must have one of`},
		{name: "docker check", file: "x.json", src: `{"service": {"name": "a", "check": {"docker_container_id": "f00", "args": ["true"], "interval": "1s"}}}`, err: `key "service.check.docker_container_id" in file x.json: docker checks are not supported`},
		{name: "two checks as one", file: "x.hcl", src: "service {\n name = \"x\"\n check { ttl = \"1s\" }\n check { ttl = \"2s\" }\n}", err: `config: key "service.check" in file x.hcl: want one object, got 2`},
		{name: "service not an object", file: "x.json", src: `{"services": ["web"]}`, err: `key "services" in file x.json: want an object, got string "web"`},
		{name: "bad duration", file: "x.json", src: `{"service": {"name": "a", "check": {"ttl": "soon"}}}`, err: `key "service" in file x.json`},
		{
			name:     "no service",
			file:     "none.hcl",
			src:      `node_name = "x"`,
			err:      `config: file none.hcl: no "service" or "services" definition found`,
			warnings: []string{`config: key "node_name" in file none.hcl is not a service definition and is ignored`},
		},
		{name: "empty services list", file: "x.json", src: `{"services": []}`, err: `no "service" or "services" definition found`},
		{name: "bad hcl", file: "bad.hcl", src: "service {", err: "config: parse file bad.hcl: "},
		{name: "bad json", file: "bad.json", src: `{"service": `, err: "config: parse file bad.json: "},
		{name: "json not an object", file: "x.json", src: `[{"name": "a"}]`, err: "top level must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := ParseServiceDefinitions(tt.file, []byte(tt.src))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("error = %q, want none", err)
			case tt.err != "" && err == nil:
				t.Fatalf("got %s and no error, want an error containing %q", dump(got), tt.err)
			case tt.err != "" && !strings.Contains(err.Error(), tt.err):
				t.Errorf("error = %q, want it to contain %q", err, tt.err)
			}
			if tt.err != "" && got != nil {
				t.Errorf("got %s with an error, want nil", dump(got))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %s, want %s", dump(got), dump(tt.want))
			}
			if !reflect.DeepEqual(warnings, tt.warnings) {
				t.Errorf("warnings = %q, want %q", warnings, tt.warnings)
			}
		})
	}
}

// dump shows definitions readably in a failure message.
func dump(defs []*structs.ServiceDefinition) string {
	b, err := json.Marshal(defs)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestParseServiceDefinitionsConnect(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"proxy without destination", `service { name = "p"  kind = "connect-proxy"  port = 21000 }`, "Proxy.DestinationServiceName"},
		{"sidecar upstream without port", `service {
  name = "web"
  connect { sidecar_service { proxy { upstreams = [{ destination_name = "db" }] } } }
}`, "Proxy.Upstreams[0].LocalBindPort"},
		{"sidecar check of no kind", `service {
  name = "web"
  connect { sidecar_service { check { name = "x" } } }
}`, "sidecar_service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defs, _, err := ParseServiceDefinitions("x.hcl", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) || defs != nil {
				t.Errorf("defs %v, err %v; want no definitions and an error naming %q", defs, err, tc.want)
			}
		})
	}
	defs, _, err := ParseServiceDefinitions("x.hcl", []byte(`service {
  name = "web"
  port = 8080
  connect { sidecar_service { port = 21001 proxy { upstreams = [{ destination_name = "db", local_bind_port = 9191 }] } } }
}`))
	if err != nil {
		t.Fatal(err)
	}
	sc := defs[0].Connect.SidecarService
	if sc.Port != 21001 || len(sc.Proxy.Upstreams) != 1 || sc.Proxy.Upstreams[0].LocalBindPort != 9191 {
		t.Errorf("sidecar = %+v, proxy %+v", sc, sc.Proxy)
	}
}
