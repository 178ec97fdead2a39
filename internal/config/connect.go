package config

import (
	"fmt"
	"strings"

	"github.com/trellis-mesh/trellis/internal/connect/ca"
)

// connectConfig is the "connect" block.
type connectConfig struct {
	// Enabled turns the service mesh on: on servers, the built-in CA.
	// Default true (Consul's default is false; Trellis is a mesh).
	Enabled *bool `cfg:"enabled"`
	// CAProvider names the CA provider a new cluster starts with:
	// "consul" (the built-in CA, default).
	CAProvider *string `cfg:"ca_provider"`
	// CAConfig is the provider's configuration for a new cluster, keys
	// as the CA configuration API's (leaf_cert_ttl = "72h",
	// private_key_type = "rsa", ...). Once the CA is set up, changes go
	// through `trellis connect ca set-config`.
	CAConfig map[string]string `cfg:"ca_config"`

	EnableMeshGatewayWANFederation ignored `cfg:"enable_mesh_gateway_wan_federation"`
	EnableServerlessPlugin         ignored `cfg:"enable_serverless_plugin"`
}

// ConnectConfig is the connect block, validated.
type ConnectConfig struct {
	Enabled    bool           // default true
	CAProvider string         // default "consul"
	CAConfig   map[string]any // checked by the provider's rules; nil when none was given
}

// buildConnect fills in and checks the connect block: an unknown
// provider or a bad ca_config value fails the load naming the key.
func buildConnect(rc *RuntimeConfig, fc *fileConfig) error {
	c := fc.Connect
	rc.Connect = ConnectConfig{
		Enabled:    boolOr(c.Enabled, true),
		CAProvider: strings.ToLower(strings.TrimSpace(strOr(c.CAProvider, ca.ProviderConsul))),
	}
	if !ca.Known(rc.Connect.CAProvider) {
		return fmt.Errorf("config: connect.ca_provider: unknown CA provider %q (known: %s)",
			rc.Connect.CAProvider, strings.Join(ca.Providers(), ", "))
	}
	if len(c.CAConfig) > 0 {
		rc.Connect.CAConfig = make(map[string]any, len(c.CAConfig))
		for k, v := range c.CAConfig {
			rc.Connect.CAConfig[k] = v
		}
	}
	if _, err := ca.ParseConfig(rc.Connect.CAProvider, rc.Connect.CAConfig); err != nil {
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "Config: "), "Config.")
		return fmt.Errorf("config: connect.ca_config: %s", msg)
	}
	return nil
}
