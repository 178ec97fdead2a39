package configentry

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl"
)

func TestDecodeKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		check func(t *testing.T, e Entry)
	}{
		{"service-defaults CamelCase", `{"Kind":"Service-Defaults","Name":"web","Protocol":"HTTP",
			"UpstreamConfig":{"Defaults":{"Limits":{"MaxConnections":10}},"Overrides":[{"Name":"db","ConnectTimeoutMs":100}]}}`,
			func(t *testing.T, e Entry) {
				s := e.(*ServiceConfigEntry)
				if s.Kind != ServiceDefaults || s.Protocol != "http" {
					t.Errorf("kind/protocol not normalised: %q %q", s.Kind, s.Protocol)
				}
				if *s.UpstreamConfig.Defaults.Limits.MaxConnections != 10 || s.UpstreamConfig.Defaults.ConnectTimeoutMs != 5000 ||
					s.UpstreamConfig.Overrides[0].ConnectTimeoutMs != 100 {
					t.Errorf("upstream config = %+v", s.UpstreamConfig)
				}
			}},
		{"service-defaults snake_case", `{"kind":"service-defaults","name":"web","protocol":"grpc","max_inbound_connections":5,
			"upstream_config":{"defaults":{"passive_health_check":{"interval":"10s","max_failures":3}}},"mesh_gateway":{"mode":"local"}}`,
			func(t *testing.T, e Entry) {
				s := e.(*ServiceConfigEntry)
				if s.MaxInboundConnections != 5 || s.MeshGateway.Mode != "local" || s.UpstreamConfig.Defaults.PassiveHealthCheck.Interval.String() != "10s" ||
					s.UpstreamConfig.Defaults.PassiveHealthCheck.MaxFailures != 3 {
					t.Errorf("decoded %+v", s)
				}
			}},
		{"proxy-defaults without a name is global", `{"Kind":"proxy-defaults","Config":{"protocol":"HTTP","local_connect_timeout_ms":1000},"AccessLogs":{"Enabled":true}}`,
			func(t *testing.T, e Entry) {
				p := e.(*ProxyConfigEntry)
				if p.Name != "global" || p.Config["protocol"] != "http" || p.Config["local_connect_timeout_ms"] != int64(1000) {
					t.Errorf("decoded %+v", p)
				}
			}},
		{"mesh", `{"Kind":"mesh","TransparentProxy":{"MeshDestinationsOnly":true},"TLS":{"Incoming":{"TLSMinVersion":"TLSv1_2"}}}`,
			func(t *testing.T, e Entry) {
				m := e.(*MeshConfigEntry)
				if m.Name != "mesh" || !m.TransparentProxy.MeshDestinationsOnly || m.TLS.Incoming.TLSMinVersion != "TLSv1_2" {
					t.Errorf("decoded %+v", m)
				}
			}},
		{"service-intentions sorted with precedence", `{"Kind":"service-intentions","Name":"db","Sources":[
			{"Name":"*","Action":"deny"},{"Name":"web","Action":"ALLOW"},
			{"Name":"api","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/v1","Methods":["get"],"Header":[{"Name":"x","Present":true}]}}]}]}`,
			func(t *testing.T, e Entry) {
				s := e.(*ServiceIntentionsConfigEntry)
				var got []string
				for _, src := range s.Sources {
					got = append(got, src.Name)
					if src.Type != "consul" {
						t.Errorf("%s: Type %q", src.Name, src.Type)
					}
				}
				if strings.Join(got, ",") != "api,web,*" || s.Sources[0].Precedence != 9 || s.Sources[2].Precedence != 8 {
					t.Errorf("sources %v, precedence %d/%d", got, s.Sources[0].Precedence, s.Sources[2].Precedence)
				}
				if s.Sources[1].Action != "allow" || s.Sources[0].Permissions[0].HTTP.Methods[0] != "GET" {
					t.Errorf("not normalised: %+v", s.Sources)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeJSON([]byte(tc.body))
			if err != nil {
				t.Fatalf("DecodeJSON: %v", err)
			}
			tc.check(t, e)
		})
	}
}

// Each bad entry is refused with an error naming the field.
func TestDecodeRejects(t *testing.T) {
	l7 := func(http string) string {
		return `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"api","Permissions":[{"Action":"allow","HTTP":` + http + `}]}]}`
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown kind", `{"Kind":"service-router-x","Name":"a"}`, "invalid config entry kind: service-router-x"},
		{"no kind", `{"Name":"a"}`, "Kind: missing"},
		{"unknown key", `{"Kind":"service-defaults","Name":"web","Protocl":"http"}`, "Protocl: unknown field"},
		{"unknown nested key", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Defaults":{"Timeout":1}}}`, "UpstreamConfig.Defaults.Timeout: unknown field"},
		{"wrong type", `{"Kind":"service-defaults","Name":"web","MaxInboundConnections":"x"}`, "MaxInboundConnections: must be a number"},
		{"key twice", `{"Kind":"service-defaults","Name":"web","protocol":"http","Protocol":"tcp"}`, "Protocol: given twice"},
		{"no name", `{"Kind":"service-defaults"}`, "Name: required"},
		{"bad protocol", `{"Kind":"service-defaults","Name":"web","Protocol":"udp"}`, `Protocol: invalid value "udp"`},
		{"bad proxy name", `{"Kind":"proxy-defaults","Name":"web"}`, `Name: invalid name ("web"), only "global" is supported`},
		{"bad proxy protocol", `{"Kind":"proxy-defaults","Config":{"protocol":"udp"}}`, "Config.protocol"},
		{"override without name", `{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Overrides":[{"Protocol":"http"}]}}`, "UpstreamConfig.Overrides[0].Name: required"},
		{"bad mesh TLS", `{"Kind":"mesh","TLS":{"Incoming":{"TLSMinVersion":"TLSv9"}}}`, "TLS.Incoming.TLSMinVersion"},
		{"bad mesh default policy", `{"Kind":"mesh","default_intention_policy":"maybe"}`, `DefaultIntentionPolicy: invalid value "maybe"`},
		{"intention no action", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"api"}]}`, `Sources[1].Action: must be set to "allow" or "deny"`},
		{"intention bad action", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"permit"}]}`, `Sources[0].Action`},
		{"intention both", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Permissions":[{"Action":"allow","HTTP":{"PathExact":"/"}}]}]}`, "Sources[0].Action: must be omitted if Permissions are specified"},
		{"intention duplicate", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}`, "already defines an intention from \"web\""},
		{"intention no source name", `{"Kind":"service-intentions","Name":"db","Sources":[{"Action":"allow"}]}`, "Sources[0].Name: required"},
		{"intention no name", `{"Kind":"service-intentions","Sources":[]}`, "Name: required"},
		{"two paths", l7(`{"PathExact":"/a","PathPrefix":"/b"}`), "Sources[1].Permissions[0].HTTP: should only contain at most one of PathExact, PathPrefix, or PathRegex"},
		{"path without slash", l7(`{"PathPrefix":"b"}`), "Sources[1].Permissions[0].HTTP.PathPrefix"},
		{"bad regex", l7(`{"PathRegex":"("}`), "Sources[1].Permissions[0].HTTP.PathRegex"},
		{"empty http", l7(`{}`), "Sources[1].Permissions[0].HTTP: should not be empty"},
		{"header two matches", l7(`{"Header":[{"Name":"x","Exact":"a","Prefix":"b"}]}`), "Sources[1].Permissions[0].HTTP.Header[0]: should only contain one of"},
		{"header no match", l7(`{"Header":[{"Name":"x"}]}`), "Sources[1].Permissions[0].HTTP.Header[0]: should only contain one of"},
		{"header bad regex", l7(`{"Header":[{"Name":"x","Regex":"["}]}`), "Sources[1].Permissions[0].HTTP.Header[0].Regex"},
		{"bad method", l7(`{"Methods":["FETCH"]}`), "Sources[1].Permissions[0].HTTP.Methods[0]"},
		{"L7 on wildcard", `{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"web","Permissions":[{"Action":"allow","HTTP":{"PathExact":"/"}}]}]}`, "wildcard destination"},
		{"not an object", `[1]`, "must be a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJSON([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// HCL files, as `trellis config write` reads them, decode the same way,
// blocks and snake_case included.
func TestDecodeHCL(t *testing.T) {
	src := `
Kind = "service-intentions"
Name = "db"
sources {
  name = "web"
  action = "allow"
}
sources {
  name = "api"
  permissions {
    action = "deny"
    http {
      path_prefix = "/admin"
      header {
        name = "x-debug"
        present = true
        invert = true
      }
    }
  }
}
`
	var doc map[string]any
	if err := hcl.Decode(&doc, src); err != nil {
		t.Fatal(err)
	}
	e, err := Decode(doc)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	s := e.(*ServiceIntentionsConfigEntry)
	if len(s.Sources) != 2 || s.Sources[0].Name != "api" || s.Sources[0].Permissions[0].HTTP.PathPrefix != "/admin" ||
		!s.Sources[0].Permissions[0].HTTP.Header[0].Invert || s.Sources[1].Action != "allow" {
		t.Errorf("decoded %+v", s.Sources)
	}
}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		want     int
	}{{"web", "db", 9}, {"*", "db", 8}, {"web", "*", 6}, {"*", "*", 5}} {
		if got := IntentionPrecedence(tc.src, tc.dst); got != tc.want {
			t.Errorf("IntentionPrecedence(%q, %q) = %d, want %d", tc.src, tc.dst, got, tc.want)
		}
	}
}

func TestCloneIsDeep(t *testing.T) {
	e, err := DecodeJSON([]byte(`{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := Clone(e).(*ServiceIntentionsConfigEntry)
	c.Sources[0].Action = "deny"
	if e.(*ServiceIntentionsConfigEntry).Sources[0].Action != "allow" {
		t.Error("changing the clone changed the original")
	}
}
