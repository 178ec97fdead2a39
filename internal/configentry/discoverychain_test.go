package configentry

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl"
)

func TestDecodeDiscoveryChain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		check func(t *testing.T, e Entry)
	}{
		{"resolver CamelCase", `{"Kind":"Service-Resolver","Name":"api","ConnectTimeout":"3s","RequestTimeout":"1m",
			"LoadBalancer":{"Policy":"Ring_Hash","RingHashConfig":{"MinimumRingSize":2048,"MaximumRingSize":4096},
			"HashPolicies":[{"Field":"Header","FieldValue":"x-user","Terminal":true},{"SourceIP":true},
			{"Field":"cookie","FieldValue":"session","CookieConfig":{"TTL":"10m","Path":"/"}}]}}`,
			func(t *testing.T, e Entry) {
				r := e.(*ServiceResolverConfigEntry)
				lb := r.LoadBalancer
				if r.Kind != ServiceResolver || r.ConnectTimeout != 3*time.Second || r.RequestTimeout != time.Minute ||
					lb.Policy != LBPolicyRingHash || lb.RingHashConfig.MinimumRingSize != 2048 || lb.HashPolicies[0].Field != "header" ||
					!lb.HashPolicies[0].Terminal || !lb.HashPolicies[1].SourceIP || lb.HashPolicies[2].CookieConfig.TTL != 10*time.Minute {
					t.Errorf("decoded %+v / %+v", r, lb)
				}
			}},
		{"resolver snake_case, durations in nanoseconds", `{"kind":"service-resolver","name":"api","connect_timeout":1500000000,
			"load_balancer":{"policy":"least_request","least_request_config":{"choice_count":3}}}`,
			func(t *testing.T, e Entry) {
				r := e.(*ServiceResolverConfigEntry)
				if r.ConnectTimeout != 1500*time.Millisecond || r.LoadBalancer.LeastRequestConfig.ChoiceCount != 3 {
					t.Errorf("decoded %+v", r)
				}
			}},
		{"router", `{"Kind":"service-router","Name":"api","Routes":[
			{"Match":{"HTTP":{"PathPrefix":"/admin","Methods":["get","post"],"Header":[{"Name":"x-debug","Present":true,"Invert":true}],
				"QueryParam":[{"Name":"v","Exact":"2"}]}},
			 "Destination":{"Service":"api","PrefixRewrite":"/","RequestTimeout":"2s","IdleTimeout":"30s","NumRetries":3,
				"RetryOnConnectFailure":true,"RetryOn":["5xx","unavailable"],"RetryOnStatusCodes":[503],
				"RequestHeaders":{"Add":{"x-a":"1"},"Set":{"x-b":"2"},"Remove":["x-c"]},"ResponseHeaders":{"Remove":["server"]}}},
			{"Match":{"HTTP":{"PathRegex":"/v[0-9]+/.*"}}},
			{"Destination":{"RequestTimeout":"5s"}}]}`,
			func(t *testing.T, e Entry) {
				r := e.(*ServiceRouterConfigEntry)
				if r.Kind != ServiceRouter || len(r.Routes) != 3 {
					t.Fatalf("decoded %+v", r)
				}
				m, d := r.Routes[0].Match.HTTP, r.Routes[0].Destination
				if !reflect.DeepEqual(m.Methods, []string{"GET", "POST"}) || !m.Header[0].Invert || m.QueryParam[0].Exact != "2" {
					t.Errorf("match %+v", m)
				}
				if d.RequestTimeout != 2*time.Second || d.IdleTimeout != 30*time.Second || d.NumRetries != 3 || !d.HasRetries() ||
					d.RequestHeaders.Set["x-b"] != "2" || d.ResponseHeaders.Remove[0] != "server" {
					t.Errorf("destination %+v", d)
				}
				if r.Routes[1].Destination.HasRetries() || r.Routes[2].Match != nil || r.Routes[2].Destination.RequestTimeout != 5*time.Second {
					t.Errorf("routes %+v %+v", r.Routes[1], r.Routes[2])
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeJSON([]byte(tc.body))
			if err != nil {
				t.Fatalf("DecodeJSON: %v", err)
			}
			tc.check(t, e)
			// What is stored round trips, durations as Go duration
			// strings (the api module's decoder takes nothing else).
			data, err := Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Unmarshal(e.GetKind(), data)
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", data, err)
			}
			if !reflect.DeepEqual(back, e) {
				t.Errorf("round trip:\n got %+v\nwant %+v", back, e)
			}
			if again, err := DecodeJSON(data); err != nil || !reflect.DeepEqual(again, e) {
				t.Errorf("decoding the answer again: %v, %+v", err, again)
			}
		})
	}
}

// Durations are answered as the api module wants them: strings, and
// left out when zero.
func TestDiscoveryChainDurationJSON(t *testing.T) {
	e, err := DecodeJSON([]byte(`{"Kind":"service-resolver","Name":"api","ConnectTimeout":"250ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := Marshal(e)
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["ConnectTimeout"] != "250ms" {
		t.Errorf("ConnectTimeout = %#v, want \"250ms\"", m["ConnectTimeout"])
	}
	if _, ok := m["RequestTimeout"]; ok {
		t.Errorf("RequestTimeout of 0 answered: %s", data)
	}
	r, err := DecodeJSON([]byte(`{"Kind":"service-router","Name":"api","Routes":[{"Destination":{"IdleTimeout":"1s"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	data, _ = Marshal(r)
	if !strings.Contains(string(data), `"IdleTimeout":"1s"`) || strings.Contains(string(data), `"RequestTimeout"`) {
		t.Errorf("router answered %s", data)
	}
}

func TestDiscoveryChainRejects(t *testing.T) {
	res := func(lb string) string { return `{"Kind":"service-resolver","Name":"api","LoadBalancer":` + lb + `}` }
	route := func(r string) string { return `{"Kind":"service-router","Name":"api","Routes":[{},` + r + `]}` }
	for _, tc := range []struct {
		name, body, want string
	}{
		{"resolver no name", `{"Kind":"service-resolver"}`, "Name: required"},
		{"resolver wildcard", `{"Kind":"service-resolver","Name":"*"}`, "Name: service-resolver cannot be defined for the wildcard"},
		{"resolver namespace", `{"Kind":"service-resolver","Name":"api","Namespace":"ns1"}`, `Namespace: "ns1"`},
		{"subsets", `{"Kind":"service-resolver","Name":"api","Subsets":{"v1":{"Filter":"Service.Meta.v == 1"}}}`, "Subsets: a subset is not supported yet"},
		{"default subset", `{"Kind":"service-resolver","Name":"api","DefaultSubset":"v1"}`, "DefaultSubset: a default subset is not supported yet"},
		{"redirect", `{"Kind":"service-resolver","Name":"api","Redirect":{"Service":"other"}}`, "Redirect: a redirect is not supported yet"},
		{"failover", `{"Kind":"service-resolver","Name":"api","Failover":{"*":{"Datacenters":["dc2"]}}}`, "Failover: failover is not supported yet"},
		{"locality", `{"Kind":"service-resolver","Name":"api","PrioritizeByLocality":{"Mode":"failover"}}`, "PrioritizeByLocality: locality prioritization is not supported yet"},
		{"negative timeout", `{"Kind":"service-resolver","Name":"api","ConnectTimeout":"-1s"}`, "ConnectTimeout: must not be negative"},
		{"bad duration", `{"Kind":"service-resolver","Name":"api","RequestTimeout":"soon"}`, "RequestTimeout: must be a duration"},
		{"unknown resolver key", `{"Kind":"service-resolver","Name":"api","LoadBalancer":{"Polcy":"random"}}`, "LoadBalancer.Polcy: unknown field"},
		{"bad policy", res(`{"Policy":"fastest"}`), `LoadBalancer.Policy: invalid value "fastest"`},
		{"least request config on ring hash", res(`{"Policy":"ring_hash","LeastRequestConfig":{"ChoiceCount":3}}`), "LoadBalancer.LeastRequestConfig: only allowed with Policy \"least_request\""},
		{"choice count 1", res(`{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":1}}`), "LoadBalancer.LeastRequestConfig.ChoiceCount: must be at least 2"},
		{"ring hash config on maglev", res(`{"Policy":"maglev","RingHashConfig":{"MinimumRingSize":8}}`), "LoadBalancer.RingHashConfig: only allowed with Policy \"ring_hash\""},
		{"ring too big", res(`{"Policy":"ring_hash","RingHashConfig":{"MaximumRingSize":9000000}}`), "LoadBalancer.RingHashConfig.MaximumRingSize: must be at most 8388608"},
		{"ring min above max", res(`{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":10,"MaximumRingSize":5}}`), "LoadBalancer.RingHashConfig: MinimumRingSize 10 is above MaximumRingSize 5"},
		{"hash policies on round robin", res(`{"Policy":"round_robin","HashPolicies":[{"SourceIP":true}]}`), "LoadBalancer.HashPolicies: only allowed with Policy \"ring_hash\" or \"maglev\""},
		{"hash field and source ip", res(`{"Policy":"maglev","HashPolicies":[{"Field":"header","FieldValue":"x","SourceIP":true}]}`), "LoadBalancer.HashPolicies[0]: SourceIP cannot be set with Field"},
		{"hash nothing", res(`{"Policy":"maglev","HashPolicies":[{"Terminal":true}]}`), "LoadBalancer.HashPolicies[0]: set Field (with FieldValue) or SourceIP"},
		{"hash field without value", res(`{"Policy":"maglev","HashPolicies":[{"Field":"query_parameter"}]}`), "LoadBalancer.HashPolicies[0].FieldValue: required with Field \"query_parameter\""},
		{"hash value without field", res(`{"Policy":"maglev","HashPolicies":[{"FieldValue":"x"}]}`), "LoadBalancer.HashPolicies[0].FieldValue: requires a Field"},
		{"hash bad field", res(`{"Policy":"maglev","HashPolicies":[{"Field":"body","FieldValue":"x"}]}`), `LoadBalancer.HashPolicies[0].Field: invalid value "body"`},
		{"cookie config on header", res(`{"Policy":"ring_hash","HashPolicies":[{"Field":"header","FieldValue":"x","CookieConfig":{"Session":true}}]}`), "LoadBalancer.HashPolicies[0].CookieConfig: only allowed with Field \"cookie\""},
		{"session cookie with ttl", res(`{"Policy":"ring_hash","HashPolicies":[{"Field":"cookie","FieldValue":"x","CookieConfig":{"Session":true,"TTL":"1s"}}]}`), "LoadBalancer.HashPolicies[0].CookieConfig: a Session cookie cannot have a TTL"},

		{"router no name", `{"Kind":"service-router"}`, "Name: required"},
		{"other service", route(`{"Destination":{"Service":"other"}}`), `Routes[1].Destination.Service: routing to another service ("other") is not supported yet`},
		{"subset", route(`{"Destination":{"ServiceSubset":"v1"}}`), "Routes[1].Destination.ServiceSubset: a subset is not supported yet"},
		{"case insensitive", route(`{"Match":{"HTTP":{"PathPrefix":"/a","CaseInsensitive":true}}}`), "Routes[1].Match.HTTP.CaseInsensitive: case-insensitive path matching is not supported yet"},
		{"two paths", route(`{"Match":{"HTTP":{"PathExact":"/a","PathPrefix":"/b"}}}`), "Routes[1].Match.HTTP: should only contain at most one of PathExact, PathPrefix, or PathRegex"},
		{"path without slash", route(`{"Match":{"HTTP":{"PathPrefix":"api"}}}`), `Routes[1].Match.HTTP.PathPrefix: "api" must begin with a '/'`},
		{"exact without slash", route(`{"Match":{"HTTP":{"PathExact":"api"}}}`), `Routes[1].Match.HTTP.PathExact`},
		{"bad path regex", route(`{"Match":{"HTTP":{"PathRegex":"("}}}`), "Routes[1].Match.HTTP.PathRegex"},
		{"header two rules", route(`{"Match":{"HTTP":{"Header":[{"Name":"x","Exact":"a","Suffix":"b"}]}}}`), "Routes[1].Match.HTTP.Header[0]: should only contain one of"},
		{"header no name", route(`{"Match":{"HTTP":{"Header":[{"Exact":"a"}]}}}`), "Routes[1].Match.HTTP.Header[0].Name: required"},
		{"header bad regex", route(`{"Match":{"HTTP":{"Header":[{"Name":"x","Regex":"["}]}}}`), "Routes[1].Match.HTTP.Header[0].Regex"},
		{"query no rule", route(`{"Match":{"HTTP":{"QueryParam":[{"Name":"x"}]}}}`), "Routes[1].Match.HTTP.QueryParam[0]: should only contain one of Present, Exact, or Regex"},
		{"query bad regex", route(`{"Match":{"HTTP":{"QueryParam":[{"Name":"x","Regex":"+"}]}}}`), "Routes[1].Match.HTTP.QueryParam[0].Regex"},
		{"bad method", route(`{"Match":{"HTTP":{"Methods":["FETCH"]}}}`), `Routes[1].Match.HTTP.Methods[0]: "FETCH" is not a valid HTTP method`},
		{"method twice", route(`{"Match":{"HTTP":{"Methods":["GET","get"]}}}`), `Routes[1].Match.HTTP.Methods[1]: "GET" given more than once`},
		{"status code", route(`{"Destination":{"RetryOnStatusCodes":[503,700]}}`), "Routes[1].Destination.RetryOnStatusCodes[1]: 700 is not an HTTP status code"},
		{"status code low", route(`{"Destination":{"RetryOnStatusCodes":[99]}}`), "Routes[1].Destination.RetryOnStatusCodes[0]: 99"},
		{"retry on unknown", route(`{"Destination":{"RetryOn":["sometimes"]}}`), `Routes[1].Destination.RetryOn[0]: invalid value "sometimes"`},
		{"retry on unsupported", route(`{"Destination":{"RetryOn":["5xx","retriable-4xx"]}}`), `Routes[1].Destination.RetryOn[1]: retrying on "retriable-4xx" is not supported yet`},
		{"retry on status codes named", route(`{"Destination":{"RetryOn":["retriable-status-codes"]}}`), `Routes[1].Destination.RetryOn[0]: "retriable-status-codes" is implied by RetryOnStatusCodes`},
		{"negative timeout", route(`{"Destination":{"RequestTimeout":"-2s"}}`), "Routes[1].Destination.RequestTimeout: must not be negative"},
		{"rewrite without path", route(`{"Match":{"HTTP":{"PathRegex":"/a.*"}},"Destination":{"PrefixRewrite":"/b"}}`), "Routes[1].Destination.PrefixRewrite: needs Match.HTTP.PathPrefix or PathExact"},
		{"pseudo header", route(`{"Destination":{"RequestHeaders":{"Set":{":path":"/x"}}}}`), `Routes[1].Destination.RequestHeaders.Set[":path"]: ":path" cannot be modified`},
		{"empty header name", route(`{"Destination":{"ResponseHeaders":{"Remove":[""]}}}`), "Routes[1].Destination.ResponseHeaders.Remove[0]: a header name must not be empty"},
		{"header value newline", route(`{"Destination":{"RequestHeaders":{"Add":{"x":"a\r\nb"}}}}`), `Routes[1].Destination.RequestHeaders.Add["x"]: the value must not contain CR, LF or NUL`},
		{"unknown route key", route(`{"Destination":{"Timeout":"1s"}}`), "Routes[1].Destination.Timeout: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJSON([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The package example decodes from HCL.
func TestDiscoveryChainHCL(t *testing.T) {
	for _, src := range []string{`
Kind = "service-router"
Name = "api"
routes {
  match { http { path_prefix = "/admin" } }
  destination {
    request_timeout = "2s"
    num_retries     = 2
    retry_on        = ["5xx"]
  }
}
`, `
Kind = "service-resolver"
Name = "api"
load_balancer {
  policy = "ring_hash"
  hash_policies {
    field       = "header"
    field_value = "x-user"
  }
}
`} {
		var doc map[string]any
		if err := hcl.Decode(&doc, src); err != nil {
			t.Fatal(err)
		}
		e, err := Decode(doc)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		switch x := e.(type) {
		case *ServiceRouterConfigEntry:
			d := x.Routes[0].Destination
			if x.Routes[0].Match.HTTP.PathPrefix != "/admin" || d.RequestTimeout != 2*time.Second || d.NumRetries != 2 || d.RetryOn[0] != "5xx" {
				t.Errorf("router %+v", x.Routes[0])
			}
		case *ServiceResolverConfigEntry:
			if hp := x.LoadBalancer.HashPolicies; len(hp) != 1 || hp[0].FieldValue != "x-user" {
				t.Errorf("resolver %+v", x.LoadBalancer)
			}
		}
	}
}

func TestDecodeUpstreamRegistrationConfig(t *testing.T) {
	u, err := DecodeUpstreamRegistrationConfig(map[string]any{
		"connect_timeout_ms":   float64(100), // not this function's
		"limits":               map[string]any{"max_connections": float64(10), "MaxPendingRequests": 0},
		"passive_health_check": map[string]any{"interval": "2s", "max_failures": float64(3), "base_ejection_time": "1m"},
		"envoy_cluster_json":   "{}",
	})
	if err != nil {
		t.Fatal(err)
	}
	if *u.Limits.MaxConnections != 10 || *u.Limits.MaxPendingRequests != 0 || u.Limits.MaxConcurrentRequests != nil {
		t.Errorf("limits %+v", u.Limits)
	}
	if p := u.PassiveHealthCheck; p.Interval != 2*time.Second || p.MaxFailures != 3 || *p.BaseEjectionTime != time.Minute {
		t.Errorf("passive health check %+v", p)
	}
	if u.ConnectTimeoutMs != 0 || u.EnvoyClusterJSON != "" {
		t.Errorf("read other keys: %+v", u)
	}
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"limits": map[string]any{"max_connections": -1}}, "limits.MaxConnections: must not be negative"},
		{map[string]any{"limits": "many"}, "limits: must be an object"},
		{map[string]any{"passive_health_check": map[string]any{"enforcing_consecutive_5xx": 101}}, "passive_health_check.EnforcingConsecutive5xx: must be at most 100"},
		{map[string]any{"passive_health_check": map[string]any{"interval": "often"}}, "passive_health_check.Interval"},
		{map[string]any{"limits": map[string]any{}, "Limits": map[string]any{}}, "given twice"},
	} {
		if _, err := DecodeUpstreamRegistrationConfig(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeUpstreamRegistrationConfig(%v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestPassiveHealthCheckPercentages(t *testing.T) {
	_, err := DecodeJSON([]byte(`{"Kind":"service-defaults","Name":"web","UpstreamConfig":{"Overrides":[{"Name":"db",
		"PassiveHealthCheck":{"EnforcingConsecutiveGatewayFailure":150}}]}}`))
	if want := "UpstreamConfig.Overrides[0].PassiveHealthCheck.EnforcingConsecutiveGatewayFailure: must be at most 100"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err %v, want %q", err, want)
	}
}
