package structs

import (
	"encoding/json"
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

func TestDurationJSONRoundTrip(t *testing.T) {
	in := HealthCheckDefinition{Interval: Duration(10e9), Timeout: Duration(1500e6)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"Interval":"10s","Timeout":"1.5s","DeregisterCriticalServiceAfter":"0s"`; !strings.Contains(string(b), want) {
		t.Errorf("encoded %s, want it to contain %s", b, want)
	}
	var out HealthCheckDefinition
	if err := json.Unmarshal(b, &out); err != nil || out.Interval != in.Interval || out.Timeout != in.Timeout {
		t.Errorf("round trip = %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"Interval": 2000000000}`), &out); err != nil || out.Interval != Duration(2e9) {
		t.Errorf("numeric nanoseconds = %v, %v", out.Interval, err)
	}
}
