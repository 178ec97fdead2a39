package connect

import "testing"

func TestServiceIDRoundTrip(t *testing.T) {
	id := ServiceID{TrustDomain: "11111111-2222-3333-4444-555555555555.consul", Datacenter: "dc1", Service: "web"}
	const want = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
	if got := id.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	back, err := ParseServiceID(want)
	if err != nil {
		t.Fatal(err)
	}
	id.Namespace = DefaultNamespace
	if back != id {
		t.Fatalf("ParseServiceID = %+v, want %+v", back, id)
	}
}

func TestParseServiceIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"https://td.consul/ns/default/dc/dc1/svc/web",
		"spiffe:///ns/default/dc/dc1/svc/web",
		"spiffe://td.consul/agent/client/dc/dc1/id/abc",
		"spiffe://td.consul/ns/default/dc/dc1/svc/",
		"spiffe://td.consul/ns/default/dc/dc1/svc/web/extra",
		"spiffe://td.consul/ns/default/dc/dc1/svc/web?x=1",
		"spiffe://td.consul:8443/ns/default/dc/dc1/svc/web",
		"spiffe://td.consul/ns/default/dc/dc1/xyz/web",
	} {
		if id, err := ParseServiceID(s); err == nil {
			t.Errorf("ParseServiceID(%q) = %+v, want an error", s, id)
		}
	}
}
