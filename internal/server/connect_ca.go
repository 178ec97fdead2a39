package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/go-uuid"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/ca"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// The Connect CA. The leader sets it up when it first leads with none
// stored (a new cluster ID, a root from the configured provider), signs
// the leaves agents ask for, rotates the root when an operator's new
// configuration needs one, and prunes roots rotated out once every leaf
// they signed has expired. Every change goes through raft as one
// fsm.ConnectCARequestType entry, check-and-set on the configuration's
// ModifyIndex, so a leader that lost the race changes nothing. The roots,
// private keys included, live in the state store: a new leader reuses
// them as they are.

// ConnectCAOptions configure a server's Connect CA; a nil
// Config.ConnectCA means Connect is disabled.
type ConnectCAOptions struct {
	// Datacenter is this server's, for the SPIFFE IDs it signs.
	Datacenter string
	// Provider and Config are the agent config's connect.ca_provider
	// ("" is "consul") and connect.ca_config: the CA configuration a new
	// cluster starts with. Once the CA is set up, the stored one rules.
	Provider string
	Config   map[string]any
	// Now, when set, replaces time.Now (tests move it to see pruning).
	Now func() time.Time
}

// Errors of the Connect CA, with Consul's texts.
var (
	// ErrConnectNotEnabled: the server runs with connect disabled.
	ErrConnectNotEnabled = errors.New("Connect must be enabled in order to use this endpoint")
	// ErrCANotInitialized: the leader has not set up the CA yet.
	ErrCANotInitialized = errors.New("CA has not finished initializing")
)

// caInitWait bounds how long a CA request waits for a new leader to set
// the CA up, as requests wait for a leader (rpc_hold_timeout): an agent
// that has just started answers instead of failing with
// ErrCANotInitialized.
const caInitWait = 7 * time.Second

// waitCAInitialized waits, at most caInitWait, until a CA configuration
// and an active root are stored.
func (s *Server) waitCAInitialized() error {
	timeout := time.NewTimer(caInitWait)
	defer timeout.Stop()
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		r := s.store.Read()
		_, cfg, err := r.CAConfig(ws)
		var roots []*structs.CARoot
		if err == nil {
			_, roots, err = r.CARoots(ws)
		}
		r.Abort()
		if err != nil {
			return err
		}
		if cfg != nil && activeRoot(roots) != nil {
			return nil
		}
		select {
		case <-s.shutdownCh:
			return ErrCANotInitialized
		default:
		}
		if ws.Watch(timeout.C) {
			return ErrCANotInitialized
		}
	}
}

// WaitConnectCA waits, at most 7 seconds, for the leader to have set the
// CA up, so that a read right after an agent starts finds the roots. It
// returns ErrCANotInitialized when the wait ran out.
func (s *Server) WaitConnectCA() error {
	if !s.ConnectEnabled() {
		return ErrConnectNotEnabled
	}
	return s.waitCAInitialized()
}

// caRetryInterval is how long the leader waits before trying again to
// set up the CA after a failure.
const caRetryInterval = time.Second

// caState is the Server's CA.
type caState struct {
	// setMu serialises configuration changes on this leader; the CAS in
	// raft guards against other leaders.
	setMu sync.Mutex

	mu     sync.Mutex
	signer *caSigner // guarded by mu: the provider of the active root, built on first use
}

// caSigner is a provider loaded with the active root, for one stored
// configuration.
type caSigner struct {
	rootID   string
	cfgIndex uint64
	cfg      *ca.Config
	provider ca.Provider
	root     *structs.CARoot
	td       string
}

// ConnectEnabled reports whether this server runs the Connect CA.
func (s *Server) ConnectEnabled() bool { return s.cfg.ConnectCA != nil }

func (s *Server) caNow() time.Time {
	if o := s.cfg.ConnectCA; o != nil && o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// runConnectCALeader starts the leader's CA duties for the term that ctx
// spans: set the CA up if none is stored, then prune rotated-out roots
// when they are due. It returns a function that waits for them to end
// (after ctx is cancelled). With connect disabled it does nothing.
func (s *Server) runConnectCALeader(ctx context.Context) (wait func()) {
	if !s.ConnectEnabled() {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			err := s.initializeCA()
			if err == nil {
				break
			}
			s.logger.Error("connect: setting up the CA failed", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(caRetryInterval):
			}
		}
		s.pruneCALoop(ctx)
	}()
	return func() { <-done }
}

// initializeCA sets the CA up unless one is stored.
func (s *Server) initializeCA() error {
	s.ca.setMu.Lock()
	defer s.ca.setMu.Unlock()
	r := s.store.Read()
	_, cur, err := r.CAConfig(nil)
	if err == nil && cur == nil {
		var roots []*structs.CARoot
		_, roots, err = r.CARoots(nil)
		if err == nil && activeRoot(roots) != nil {
			err = errors.New("roots stored without a configuration")
		}
	}
	r.Abort()
	if err != nil || cur != nil {
		return err
	}
	opts := s.cfg.ConnectCA
	name := opts.Provider
	if name == "" {
		name = ca.ProviderConsul
	}
	pc, err := ca.ParseConfig(name, opts.Config)
	if err != nil {
		return fmt.Errorf("connect: ca_config: %w", err)
	}
	clusterID, err := uuid.GenerateUUID()
	if err != nil {
		return err
	}
	td := connect.TrustDomain(clusterID)
	p, err := ca.New(name, pc)
	if err != nil {
		return err
	}
	root, err := p.GenerateRoot(td)
	if err != nil {
		return fmt.Errorf("connect: generate root: %w", err)
	}
	cfg := &structs.CAConfiguration{ClusterID: clusterID, Provider: name, Config: pc.Map(), State: p.State()}
	ok, err := s.applyCA(cfg, []*structs.CARoot{rootRow(root, td)}, 0)
	if err != nil {
		return err
	}
	if ok {
		s.logger.Info("connect: CA set up", "trust_domain", td, "provider", name, "root", ca.Fingerprint(root.Cert))
	}
	return nil
}

// applyCA commits a CA change through raft; see fsm.ConnectCARequest.
func (s *Server) applyCA(cfg *structs.CAConfiguration, roots []*structs.CARoot, casIndex uint64) (bool, error) {
	resp, err := s.Apply(fsm.ConnectCARequestType, &fsm.ConnectCARequest{Config: cfg, Roots: roots, CASIndex: casIndex})
	if err != nil {
		return false, err
	}
	ok, _ := resp.(bool)
	return ok, nil
}

// rootRow is the stored form of a new, active root.
func rootRow(r *ca.Root, td string) *structs.CARoot {
	return &structs.CARoot{
		ID:                  ca.Fingerprint(r.Cert),
		Name:                ca.RootName,
		SerialNumber:        r.Cert.SerialNumber.Uint64(),
		SigningKeyID:        ca.HexString(ca.KeyID(r.Cert)),
		ExternalTrustDomain: td,
		NotBefore:           r.Cert.NotBefore.UTC(),
		NotAfter:            r.Cert.NotAfter.UTC(),
		RootCert:            r.CertPEM,
		Active:              true,
		PrivateKeyType:      r.KeyType,
		PrivateKeyBits:      r.KeyBits,
		SigningKey:          r.KeyPEM,
	}
}

func activeRoot(roots []*structs.CARoot) *structs.CARoot {
	for _, r := range roots {
		if r.Active {
			return r
		}
	}
	return nil
}

// signer returns the provider of the active root, built anew when the
// root or the configuration changed.
func (s *Server) signer() (*caSigner, error) {
	r := s.store.Read()
	cfgIdx, cfg, err := r.CAConfig(nil)
	var roots []*structs.CARoot
	if err == nil {
		_, roots, err = r.CARoots(nil)
	}
	r.Abort()
	if err != nil {
		return nil, err
	}
	active := activeRoot(roots)
	if cfg == nil || active == nil {
		return nil, ErrCANotInitialized
	}
	s.ca.mu.Lock()
	defer s.ca.mu.Unlock()
	if sg := s.ca.signer; sg != nil && sg.rootID == active.ID && sg.cfgIndex == cfgIdx {
		return sg, nil
	}
	pc, err := ca.ParseConfig(cfg.Provider, cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("connect: stored CA configuration: %w", err)
	}
	p, err := ca.New(cfg.Provider, pc)
	if err != nil {
		return nil, err
	}
	cert, err := ca.ParseCert(active.RootCert)
	if err != nil {
		return nil, fmt.Errorf("connect: active root %s: %w", active.ID, err)
	}
	if err := p.LoadRoot(&ca.Root{Cert: cert, CertPEM: active.RootCert, KeyPEM: active.SigningKey,
		KeyType: active.PrivateKeyType, KeyBits: active.PrivateKeyBits}); err != nil {
		return nil, err
	}
	sg := &caSigner{rootID: active.ID, cfgIndex: cfgIdx, cfg: pc, provider: p, root: active,
		td: connect.TrustDomain(cfg.ClusterID)}
	s.ca.signer = sg
	return sg, nil
}

// ConnectCASign signs a PEM CSR for service, on the leader. The CSR must
// carry exactly one URI SAN, the service's SPIFFE ID in this cluster's
// trust domain and this datacenter (ca.CheckCSR); otherwise, or when it
// does not parse or its signature is bad, the error is a
// structs.BadRequestError saying why. The leaf's CertPEM is followed by
// the active root's intermediates (the cross-signed root after a
// rotation). Its indexes are the roots' index at signing.
func (s *Server) ConnectCASign(csrPEM, service string) (*structs.IssuedCert, error) {
	if !s.ConnectEnabled() {
		return nil, ErrConnectNotEnabled
	}
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	if service == "" || strings.ContainsAny(service, "/?#") {
		return nil, structs.BadRequestError{Reason: fmt.Sprintf("Service: %q is not a valid service name", service)}
	}
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, structs.BadRequestError{Reason: fmt.Sprintf("CSR: %v", err)}
	}
	if err := s.waitCAInitialized(); err != nil {
		return nil, err
	}
	sg, err := s.signer()
	if err != nil {
		return nil, err
	}
	id := connect.ServiceID{TrustDomain: sg.td, Namespace: connect.DefaultNamespace,
		Datacenter: s.cfg.ConnectCA.Datacenter, Service: service}
	if err := ca.CheckCSR(csr, id); err != nil {
		return nil, structs.BadRequestError{Reason: err.Error()}
	}
	leaf, err := sg.provider.Sign(ca.LeafRequest(csr, id, sg.cfg.LeafCertTTL, s.caNow()))
	if err != nil {
		return nil, err
	}
	certPEM := ca.EncodeCert(leaf)
	for _, ic := range sg.root.IntermediateCerts {
		certPEM += ic
	}
	idx := s.store.MaxIndex("connect-ca-roots")
	return &structs.IssuedCert{
		SerialNumber: ca.HexString(leaf.SerialNumber.Bytes()),
		CertPEM:      certPEM,
		Service:      service,
		ServiceURI:   id.String(),
		ValidAfter:   leaf.NotBefore.UTC(),
		ValidBefore:  leaf.NotAfter.UTC(),
		CreateIndex:  idx,
		ModifyIndex:  idx,
	}, nil
}

// ConnectCAConfiguration returns the stored CA configuration.
func (s *Server) ConnectCAConfiguration() (*structs.CAConfiguration, error) {
	if !s.ConnectEnabled() {
		return nil, ErrConnectNotEnabled
	}
	if err := s.waitCAInitialized(); err != nil {
		return nil, err
	}
	r := s.store.Read()
	defer r.Abort()
	_, cfg, err := r.CAConfig(nil)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, ErrCANotInitialized
	}
	c := *cfg
	return &c, nil
}

// ConnectCASetConfiguration replaces the CA configuration, on the leader.
// A change that needs a new root (another provider, another key type or
// size, a supplied RootCert that is not the active root) rotates: the
// new root, cross-signed by the old one, becomes the active root, and
// the old one stays trusted until the last leaf it signed has expired.
// Any other change (LeafCertTTL, ...) keeps the roots: a configuration
// that gives no PrivateKeyType/PrivateKeyBits keeps the active root's,
// and the stored configuration always holds the active root's, so one
// read back and written again does not rotate. A supplied RootCert is
// checked (ca.suppliedRoot) even when it is the active root. Bad input
// is a structs.BadRequestError naming the field, and changes nothing.
func (s *Server) ConnectCASetConfiguration(req *structs.CAConfiguration) error {
	if !s.ConnectEnabled() {
		return ErrConnectNotEnabled
	}
	if !s.IsLeader() {
		return ErrNotLeader
	}
	if len(req.State) > 0 {
		return structs.BadRequestError{Reason: "State: Provider State is read-only"}
	}
	if err := s.waitCAInitialized(); err != nil {
		return err
	}
	s.ca.setMu.Lock()
	defer s.ca.setMu.Unlock()
	r := s.store.Read()
	_, cur, err := r.CAConfig(nil)
	var roots []*structs.CARoot
	if err == nil {
		_, roots, err = r.CARoots(nil)
	}
	r.Abort()
	if err != nil {
		return err
	}
	active := activeRoot(roots)
	if cur == nil || active == nil {
		return ErrCANotInitialized
	}
	if req.ClusterID != "" && !strings.EqualFold(req.ClusterID, cur.ClusterID) {
		return structs.BadRequestError{Reason: fmt.Sprintf("ClusterID: %q cannot be changed (the cluster's is %q)", req.ClusterID, cur.ClusterID)}
	}
	name := req.Provider
	if name == "" {
		name = cur.Provider
	}
	pc, err := ca.ParseConfig(name, req.Config)
	if err != nil {
		return structs.BadRequestError{Reason: err.Error()}
	}
	oldCfg, err := ca.ParseConfig(cur.Provider, cur.Config)
	if err != nil {
		return fmt.Errorf("connect: stored CA configuration: %w", err)
	}
	td := connect.TrustDomain(cur.ClusterID)
	if name == cur.Provider {
		// A configuration silent about the key keeps the active root's:
		// so is it stored, and a GET → PUT round trip keeps the root.
		pc.InheritKey(active.PrivateKeyType, active.PrivateKeyBits)
	}
	next := &structs.CAConfiguration{ClusterID: cur.ClusterID, Provider: name, Config: pc.Map(),
		State: cur.State, ForceWithoutCrossSigning: req.ForceWithoutCrossSigning}
	sameRoot := pc.RootCert != "" && ca.CertsEqual(pc.RootCert, active.RootCert)
	rotate := name != cur.Provider ||
		(pc.RootCert != "" && !sameRoot) ||
		(pc.RootCert == "" && (pc.PrivateKeyType != active.PrivateKeyType || pc.PrivateKeyBits != active.PrivateKeyBits))
	if !rotate {
		if sameRoot {
			// The active root supplied again: it is kept, but the
			// PrivateKey (and the rest) must still be its own.
			p, err := ca.New(name, pc)
			if err != nil {
				return structs.BadRequestError{Reason: err.Error()}
			}
			if _, err := p.GenerateRoot(td); err != nil {
				if strings.HasPrefix(err.Error(), "Config.") {
					return structs.BadRequestError{Reason: err.Error()}
				}
				return fmt.Errorf("connect: check root: %w", err)
			}
		}
		return s.commitCAConfig(next, nil, cur.ModifyIndex)
	}
	p, err := ca.New(name, pc)
	if err != nil {
		return structs.BadRequestError{Reason: err.Error()}
	}
	newRoot, err := p.GenerateRoot(td)
	if err != nil {
		if strings.HasPrefix(err.Error(), "Config.") {
			return structs.BadRequestError{Reason: err.Error()}
		}
		return fmt.Errorf("connect: generate root: %w", err)
	}
	next.State = p.State()
	sg, err := s.signer()
	if err != nil {
		return err
	}
	row := rootRow(newRoot, td)
	cross, err := sg.provider.CrossSign(newRoot.Cert)
	switch {
	case err == nil:
		row.IntermediateCerts = []string{ca.EncodeCert(cross)}
	case !req.ForceWithoutCrossSigning:
		return structs.BadRequestError{Reason: fmt.Sprintf("the current CA cannot cross-sign the new root (%v); set ForceWithoutCrossSigning to rotate anyway", err)}
	}
	now := s.caNow().UTC()
	out := make([]*structs.CARoot, 0, len(roots)+1)
	for _, old := range roots {
		if old.ID == row.ID {
			continue
		}
		c := *old
		if c.Active {
			c.Active = false
			c.RotatedOutAt = now
			// Its last leaf was signed just now: trusted until that
			// expires (under either TTL), with the clock skew margin.
			c.PruneAfter = now.Add(max(oldCfg.LeafCertTTL, pc.LeafCertTTL) + ca.ClockSkew)
		}
		out = append(out, &c)
	}
	out = append(out, row)
	if err := s.commitCAConfig(next, out, cur.ModifyIndex); err != nil {
		return err
	}
	s.logger.Info("connect: CA root rotated", "old", active.ID, "new", row.ID)
	return nil
}

func (s *Server) commitCAConfig(cfg *structs.CAConfiguration, roots []*structs.CARoot, casIndex uint64) error {
	ok, err := s.applyCA(cfg, roots, casIndex)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("CA configuration changed while this one was being applied; try again")
	}
	return nil
}

// pruneCALoop drops rotated-out roots when they are due, until ctx ends.
func (s *Server) pruneCALoop(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		next, err := s.pruneCARoots(ws)
		if err != nil {
			s.logger.Warn("connect: pruning CA roots failed", "error", err)
			next = s.caNow().Add(caRetryInterval)
		}
		var timer <-chan time.Time
		t := time.NewTimer(max(next.Sub(s.caNow()), 0))
		if !next.IsZero() {
			timer = t.C
		}
		wctx, cancel := context.WithCancel(ctx)
		select {
		case <-ctx.Done():
		case <-ws.WatchCh(wctx):
		case <-timer:
		}
		cancel()
		t.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// pruneCARoots removes the roots whose PruneAfter has passed, and returns
// when the next one is due (zero: none). It adds the roots it read to ws.
func (s *Server) pruneCARoots(ws memdb.WatchSet) (time.Time, error) {
	r := s.store.Read()
	_, cfg, err := r.CAConfig(ws)
	var roots []*structs.CARoot
	if err == nil {
		_, roots, err = r.CARoots(ws)
	}
	r.Abort()
	if err != nil || cfg == nil {
		return time.Time{}, err
	}
	now := s.caNow()
	var keep []*structs.CARoot
	var next time.Time
	pruned := false
	for _, root := range roots {
		if !root.Active && !root.PruneAfter.IsZero() && !now.Before(root.PruneAfter) {
			pruned = true
			continue
		}
		keep = append(keep, root)
		if !root.Active && !root.PruneAfter.IsZero() && (next.IsZero() || root.PruneAfter.Before(next)) {
			next = root.PruneAfter
		}
	}
	if !pruned {
		return next, nil
	}
	if _, err := s.applyCA(nil, keep, cfg.ModifyIndex); err != nil {
		return time.Time{}, err
	}
	return next, nil
}
