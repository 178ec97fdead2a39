package membership

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{NodeName: "n1", Datacenter: "dc1", BindAddr: "127.0.0.1"}
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"empty bind addr", func(c *Config) { c.BindAddr = "" }, ""},
		{"own tags repeated", func(c *Config) { c.NodeID = "x"; c.Tags = map[string]string{"dc": "dc1", "id": "x"} }, ""},
		{"no node name", func(c *Config) { c.NodeName = "" }, "node name is required"},
		{"no datacenter", func(c *Config) { c.Datacenter = "" }, `node "n1": datacenter is required`},
		{"bind addr not IP", func(c *Config) { c.BindAddr = "localhost" }, `bind address "localhost" is not an IP`},
		{"advertise not IP", func(c *Config) { c.AdvertiseAddr = "x" }, `advertise address "x" is not an IP`},
		{"port too big", func(c *Config) { c.BindPort = 70000 }, "bind port 70000 out of range"},
		{"negative reconnect", func(c *Config) { c.ReconnectTimeout = -1 }, "reconnect timeout -1ns is negative"},
		{"bad key", func(c *Config) { c.EncryptKey = make([]byte, 10) }, "encrypt key is 10 bytes"},
		{"negative queue", func(c *Config) { c.SubscriberQueue = -1 }, "subscriber queue -1 is negative"},
		{"dc tag conflict", func(c *Config) { c.Tags = map[string]string{"dc": "dc2"} }, `tag "dc" is "dc2", but the pool sets it to "dc1"`},
		{"id tag conflict", func(c *Config) { c.NodeID = "a"; c.Tags = map[string]string{"id": "b"} }, `tag "id" is "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New(Config{}) = nil error")
	}
}

func TestStatusCodesMatchConsul(t *testing.T) {
	// api.AgentMember.Status documents these codes.
	for _, tt := range []struct {
		s    MemberStatus
		code int
		name string
	}{
		{StatusNone, 0, "none"},
		{StatusAlive, 1, "alive"},
		{StatusLeaving, 2, "leaving"},
		{StatusLeft, 3, "left"},
		{StatusFailed, 4, "failed"},
	} {
		if int(tt.s) != tt.code || tt.s.String() != tt.name {
			t.Errorf("status %v = %d %q, want %d %q", tt.s, int(tt.s), tt.s.String(), tt.code, tt.name)
		}
	}
}

func TestLogWriterLevels(t *testing.T) {
	var got []string
	h := &recordHandler{records: &got}
	w := logWriter{logger: slogNew(h)}
	for _, line := range []string{
		"[DEBUG] memberlist: stream connection\n",
		"[INFO] serf: EventMemberJoin: n1 127.0.0.1\n",
		"[WARN] serf: Shutdown without a Leave\n",
		"[ERR] memberlist: failed to receive\n",
		"no level\n",
	} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"DEBUG memberlist: stream connection",
		"INFO serf: EventMemberJoin: n1 127.0.0.1",
		"WARN serf: Shutdown without a Leave",
		"ERROR memberlist: failed to receive",
		"INFO no level",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
