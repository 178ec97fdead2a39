package intention

import (
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/configentry"
)

func entry(t *testing.T, body string) *configentry.ServiceIntentionsConfigEntry {
	t.Helper()
	e, err := configentry.DecodeJSON([]byte(body))
	if err != nil {
		t.Fatalf("DecodeJSON(%s): %v", body, err)
	}
	return e.(*configentry.ServiceIntentionsConfigEntry)
}

// Precedence: exact names before the wildcard, the destination counting
// more than the source; the first match decides and the default applies
// when none does.
func TestPrecedence(t *testing.T) {
	set := NewSet([]*configentry.ServiceIntentionsConfigEntry{
		entry(t, `{"Kind":"service-intentions","Name":"*","Sources":[{"Name":"*","Action":"deny"},{"Name":"web","Action":"allow"}]}`),
		entry(t, `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"*","Action":"allow"},{"Name":"web","Action":"deny"}]}`),
		entry(t, `{"Kind":"service-intentions","Name":"cache","Sources":[{"Name":"api","Action":"allow"}]}`),
	})
	for _, tc := range []struct {
		name, src, dst string
		defaultAllow   bool
		allowed        bool
		rule           string // "" when the default decided
	}{
		{"exact beats wildcard source", "web", "db", true, false, "web => db (deny)"},
		{"wildcard source on exact destination", "api", "db", false, true, "* => db (allow)"},
		{"exact destination with wildcard source beats exact source on wildcard destination", "web", "db", true, false, "web => db (deny)"},
		{"exact source on wildcard destination", "web", "cache", false, true, "web => * (allow)"},
		{"exact pair on other destination", "api", "cache", false, true, "api => cache (allow)"},
		{"wildcard pair last", "api", "other", true, false, "* => * (deny)"},
		{"destination entry beats wildcard source-only", "web", "other", false, true, "web => * (allow)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := set.L4(tc.src, tc.dst, tc.defaultAllow)
			if d.Allowed != tc.allowed {
				t.Errorf("L4(%s → %s).Allowed = %v, want %v", tc.src, tc.dst, d.Allowed, tc.allowed)
			}
			got := ""
			if d.Matched {
				got = d.Rule.String()
			}
			if got != tc.rule {
				t.Errorf("matched %q, want %q", got, tc.rule)
			}
		})
	}
	// The rules' order is the evaluation order.
	var order []string
	for _, r := range set.Rules() {
		order = append(order, r.String())
	}
	want := []string{"api => cache (allow)", "web => db (deny)", "* => db (allow)", "web => * (allow)", "* => * (deny)"}
	if len(order) != len(want) {
		t.Fatalf("rules %q, want %q", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("rules %q, want %q", order, want)
		}
	}
}

func TestDefault(t *testing.T) {
	set := NewSet(nil)
	if d := set.L4("a", "b", true); !d.Allowed || d.Matched {
		t.Errorf("no intentions, default allow: %+v", d)
	}
	if d := set.L4("a", "b", false); d.Allowed || d.Matched {
		t.Errorf("no intentions, default deny: %+v", d)
	}
}

// Every L7 match kind, with Invert, decides a request; a request no
// permission matches gets the default; an L7 intention denies at L4.
func TestHTTP(t *testing.T) {
	set := NewSet([]*configentry.ServiceIntentionsConfigEntry{entry(t, `{"Kind":"service-intentions","Name":"db","Sources":[
		{"Name":"web","Permissions":[
			{"Action":"deny","HTTP":{"PathExact":"/admin"}},
			{"Action":"allow","HTTP":{"PathPrefix":"/v1/","Methods":["GET","HEAD"]}},
			{"Action":"allow","HTTP":{"PathRegex":"/items/[0-9]+"}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-present","Present":true}]}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-exact","Exact":"yes"}]}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-prefix","Prefix":"pre"}]}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-suffix","Suffix":"fix"}]}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-contains","Contains":"mid"}]}},
			{"Action":"allow","HTTP":{"Header":[{"Name":"x-regex","Regex":"v[0-9]"}]}},
			{"Action":"allow","HTTP":{"PathExact":"/inv","Header":[{"Name":"x-block","Present":true,"Invert":true}]}},
			{"Action":"allow","HTTP":{"PathExact":"/case","Header":[{"Name":"x-case","Exact":"ABC","IgnoreCase":true}]}},
			{"Action":"allow","HTTP":{"PathExact":"/notexact","Header":[{"Name":"x-env","Exact":"prod","Invert":true}]}}
		]}]}`)})
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	for _, tc := range []struct {
		name         string
		req          Request
		defaultAllow bool
		want         bool
	}{
		{"path exact deny", Request{Method: "GET", Path: "/admin"}, true, false},
		{"path exact is exact", Request{Method: "POST", Path: "/admin/x"}, false, false},
		{"prefix and method", Request{Method: "GET", Path: "/v1/things"}, false, true},
		{"prefix wrong method", Request{Method: "POST", Path: "/v1/things"}, false, false},
		{"prefix wrong method, default allow", Request{Method: "POST", Path: "/v1/things"}, true, true},
		{"regex full match", Request{Method: "PUT", Path: "/items/42"}, false, true},
		{"regex is anchored", Request{Method: "PUT", Path: "/items/42/x"}, false, false},
		{"header present", Request{Method: "GET", Path: "/", Header: h("X-Present", "")}, false, true},
		{"header exact", Request{Method: "GET", Path: "/", Header: h("x-exact", "yes")}, false, true},
		{"header exact mismatch", Request{Method: "GET", Path: "/", Header: h("x-exact", "yess")}, false, false},
		{"header prefix", Request{Method: "GET", Path: "/", Header: h("x-prefix", "prefer")}, false, true},
		{"header suffix", Request{Method: "GET", Path: "/", Header: h("x-suffix", "suffix")}, false, true},
		{"header contains", Request{Method: "GET", Path: "/", Header: h("x-contains", "amidst")}, false, true},
		{"header regex", Request{Method: "GET", Path: "/", Header: h("x-regex", "v2")}, false, true},
		{"header regex anchored", Request{Method: "GET", Path: "/", Header: h("x-regex", "v22")}, false, false},
		{"inverted present, header absent", Request{Method: "GET", Path: "/inv"}, false, true},
		{"inverted present, header there", Request{Method: "GET", Path: "/inv", Header: h("x-block", "1")}, false, false},
		{"ignore case", Request{Method: "GET", Path: "/case", Header: h("x-case", "abc")}, false, true},
		{"inverted exact, other value", Request{Method: "GET", Path: "/notexact", Header: h("x-env", "dev")}, false, true},
		{"inverted exact, same value", Request{Method: "GET", Path: "/notexact", Header: h("x-env", "prod")}, false, false},
		{"inverted exact, header absent", Request{Method: "GET", Path: "/notexact"}, false, false},
		{"nothing matches", Request{Method: "GET", Path: "/"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := set.HTTP("web", "db", tc.req, tc.defaultAllow); d.Allowed != tc.want {
				t.Errorf("HTTP(%+v) = %+v, want allowed %v", tc.req, d, tc.want)
			}
		})
	}
	if d := set.L4("web", "db", true); d.Allowed || !d.Matched || !d.Rule.L7() || d.Rule.String() != "web => db (12 permissions)" {
		t.Errorf("L4 on an L7 intention = %+v (%s), want a matched denial", d, d.Rule)
	}
	// An L4 intention decides requests too.
	set2 := NewSet([]*configentry.ServiceIntentionsConfigEntry{entry(t, `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"deny"}]}`)})
	if d := set2.HTTP("web", "db", Request{Method: "GET", Path: "/"}, true); d.Allowed {
		t.Errorf("L4 deny let a request through: %+v", d)
	}
}
