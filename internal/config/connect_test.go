package config

import (
	"strings"
	"testing"
)

func TestLoadConnect(t *testing.T) {
	rc := mustLoad(t)
	check(t, "default connect", rc.Connect, ConnectConfig{Enabled: true, CAProvider: "consul"})
	check(t, "dev connect", mustLoad(t, "-dev").Connect.Enabled, true)

	dir := t.TempDir()
	p := writeFile(t, dir, "c.hcl", `connect {
  enabled = true
  ca_provider = "consul"
  ca_config {
    leaf_cert_ttl = "24h"
    private_key_type = "rsa"
    private_key_bits = 4096
  }
}`)
	rc = mustLoad(t, "-config-file", p)
	check(t, "ca_config", rc.Connect.CAConfig, map[string]any{
		"leaf_cert_ttl": "24h", "private_key_type": "rsa", "private_key_bits": "4096"})
	check(t, "disabled", mustLoad(t, "-hcl", "connect { enabled = false }").Connect.Enabled, false)

	for _, tc := range []struct{ hcl, want string }{
		{`connect { ca_provider = "vault" }`, `connect.ca_provider: unknown CA provider "vault"`},
		{`connect { ca_config { leaf_cert_ttl = "10m" } }`, "connect.ca_config: LeafCertTTL: 10m is below the minimum of 1h"},
		{`connect { ca_config { private_key_type = "dsa" } }`, "connect.ca_config: PrivateKeyType"},
		{`connect { ca_config { leaf_ttl = "1h" } }`, `connect.ca_config: unknown key "leaf_ttl"`},
	} {
		_, err := Load([]string{"-hcl", tc.hcl})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v, want an error containing %q", tc.hcl, err, tc.want)
		}
	}
}
