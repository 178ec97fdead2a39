package api_test

import "testing"

// The exact texts of a refused session TTL, which clients match on.
// Regression: an unparseable TTL answered "Invalid Session TTL 'soon': ..."
// rather than Consul's "Session TTL 'soon' invalid: ...".
func TestSessionTTLErrorText(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unparseable", `{"TTL":"soon"}`, `Session TTL 'soon' invalid: time: invalid duration "soon"`},
		{"too short", `{"TTL":"5s"}`, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"},
		{"too long", `{"TTL":"25h"}`, "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, "PUT", "/v1/session/create", tc.body).expect(t, tc.name, 500)
			if r.body != tc.want {
				t.Errorf("body = %q, want %q", r.body, tc.want)
			}
		})
	}
}
