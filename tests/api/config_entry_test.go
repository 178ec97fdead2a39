package api_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Each kind round-trips through the official client: Set, CAS, Get, List,
// DeleteCAS and Delete.
func TestConfigEntriesEachKind(t *testing.T) {
	a := start(t)
	ce := a.c.ConfigEntries()
	for _, tc := range []struct {
		entry api.ConfigEntry
		check func(t *testing.T, got api.ConfigEntry)
	}{
		{&api.ProxyConfigEntry{Kind: api.ProxyDefaults, Name: api.ProxyConfigGlobal, Config: map[string]any{"protocol": "http"},
			MeshGateway: api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal}},
			func(t *testing.T, got api.ConfigEntry) {
				p := got.(*api.ProxyConfigEntry)
				if p.Config["protocol"] != "http" || p.MeshGateway.Mode != api.MeshGatewayModeLocal {
					t.Errorf("proxy-defaults = %+v", p)
				}
			}},
		{&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http2",
			UpstreamConfig: &api.UpstreamConfiguration{Defaults: &api.UpstreamConfig{ConnectTimeoutMs: 1500,
				PassiveHealthCheck: &api.PassiveHealthCheck{MaxFailures: 3}}}},
			func(t *testing.T, got api.ConfigEntry) {
				s := got.(*api.ServiceConfigEntry)
				if s.Protocol != "http2" || s.UpstreamConfig.Defaults.ConnectTimeoutMs != 1500 || s.UpstreamConfig.Defaults.PassiveHealthCheck.MaxFailures != 3 {
					t.Errorf("service-defaults = %+v", s)
				}
			}},
		{&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db",
			Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionAllow}, {Name: "*", Action: api.IntentionActionDeny}}},
			func(t *testing.T, got api.ConfigEntry) {
				s := got.(*api.ServiceIntentionsConfigEntry)
				if len(s.Sources) != 2 || s.Sources[0].Name != "web" || s.Sources[0].Precedence != 9 || s.Sources[1].Precedence != 8 ||
					s.Sources[0].Type != api.IntentionSourceConsul {
					t.Errorf("service-intentions = %+v", s.Sources)
				}
			}},
		{&api.MeshConfigEntry{TransparentProxy: api.TransparentProxyMeshConfig{MeshDestinationsOnly: true}},
			func(t *testing.T, got api.ConfigEntry) {
				if !got.(*api.MeshConfigEntry).TransparentProxy.MeshDestinationsOnly {
					t.Errorf("mesh = %+v", got)
				}
			}},
		// A resolver that hashes nothing needs no L7 protocol.
		{&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "db", ConnectTimeout: 2 * time.Second,
			LoadBalancer: &api.LoadBalancer{Policy: "least_request", LeastRequestConfig: &api.LeastRequestConfig{ChoiceCount: 3}}},
			func(t *testing.T, got api.ConfigEntry) {
				r := got.(*api.ServiceResolverConfigEntry)
				if r.ConnectTimeout != 2*time.Second || r.LoadBalancer.Policy != "least_request" || r.LoadBalancer.LeastRequestConfig.ChoiceCount != 3 {
					t.Errorf("service-resolver = %+v", r)
				}
			}},
	} {
		kind, name := tc.entry.GetKind(), tc.entry.GetName()
		t.Run(kind, func(t *testing.T) {
			ok, _, err := ce.CAS(tc.entry, 99, nil)
			if err != nil || ok {
				t.Fatalf("CAS against a wrong index on a missing entry = %v, %v; want false", ok, err)
			}
			ok, _, err = ce.CAS(tc.entry, 0, nil)
			if err != nil || !ok {
				t.Fatalf("CAS 0 = %v, %v; want true", ok, err)
			}
			got, qm, err := ce.Get(kind, name, nil)
			must(t, err)
			tc.check(t, got)
			if got.GetCreateIndex() == 0 || got.GetModifyIndex() != got.GetCreateIndex() || qm.LastIndex < got.GetModifyIndex() {
				t.Errorf("indexes %d/%d, X-Consul-Index %d", got.GetCreateIndex(), got.GetModifyIndex(), qm.LastIndex)
			}
			ok, _, err = ce.Set(tc.entry, nil)
			if err != nil || !ok {
				t.Fatalf("Set = %v, %v", ok, err)
			}
			list, _, err := ce.List(kind, nil)
			must(t, err)
			if len(list) != 1 || list[0].GetName() != got.GetName() {
				t.Fatalf("List(%s) = %v", kind, list)
			}
			if ok, _, err := ce.DeleteCAS(kind, name, got.GetModifyIndex(), nil); err != nil || ok {
				t.Fatalf("DeleteCAS with a stale index = %v, %v; want false", ok, err)
			}
			if ok, _, err := ce.DeleteCAS(kind, name, list[0].GetModifyIndex(), nil); err != nil || !ok {
				t.Fatalf("DeleteCAS = %v, %v; want true", ok, err)
			}
			if _, _, err := ce.Get(kind, name, nil); err == nil || !strings.Contains(err.Error(), "404") {
				t.Fatalf("Get after delete: %v, want a 404", err)
			}
			_, err = ce.Delete(kind, name, nil)
			must(t, err) // deleting a missing entry succeeds
		})
	}
}

// Bad entries and unknown kinds are 400s naming the problem, and nothing
// is stored.
func TestConfigEntriesRejected(t *testing.T) {
	a := start(t)
	for _, tc := range []struct{ name, body, want string }{
		{"unknown kind", `{"Kind":"service-splitter-x","Name":"web"}`, "invalid config entry kind: service-splitter-x"},
		{"unknown key", `{"Kind":"service-defaults","Name":"web","Protocl":"http"}`, "Protocl: unknown field"},
		{"bad protocol", `{"Kind":"service-defaults","Name":"web","Protocol":"smtp"}`, "Protocol"},
		{"bad proxy-defaults name", `{"Kind":"proxy-defaults","Name":"web"}`, `only "global" is supported`},
		{"intention without action", `{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"a","Action":"allow"},{"Name":"b"}]}`, "Sources[1].Action"},
		{"L7 intention on tcp", `{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"a","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}]}`, `service "web" has protocol "tcp"`},
		{"router on tcp", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/a"}}}]}`, `service "web" has protocol "tcp", which does not permit advanced routing`},
		{"router to another service", `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"Service":"api"}}]}`, `Routes[0].Destination.Service: routing to another service ("api") is not supported yet`},
		{"resolver subsets", `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{}}}`, "Subsets: a subset is not supported yet"},
		{"resolver hash on round robin", `{"Kind":"service-resolver","Name":"web","LoadBalancer":{"HashPolicies":[{"SourceIP":true}]}}`, "LoadBalancer.HashPolicies: only allowed with Policy"},
		{"malformed JSON", `{"Kind":`, "Request decoding failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, "PUT", "/v1/config", tc.body).expect(t, tc.name, http.StatusBadRequest)
			if !strings.Contains(r.body, tc.want) {
				t.Errorf("body %q, want it to contain %q", r.body, tc.want)
			}
		})
	}
	for _, kind := range []string{api.ServiceDefaults, api.ServiceIntentions, api.ProxyDefaults, api.ServiceRouter, api.ServiceResolver} {
		list, _, err := a.c.ConfigEntries().List(kind, nil)
		if err != nil || len(list) != 0 {
			t.Errorf("List(%s) after refused writes = %v, %v; want nothing", kind, list, err)
		}
	}
	r := a.do(t, "GET", "/v1/config/nope", nil).expect(t, "list of an unknown kind", http.StatusBadRequest)
	if !strings.Contains(r.body, "nope") {
		t.Errorf("body %q does not name the kind", r.body)
	}
	r = a.do(t, "GET", "/v1/config/service-defaults/missing", nil).expect(t, "missing entry", http.StatusNotFound)
	if r.body != `Config entry not found for "service-defaults" / "missing"` {
		t.Errorf("404 body %q", r.body)
	}
	a.do(t, "PUT", "/v1/config?cas=x", `{"Kind":"mesh"}`).expect(t, "bad cas", http.StatusBadRequest)
}

// DELETE answers {} as Consul's, and with ?cas whether it deleted: a CAS
// delete of a missing entry deletes nothing and answers false.
func TestConfigEntryDeleteBodies(t *testing.T) {
	a := start(t)
	if r := a.do(t, "DELETE", "/v1/config/service-defaults/missing", nil).expect(t, "delete", http.StatusOK); strings.TrimSpace(r.body) != "{}" {
		t.Errorf("plain delete body %q, want {}", r.body)
	}
	if r := a.do(t, "DELETE", "/v1/config/service-defaults/missing?cas=0", nil).expect(t, "cas delete", http.StatusOK); strings.TrimSpace(r.body) != "false" {
		t.Errorf("CAS delete of a missing entry: body %q, want false", r.body)
	}
}

// snake_case keys, as HCL-minded users write them, are accepted over HTTP.
func TestConfigEntrySnakeCase(t *testing.T) {
	a := start(t)
	a.do(t, "PUT", "/v1/config", `{"kind":"service-defaults","name":"api","protocol":"grpc","max_inbound_connections":7,
		"upstream_config":{"overrides":[{"name":"db","connect_timeout_ms":250}]}}`).expect(t, "snake_case write", http.StatusOK)
	got, _, err := a.c.ConfigEntries().Get(api.ServiceDefaults, "api", nil)
	must(t, err)
	s := got.(*api.ServiceConfigEntry)
	if s.Protocol != "grpc" || s.MaxInboundConnections != 7 || s.UpstreamConfig.Overrides[0].ConnectTimeoutMs != 250 {
		t.Errorf("stored %+v", s)
	}
}

// A blocking list wakes at a write.
func TestConfigEntryListBlocks(t *testing.T) {
	a := start(t)
	ce := a.c.ConfigEntries()
	_, qm, err := ce.List(api.ServiceDefaults, nil)
	must(t, err)
	done := make(chan []api.ConfigEntry, 1)
	go func() {
		list, _, err := ce.List(api.ServiceDefaults, &api.QueryOptions{WaitIndex: qm.LastIndex, WaitTime: 30e9})
		if err != nil {
			t.Error(err)
		}
		done <- list
	}()
	_, _, err = ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}, nil)
	must(t, err)
	if list := <-done; len(list) != 1 {
		t.Errorf("blocking list woke with %v", list)
	}
}

// Every field of service-resolver and service-router that Trellis acts on
// comes back through the official client as it was written: the client's
// own JSON (durations as strings, cookie TTL in nanoseconds) both ways.
func TestConfigEntryDiscoveryChainRoundTrip(t *testing.T) {
	a := start(t)
	ce := a.c.ConfigEntries()
	_, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "api", Protocol: "http"}, nil)
	must(t, err)
	resolver := &api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "api",
		ConnectTimeout: 1500 * time.Millisecond, RequestTimeout: 20 * time.Second,
		LoadBalancer: &api.LoadBalancer{Policy: "ring_hash",
			RingHashConfig: &api.RingHashConfig{MinimumRingSize: 64, MaximumRingSize: 4096},
			HashPolicies: []api.HashPolicy{
				{Field: "header", FieldValue: "x-user", Terminal: true},
				{Field: "cookie", FieldValue: "sid", CookieConfig: &api.CookieConfig{TTL: 90 * time.Second, Path: "/app"}},
				{Field: "cookie", FieldValue: "s2", CookieConfig: &api.CookieConfig{Session: true}},
				{Field: "query_parameter", FieldValue: "u"},
				{SourceIP: true},
			}},
		Meta: map[string]string{"owner": "team-a"}}
	router := &api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "api", Routes: []api.ServiceRoute{
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/admin",
			Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true, Invert: true}, {Name: "x-v", Regex: "v[0-9]+"}},
			QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "q", Exact: "1"}, {Name: "r", Present: true}},
			Methods:    []string{"GET", "POST"}}},
			Destination: &api.ServiceRouteDestination{Service: "api", PrefixRewrite: "/", RequestTimeout: 3 * time.Second,
				IdleTimeout: time.Minute, NumRetries: 4, RetryOnConnectFailure: true, RetryOnStatusCodes: []uint32{503, 429},
				RetryOn:         []string{"5xx", "reset"},
				RequestHeaders:  &api.HTTPHeaderModifiers{Add: map[string]string{"x-a": "1"}, Set: map[string]string{"x-b": "2"}, Remove: []string{"x-c"}},
				ResponseHeaders: &api.HTTPHeaderModifiers{Remove: []string{"server"}}}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathRegex: "/v[0-9]/.*"}}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/health"}},
			Destination: &api.ServiceRouteDestination{RequestTimeout: 500 * time.Millisecond}},
	}}
	for _, want := range []api.ConfigEntry{resolver, router} {
		ok, _, err := ce.Set(want, nil)
		if err != nil || !ok {
			t.Fatalf("Set %s = %v, %v", want.GetKind(), ok, err)
		}
		got, _, err := ce.Get(want.GetKind(), want.GetName(), nil)
		must(t, err)
		switch g := got.(type) {
		case *api.ServiceResolverConfigEntry:
			g.CreateIndex, g.ModifyIndex = 0, 0
		case *api.ServiceRouterConfigEntry:
			g.CreateIndex, g.ModifyIndex = 0, 0
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %#v\nwant %#v", want.GetKind(), got, want)
		}
	}
	list, _, err := ce.List(api.ServiceRouter, nil)
	must(t, err)
	if len(list) != 1 || len(list[0].(*api.ServiceRouterConfigEntry).Routes) != 3 {
		t.Errorf("List(service-router) = %+v", list)
	}
}
