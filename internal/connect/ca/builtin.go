package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// builtin is the "consul" provider: roots and their keys live in the
// state store (CARoot.SigningKey), and the active root signs leaves
// itself.
type builtin struct {
	cfg *Config
	now func() time.Time

	// Set by LoadRoot, then read-only.
	root *x509.Certificate
	key  crypto.Signer
}

func newBuiltin(cfg *Config) (Provider, error) {
	if cfg == nil {
		return nil, errors.New("ca: consul provider: no configuration")
	}
	return &builtin{cfg: cfg, now: time.Now}, nil
}

// GenerateRoot implements Provider: the configured PrivateKey and
// RootCert when given (checked by suppliedRoot), else
// a new self-signed root with a key of PrivateKeyType and PrivateKeyBits,
// valid for RootCertTTL.
func (b *builtin) GenerateRoot(trustDomain string) (*Root, error) {
	if b.cfg.RootCert != "" {
		return suppliedRoot(b.cfg, b.now())
	}
	key, err := GenerateKey(b.cfg.PrivateKeyType, b.cfg.PrivateKeyBits)
	if err != nil {
		return nil, err
	}
	tmpl, err := rootCert(trustDomain, b.now(), b.cfg.RootCertTTL)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Root{Cert: cert, CertPEM: EncodeCert(cert), KeyPEM: keyPEM,
		KeyType: b.cfg.PrivateKeyType, KeyBits: b.cfg.PrivateKeyBits}, nil
}

// suppliedRoot checks and returns the root an operator supplied in cfg:
// a CA certificate (basic constraints CA:TRUE, and keyCertSign when it
// states a key usage), valid now and for at least LeafCertTTL more (a
// leaf never outlives its root, so a root closer to its end would sign
// leaves cut short), of PrivateKey's key, of the PrivateKeyType and
// PrivateKeyBits of cfg (ParseConfig sets them from RootCert). Its
// errors name the config key at fault.
func suppliedRoot(cfg *Config, now time.Time) (*Root, error) {
	cert, err := ParseCert(cfg.RootCert)
	if err != nil {
		return nil, fmt.Errorf("Config.RootCert: %v", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("Config.RootCert: not a CA certificate (basic constraints CA:TRUE required)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("Config.RootCert: its key usage does not allow signing certificates (keyCertSign required)")
	}
	switch {
	case now.Before(cert.NotBefore):
		return nil, fmt.Errorf("Config.RootCert: not valid yet: valid from %s (now %s)",
			cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case !now.Before(cert.NotAfter):
		return nil, fmt.Errorf("Config.RootCert: expired at %s (now %s)",
			cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case cert.NotAfter.Sub(now) < cfg.LeafCertTTL:
		return nil, fmt.Errorf("Config.RootCert: expires at %s, less than LeafCertTTL (%s) from now: it must be valid for at least LeafCertTTL more",
			cert.NotAfter.UTC().Format(time.RFC3339), FormatDuration(cfg.LeafCertTTL))
	}
	key, err := ParseKey(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("Config.PrivateKey: %v", err)
	}
	if !SameKey(key, cert.PublicKey) {
		return nil, errors.New("Config.PrivateKey: does not match the public key of RootCert")
	}
	typ, bits, err := KeyInfo(cert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("Config.RootCert: %v", err)
	}
	if typ != cfg.PrivateKeyType {
		return nil, fmt.Errorf("Config.PrivateKeyType: %q contradicts RootCert, whose key is %s", cfg.PrivateKeyType, typ)
	}
	if bits != cfg.PrivateKeyBits {
		return nil, fmt.Errorf("Config.PrivateKeyBits: %d contradicts RootCert, whose key has %d bits", cfg.PrivateKeyBits, bits)
	}
	return &Root{Cert: cert, CertPEM: EncodeCert(cert), KeyPEM: cfg.PrivateKey, KeyType: typ, KeyBits: bits}, nil
}

// LoadRoot implements Provider.
func (b *builtin) LoadRoot(r *Root) error {
	if r == nil || r.Cert == nil || r.KeyPEM == "" {
		return errors.New("ca: consul provider: root without certificate or key")
	}
	key, err := ParseKey(r.KeyPEM)
	if err != nil {
		return fmt.Errorf("ca: consul provider: root key: %w", err)
	}
	if !SameKey(key, r.Cert.PublicKey) {
		return errors.New("ca: consul provider: root key does not match its certificate")
	}
	b.root, b.key = r.Cert, key
	return nil
}

// Sign implements Provider.
func (b *builtin) Sign(t *LeafTemplate) (*x509.Certificate, error) {
	if b.key == nil {
		return nil, errors.New("ca: consul provider: no root loaded")
	}
	if t.NotAfter.After(b.root.NotAfter) {
		// A leaf never outlives the root that vouches for it.
		t.NotAfter = b.root.NotAfter
	}
	if !t.NotAfter.After(t.NotBefore) {
		return nil, fmt.Errorf("ca: sign leaf for %s: the signing root is valid until %s, before the leaf's start %s",
			t.ID, b.root.NotAfter.UTC().Format(time.RFC3339), t.NotBefore.UTC().Format(time.RFC3339))
	}
	tmpl, err := leafCert(t)
	if err != nil {
		return nil, err
	}
	// The leaf names its root's key (the root's SubjectKeyId, or the
	// key ID computed for a root without one), so that agents see
	// which root signed it.
	tmpl.AuthorityKeyId = KeyID(b.root)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.root, t.PublicKey, b.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign leaf for %s: %w", t.ID, err)
	}
	return x509.ParseCertificate(der)
}

// CrossSign implements Provider: other's subject, key ID, public key and
// URI, issued by the signing root, valid for as long as both roots are.
func (b *builtin) CrossSign(other *x509.Certificate) (*x509.Certificate, error) {
	if b.key == nil {
		return nil, errors.New("ca: consul provider: no root loaded")
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               other.Subject,
		SubjectKeyId:          KeyID(other),
		AuthorityKeyId:        KeyID(b.root),
		URIs:                  other.URIs,
		NotBefore:             other.NotBefore,
		NotAfter:              other.NotAfter,
		KeyUsage:              other.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if tmpl.NotAfter.After(b.root.NotAfter) {
		tmpl.NotAfter = b.root.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.root, other.PublicKey, b.key)
	if err != nil {
		return nil, fmt.Errorf("ca: cross-sign: %w", err)
	}
	return x509.ParseCertificate(der)
}

// State implements Provider: the built-in provider keeps everything in
// its roots.
func (b *builtin) State() map[string]string { return nil }
