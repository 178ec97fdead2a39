package api_test

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	a := start(t)
	registerExternal(t, a.c, "h-1", "192.0.2.1", "cache-1", "cache", []string{"blue"}, map[string]string{"zone": "a"}, api.HealthPassing)
	registerExternal(t, a.c, "h-2", "192.0.2.2", "cache-2", "cache", []string{"green"}, map[string]string{"zone": "b"}, api.HealthWarning)
	registerExternal(t, a.c, "h-3", "192.0.2.3", "cache-3", "cache", []string{"blue"}, map[string]string{"zone": "b"}, api.HealthCritical)
	health := a.c.Health()

	t.Run("node", func(t *testing.T) {
		checks, meta, err := health.Node("h-2", nil)
		must(t, err)
		if len(checks) != 1 || checks[0].CheckID != "cache-2-check" || checks[0].Status != api.HealthWarning || checks[0].ServiceName != "cache" {
			t.Errorf("Node(h-2) = %+v", checks)
		}
		if meta.LastIndex == 0 {
			t.Errorf("LastIndex = 0")
		}
		checks, _, err = health.Node("nope", nil)
		must(t, err)
		if len(checks) != 0 {
			t.Errorf("Node(nope) = %+v, want none", checks)
		}
	})

	t.Run("checks", func(t *testing.T) {
		checks, _, err := health.Checks("cache", nil)
		must(t, err)
		if got := checkIDs(checks); len(got) != 3 {
			t.Errorf("Checks(cache) = %v, want 3", got)
		}
		checks, _, err = health.Checks("cache", &api.QueryOptions{Filter: `Status == "critical"`})
		must(t, err)
		if got := checkIDs(checks); !reflect.DeepEqual(got, []string{"cache-3-check"}) {
			t.Errorf("Checks(cache, critical) = %v", got)
		}
	})

	t.Run("service", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			tags    []string
			passing bool
			q       *api.QueryOptions
			want    []string
		}{
			{"all", nil, false, nil, []string{"cache-1", "cache-2", "cache-3"}},
			{"passing", nil, true, nil, []string{"cache-1"}},
			{"tag", []string{"blue"}, false, nil, []string{"cache-1", "cache-3"}},
			{"tag passing", []string{"blue"}, true, nil, []string{"cache-1"}},
			{"node-meta", nil, false, &api.QueryOptions{NodeMeta: map[string]string{"zone": "b"}}, []string{"cache-2", "cache-3"}},
			{"filter", nil, false, &api.QueryOptions{Filter: `Node.Node == "h-2"`}, []string{"cache-2"}},
			{"filter nested", nil, false, &api.QueryOptions{Filter: `Service.Meta.team == "core" and Node.Meta.zone == "b" and "blue" in Service.Tags`}, []string{"cache-3"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				entries, _, err := health.ServiceMultipleTags("cache", tc.tags, tc.passing, tc.q)
				must(t, err)
				var ids []string
				for _, e := range entries {
					ids = append(ids, e.Service.ID)
					// Each entry carries the node's checks too.
					if !hasCheck(e.Checks, e.Service.ID+"-check") {
						t.Errorf("%s: checks %v lack the service check", e.Service.ID, checkIDs(e.Checks))
					}
				}
				sort.Strings(ids)
				if !reflect.DeepEqual(ids, tc.want) {
					t.Errorf("got %v, want %v", ids, tc.want)
				}
			})
		}
		// The agent's own node-level serfHealth check appears in entries of
		// its services.
		must(t, a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "local"}))
		entries, _, err := health.Service("local", "", false, nil)
		must(t, err)
		if len(entries) != 1 || !hasCheck(entries[0].Checks, "serfHealth") {
			t.Errorf("health/service/local = %+v, want one entry with serfHealth", entries)
		}
	})

	t.Run("state", func(t *testing.T) {
		for state, want := range map[string][]string{
			api.HealthPassing:  {"cache-1-check", "serfHealth"},
			api.HealthWarning:  {"cache-2-check"},
			api.HealthCritical: {"cache-3-check"},
			api.HealthAny:      {"cache-1-check", "cache-2-check", "cache-3-check", "serfHealth"},
		} {
			checks, _, err := health.State(state, nil)
			must(t, err)
			got := checkIDs(checks)
			sort.Strings(got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("State(%s) = %v, want %v", state, got, want)
			}
		}
		// The client refuses a bad state itself; the server must too.
		r := a.do(t, "GET", "/v1/health/state/bogus", nil).expect(t, "invalid state", 400)
		if !strings.Contains(r.body, "bogus") {
			t.Errorf("400 body %q does not name the state", r.body)
		}
		a.do(t, "GET", "/v1/health/state/", nil).expect(t, "empty state", 400)
	})
}
