package structs

import "time"

// CARoot is a trusted Connect CA root: an element of IndexedCARoots, the
// body of /v1/connect/ca/roots (consul/api's CARoot). The active root
// signs every new leaf; roots rotated out stay trusted until the leaves
// they signed have expired.
type CARoot struct {
	// ID is the SHA-1 fingerprint of the certificate's DER, as
	// colon-separated hex.
	ID string
	// Name is a human-friendly name, opaque to Trellis.
	Name string
	// SerialNumber is the root certificate's serial.
	SerialNumber uint64
	// SigningKeyID is the certificate's subject key ID, as
	// colon-separated hex: the authority key ID of the leaves it signs.
	SigningKeyID string
	// ExternalTrustDomain is the trust domain the root was created for;
	// it changes only with a cluster ID change.
	ExternalTrustDomain string
	NotBefore           time.Time
	NotAfter            time.Time
	// RootCert is the PEM certificate.
	RootCert string
	// IntermediateCerts are PEM certificates to send along with a leaf
	// of this root. After a rotation, the new root's list holds the new
	// root cross-signed by the old one, so a peer that trusts only the
	// old root still verifies new leaves.
	IntermediateCerts []string
	// Active is true for exactly one root: the one that signs.
	Active         bool
	PrivateKeyType string // "ec" or "rsa"
	PrivateKeyBits int
	// RotatedOutAt is when the root stopped being the active one; the
	// zero time while it is.
	RotatedOutAt time.Time

	// SigningKey is the PEM private key of a root the built-in provider
	// holds. It is kept in the state store (and so in raft and in
	// snapshots) but never written as JSON.
	SigningKey string `json:"-" codec:"SigningKey"`
	// PruneAfter is when the leader may drop a rotated-out root: when
	// the last leaf it signed has expired. Not part of the JSON shape.
	PruneAfter time.Time `json:"-" codec:"PruneAfter"`

	CreateIndex uint64
	ModifyIndex uint64
}

// IndexedCARoots is the body of GET /v1/connect/ca/roots and
// /v1/agent/connect/ca/roots (consul/api's CARootList).
type IndexedCARoots struct {
	// ActiveRootID is the ID of the root that signs new leaves.
	ActiveRootID string
	// TrustDomain is the cluster's SPIFFE trust domain,
	// "<cluster-id>.consul".
	TrustDomain string
	Roots       []*CARoot
}

// CAConfiguration is the Connect CA configuration: the body of GET and
// PUT /v1/connect/ca/configuration (consul/api's CAConfig).
type CAConfiguration struct {
	// ClusterID is the UUID chosen when the CA was first set up; the
	// trust domain derives from it. Read-only.
	ClusterID string `json:",omitempty"`
	// Provider names the CA provider: "consul" (built in).
	Provider string
	// Config is the provider's configuration; see package
	// internal/connect/ca for the keys.
	Config map[string]any
	// State is what the provider kept for itself. Read-only: a PUT that
	// sets it is refused.
	State map[string]string
	// ForceWithoutCrossSigning lets a rotation go ahead when the old
	// provider cannot cross-sign the new root.
	ForceWithoutCrossSigning bool

	CreateIndex uint64
	ModifyIndex uint64
}

// IssuedCert is a leaf certificate a Connect CA issued: the body of
// /v1/agent/connect/ca/leaf/:service (consul/api's LeafCert) and of the
// internal sign endpoint (without the private key there).
type IssuedCert struct {
	// SerialNumber is the certificate's serial, as colon-separated hex.
	SerialNumber string
	// CertPEM is the leaf, followed by the intermediates a peer needs
	// to chain it to any trusted root.
	CertPEM string `json:",omitempty"`
	// PrivateKeyPEM is the leaf's key; only the agent that made the key
	// has it.
	PrivateKeyPEM string `json:",omitempty"`
	Service       string
	ServiceURI    string
	ValidAfter    time.Time
	ValidBefore   time.Time

	CreateIndex uint64
	ModifyIndex uint64
}

// CASignRequest is the body of the internal sign endpoint: a PEM CSR
// for a service of this datacenter.
type CASignRequest struct {
	Service string
	CSR     string
}
