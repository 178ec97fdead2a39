// Package ca is the Connect certificate authority: the Provider
// interface a CA back end implements, the built-in provider ("consul"),
// and the x509 rules every provider shares: the CA configuration keys,
// the checks a CSR must pass, and the shape of root and leaf certificates.
//
// The server (internal/server/connect_ca.go) decides when to generate,
// rotate and prune roots and stores them through raft; a provider only
// makes and uses keys. An external CA (Vault, files) is a new Provider
// and an entry in providers: nothing else changes.
//
// Example, signing a leaf with a fresh built-in root:
//
//	cfg, _ := ca.ParseConfig("consul", map[string]any{"LeafCertTTL": "24h"})
//	p, _ := ca.New("consul", cfg)
//	root, _ := p.GenerateRoot(connect.TrustDomain(clusterID))
//	_ = p.LoadRoot(root)
//	id := connect.ServiceID{TrustDomain: ..., Datacenter: "dc1", Service: "web"}
//	csr, _ := x509.ParseCertificateRequest(der)
//	if err := ca.CheckCSR(csr, id); err == nil {
//		leaf, _ := p.Sign(ca.LeafRequest(csr, id, cfg.LeafCertTTL, time.Now()))
//	}
package ca

import (
	"crypto/x509"
	"fmt"
	"sort"
)

// Root is a CA root certificate and, for a provider that keeps its keys
// in Trellis (the built-in one), its private key.
type Root struct {
	Cert    *x509.Certificate
	CertPEM string
	// KeyPEM is the private key, PEM; empty for a provider that keeps
	// its key elsewhere.
	KeyPEM string
	// KeyType and KeyBits describe the key: "ec" or "rsa", and its size.
	KeyType string
	KeyBits int
}

// Provider is a CA back end. A provider is built for one configuration
// (New); the server makes a new one when the configuration or the active
// root changes. Its methods may be called concurrently once LoadRoot has
// returned.
type Provider interface {
	// GenerateRoot returns a new root for trustDomain: the one the
	// configuration supplies, or a fresh one. It does not make it the
	// signing root (LoadRoot does).
	GenerateRoot(trustDomain string) (*Root, error)
	// LoadRoot makes root, one this provider generated (now or in an
	// earlier life, as stored), the one it signs with.
	LoadRoot(root *Root) error
	// Sign issues a leaf certificate for a checked CSR (see CheckCSR).
	Sign(req *LeafTemplate) (*x509.Certificate, error)
	// CrossSign signs another root's subject and public key with the
	// signing root, so that holders of this root trust the other's
	// leaves (rotation). A provider that cannot returns
	// ErrCrossSignUnsupported.
	CrossSign(other *x509.Certificate) (*x509.Certificate, error)
	// State is what the provider needs kept across restarts and leader
	// changes, besides the roots; the built-in provider needs nothing.
	State() map[string]string
}

// ErrCrossSignUnsupported is CrossSign's error for a provider that
// cannot cross-sign.
var ErrCrossSignUnsupported = fmt.Errorf("ca: this provider cannot cross-sign another root")

// providers are the known providers, by the name a CAConfiguration gives.
var providers = map[string]func(*Config) (Provider, error){
	ProviderConsul: newBuiltin,
}

// Providers lists the known provider names, sorted.
func Providers() []string {
	out := make([]string, 0, len(providers))
	for n := range providers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Known reports whether name is a provider.
func Known(name string) bool {
	_, ok := providers[name]
	return ok
}

// New builds provider name for cfg, from ParseConfig.
func New(name string, cfg *Config) (Provider, error) {
	f, ok := providers[name]
	if !ok {
		return nil, fmt.Errorf("ca: unknown provider %q", name)
	}
	return f(cfg)
}
