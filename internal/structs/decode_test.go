package structs

import (
	"strings"
	"testing"
)

func TestDecodeJSONKeys(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"camel", `{"Name":"web","EnableTagOverride":true,"Meta":{"my_key":"v","Up":"x"},"Check":{"DeregisterCriticalServiceAfter":"90m","TTL":"10s"}}`},
		{"snake", `{"name":"web","enable_tag_override":true,"meta":{"my_key":"v","Up":"x"},"check":{"deregister_critical_service_after":"90m","ttl":"10s"}}`},
		{"lower", `{"name":"web","enabletagoverride":true,"meta":{"my_key":"v","Up":"x"},"check":{"deregistercriticalserviceafter":"90m","ttl":"10s"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d ServiceDefinition
			if err := DecodeJSON(strings.NewReader(tt.body), &d); err != nil {
				t.Fatal(err)
			}
			if d.Name != "web" || !d.EnableTagOverride {
				t.Errorf("got name %q override %v", d.Name, d.EnableTagOverride)
			}
			if d.Meta["my_key"] != "v" || d.Meta["Up"] != "x" {
				t.Errorf("meta keys must be kept as written: got %v", d.Meta)
			}
			if d.Check == nil || d.Check.DeregisterCriticalServiceAfter.String() != "1h30m0s" || d.Check.TTL.String() != "10s" {
				t.Errorf("check = %+v", d.Check)
			}
		})
	}
}

func TestDecodeJSONErrors(t *testing.T) {
	for _, body := range []string{`{"Name":`, `{"Port":"x"}`, `{"check":{"ttl":"ten"}}`, `[1,2`} {
		var d ServiceDefinition
		if err := DecodeJSON(strings.NewReader(body), &d); err == nil || !strings.Contains(err.Error(), "Request decode failed") {
			t.Errorf("DecodeJSON(%s) error = %v, want a decode failure", body, err)
		}
	}
}
