package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/connect/ca"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// The agent's side of the Connect CA: it keeps the roots fresh (from its
// own store on a server, by blocking queries to the servers on a client
// agent) and, per service asked for, a leaf whose key it made itself and
// whose CSR the leader signed. A leaf is renewed at a random point
// between 60% and 90% of its lifetime, and re-issued as soon as the
// active root changes. Everything starts at the first request, so an
// agent that never serves Connect costs nothing; every goroutine ends at
// Close. A cached leaf nobody has asked for in leafIdleTime is dropped,
// its goroutine with it; a later request signs a new one.

// connectCAOptions is the server's CA configuration from the agent
// config; nil when connect is disabled.
func connectCAOptions(cfg *config.RuntimeConfig) *server.ConnectCAOptions {
	if !cfg.Connect.Enabled {
		return nil
	}
	return &server.ConnectCAOptions{Datacenter: cfg.Datacenter, Provider: cfg.Connect.CAProvider, Config: cfg.Connect.CAConfig}
}

// Timings of the CA client.
const (
	// caRootsWait is a client agent's blocking-query wait for roots: below
	// the RPC's 30-second bound.
	caRootsWait = 20 * time.Second
	// caFirstLeafWait bounds how long a first leaf waits for the roots.
	caFirstLeafWait = 10 * time.Second
	caRetryMin      = 500 * time.Millisecond
	caRetryMax      = time.Minute
	// leafIdleTime is how long a cached leaf is kept, and renewed,
	// after its last request: as Consul's agent cache keeps a leaf.
	leafIdleTime = 72 * time.Hour
)

// caClient implements httpapi.AgentCA for an Agent.
type caClient struct {
	a         *Agent
	startOnce sync.Once

	mu       sync.Mutex
	roots    *structs.IndexedCARoots // guarded by mu; nil until first read
	rootsIdx uint64                  // guarded by mu
	rootsErr error                   // guarded by mu: the last read's error, while roots is nil
	rootsCh  chan struct{}           // guarded by mu: closed at each change of the above
	leaves   map[string]*leafEntry   // guarded by mu: by service name
}

// leafEntry is one service's cached leaf.
type leafEntry struct {
	// All guarded by caClient.mu.
	cert *structs.IssuedCert // nil until first signed
	akid string              // the leaf's authority key ID: its root's SigningKeyID
	err  error               // the first signing's error (the entry is dropped then)
	ch   chan struct{}       // closed at each change of cert or err

	// For idle eviction: the number of requests so far, the last one's
	// time, and how many are in progress (a blocking query keeps the
	// entry in use while it waits).
	reqs     uint64
	lastUsed time.Time
	waiters  int
}

func newCAClient(a *Agent) *caClient {
	return &caClient{a: a, rootsCh: make(chan struct{}), leaves: make(map[string]*leafEntry)}
}

// goCA runs f as one of the agent's goroutines, unless the agent is
// closing. Close sets closed under mu before it waits for wg, so an Add
// here happens before that Wait.
func (a *Agent) goCA(f func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
	return true
}

func (c *caClient) start() {
	c.startOnce.Do(func() { c.a.goCA(c.watchRoots) })
}

// ConnectCARoots implements httpapi.AgentCA.
func (c *caClient) ConnectCARoots(ctx context.Context, minIndex uint64) (*structs.IndexedCARoots, uint64, error) {
	if srv := c.a.srv; srv != nil && !srv.ConnectEnabled() {
		return nil, 0, server.ErrConnectNotEnabled
	}
	c.start()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		roots, idx, err, ch := c.roots, c.rootsIdx, c.rootsErr, c.rootsCh
		switch {
		case roots != nil && idx > minIndex:
			return roots, idx, nil
		case roots == nil && err != nil:
			return nil, 0, err
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			c.mu.Lock()
			if c.roots == nil {
				return nil, 0, fmt.Errorf("agent: Connect CA roots not available yet: %w", ctx.Err())
			}
			return c.roots, c.rootsIdx, nil
		case <-ch:
		}
		c.mu.Lock()
	}
}

// setRootsLocked records a read of the roots and wakes their waiters.
func (c *caClient) setRootsLocked(roots *structs.IndexedCARoots, idx uint64, err error) {
	if err == nil && c.roots != nil && idx == c.rootsIdx {
		return
	}
	if err != nil {
		if c.roots != nil || (c.rootsErr != nil && c.rootsErr.Error() == err.Error()) {
			return // keep serving what we have
		}
		c.rootsErr = err
	} else {
		c.roots, c.rootsIdx, c.rootsErr = roots, idx, nil
	}
	close(c.rootsCh)
	c.rootsCh = make(chan struct{})
}

// watchRoots keeps the roots fresh until the agent closes.
func (c *caClient) watchRoots() {
	var idx uint64
	backoff := caRetryMin
	for {
		var roots *structs.IndexedCARoots
		var err error
		if c.a.srv != nil {
			roots, idx, err = c.localRoots(idx)
		} else {
			roots, idx, err = c.remoteRoots(idx)
		}
		select {
		case <-c.a.done:
			return
		default:
		}
		c.mu.Lock()
		c.setRootsLocked(roots, idx, err)
		c.mu.Unlock()
		if err == nil {
			backoff = caRetryMin
			continue
		}
		c.a.logger.Debug("connect: reading CA roots failed", "error", err)
		select {
		case <-c.a.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, caRetryMax)
		idx = 0
	}
}

// localRoots reads the roots from this server's store, once their index
// is above idx (or at once when idx is 0), or when the agent closes.
func (c *caClient) localRoots(idx uint64) (*structs.IndexedCARoots, uint64, error) {
	if idx == 0 {
		// A new leader may still be making the root: the first read waits
		// a moment for it (and answers no roots after that).
		if err := c.a.srv.WaitConnectCA(); err != nil && !errors.Is(err, server.ErrCANotInitialized) {
			return nil, 0, err
		}
	}
	store := c.a.srv.Store()
	ctx, cancel := c.a.opContext(24 * time.Hour)
	defer cancel()
	for {
		ws := memdb.NewWatchSet()
		ws.Add(store.AbandonCh())
		rt := store.Read()
		got, roots, err := httpapi.CARootsQuery(ws, rt)
		rt.Abort()
		if err != nil {
			return nil, 0, err
		}
		got = max(got, 1)
		if idx == 0 || got > idx {
			return roots, got, nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return roots, got, nil
		}
	}
}

// remoteRoots asks a server for the roots by a blocking query on idx.
func (c *caClient) remoteRoots(idx uint64) (*structs.IndexedCARoots, uint64, error) {
	q := url.Values{}
	if idx > 0 {
		q.Set("index", strconv.FormatUint(idx, 10))
		q.Set("wait", caRootsWait.String())
	}
	resp, err := c.a.remote(http.MethodGet, "/v1/connect/ca/roots", q, nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.Status != http.StatusOK {
		return nil, 0, fmt.Errorf("%s", resp.Body)
	}
	var roots structs.IndexedCARoots
	if err := json.Unmarshal(resp.Body, &roots); err != nil {
		return nil, 0, fmt.Errorf("agent: CA roots: %w", err)
	}
	got := uint64(1)
	if h := resp.Header["X-Consul-Index"]; len(h) > 0 {
		got, _ = strconv.ParseUint(h[0], 10, 64)
	}
	return &roots, got, nil
}

// activeRootLocked returns the active root, or nil.
func (c *caClient) activeRootLocked() *structs.CARoot {
	if c.roots == nil {
		return nil
	}
	for _, r := range c.roots.Roots {
		if r.ID == c.roots.ActiveRootID {
			return r
		}
	}
	return nil
}

// ConnectCALeaf implements httpapi.AgentCA.
func (c *caClient) ConnectCALeaf(ctx context.Context, service string, minIndex uint64) (*structs.IssuedCert, bool, error) {
	if srv := c.a.srv; srv != nil && !srv.ConnectEnabled() {
		return nil, false, server.ErrConnectNotEnabled
	}
	c.start()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.leaves[service]
	if e == nil {
		e = &leafEntry{ch: make(chan struct{})}
		c.leaves[service] = e
		if !c.a.goCA(func() { c.manageLeaf(service, e) }) {
			delete(c.leaves, service)
			return nil, false, errors.New("agent: shutting down")
		}
	}
	e.reqs++
	e.lastUsed = time.Now()
	e.waiters++
	defer func() {
		// Under c.mu again, whichever way the loop below returns.
		e.waiters--
		e.lastUsed = time.Now()
	}()
	hit := true
	for {
		if e.cert != nil && e.cert.ModifyIndex > minIndex {
			out := *e.cert
			return &out, hit, nil
		}
		if e.cert == nil && e.err != nil {
			return nil, false, e.err
		}
		hit = false
		ch := e.ch
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			c.mu.Lock()
			if e.cert != nil {
				out := *e.cert
				return &out, false, nil
			}
			return nil, false, ctx.Err()
		case <-ch:
		}
		c.mu.Lock()
	}
}

// leafIdle is the idle timer of a cached leaf.
type leafIdle struct {
	c    *caClient
	e    *leafEntry
	C    <-chan time.Time
	stop func()
	reqs uint64 // e.reqs when armed
}

// newLeafIdle arms e's idle timer for leafIdleTime (e has just been
// asked for).
func (c *caClient) newLeafIdle(e *leafEntry) *leafIdle {
	t := &leafIdle{c: c, e: e, stop: func() {}}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.armLocked(leafIdleTime)
	return t
}

func (t *leafIdle) armLocked(d time.Duration) {
	t.stop()
	t.reqs = t.e.reqs
	if f := t.c.a.opts.LeafIdleAfter; f != nil {
		t.C, t.stop = f(d), func() {}
		return
	}
	timer := time.NewTimer(d)
	t.C, t.stop = timer.C, func() { timer.Stop() }
}

// fired handles the timer's firing: true when the leaf has not been
// asked for since the timer was armed and none is waiting for it, in
// which case it is no longer cached (a later request makes a new entry)
// and its goroutine must end. Else the timer is armed again, for
// leafIdleTime after the last request.
func (t *leafIdle) fired(service string) bool {
	c, e := t.c, t.e
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.waiters == 0 && e.reqs == t.reqs {
		if c.leaves[service] == e {
			delete(c.leaves, service)
		}
		return true
	}
	d := leafIdleTime
	if e.waiters == 0 {
		d = max(time.Until(e.lastUsed.Add(leafIdleTime)), 0)
	}
	t.armLocked(d)
	return false
}

// manageLeaf signs service's leaf, then renews it until the agent
// closes or the leaf has not been asked for in leafIdleTime. When the
// first signing fails, the entry is dropped with the error, so the next
// request tries afresh.
func (c *caClient) manageLeaf(service string, e *leafEntry) {
	idle := c.newLeafIdle(e)
	defer func() { idle.stop() }()
	backoff := caRetryMin
	for {
		// The roots' channel is taken before signing: a rotation while
		// the leader signs (with the old root, maybe) closes it, and
		// waitRenew then compares the leaf with the new active root.
		c.mu.Lock()
		rootsCh := c.rootsCh
		c.mu.Unlock()
		cert, akid, err := c.signLeaf(service)
		if f := c.a.opts.LeafSigned; f != nil && err == nil {
			f(service)
		}
		c.mu.Lock()
		if err != nil {
			if e.cert == nil {
				e.err = err
				delete(c.leaves, service)
				close(e.ch)
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			c.a.logger.Warn("connect: renewing leaf failed", "service", service, "error", err)
			retry := time.NewTimer(backoff)
			select {
			case <-c.a.done:
				retry.Stop()
				return
			case <-idle.C:
				if idle.fired(service) {
					retry.Stop()
					return
				}
			case <-retry.C:
			}
			retry.Stop()
			backoff = min(2*backoff, caRetryMax)
			continue
		}
		backoff = caRetryMin
		idx := max(cert.ModifyIndex, 1)
		if e.cert != nil {
			idx = max(idx, e.cert.ModifyIndex+1)
		}
		cert.CreateIndex, cert.ModifyIndex = idx, idx
		e.cert, e.akid = cert, akid
		close(e.ch)
		e.ch = make(chan struct{})
		c.mu.Unlock()
		if !c.waitRenew(service, e, cert, rootsCh, idle) {
			return
		}
	}
}

// waitRenew waits until cert is due for renewal (a random point between
// 60% and 90% of its lifetime) or the active root is no longer the one
// that signed it; false when the agent closes or the leaf, unused, is
// dropped. rootsCh is the roots' channel from before cert was signed.
func (c *caClient) waitRenew(service string, e *leafEntry, cert *structs.IssuedCert, rootsCh chan struct{}, idle *leafIdle) bool {
	life := cert.ValidBefore.Sub(cert.ValidAfter)
	at := cert.ValidAfter.Add(time.Duration(float64(life) * (0.6 + 0.3*mrand.Float64())))
	var due <-chan time.Time
	if f := c.a.opts.LeafRenewAfter; f != nil {
		due = f(max(time.Until(at), 0))
	} else {
		timer := time.NewTimer(max(time.Until(at), 0))
		defer timer.Stop()
		due = timer.C
	}
	for {
		select {
		case <-c.a.done:
			return false
		case <-due:
			return true
		case <-idle.C:
			if idle.fired(service) {
				return false
			}
			continue
		case <-rootsCh:
		}
		c.mu.Lock()
		rootsCh = c.rootsCh
		active := c.activeRootLocked()
		rotated := active != nil && active.SigningKeyID != e.akid
		c.mu.Unlock()
		if rotated {
			return true
		}
	}
}

// signLeaf makes a key and a CSR for service and has the leader sign it.
func (c *caClient) signLeaf(service string) (*structs.IssuedCert, string, error) {
	td, err := c.trustDomain()
	if err != nil {
		return nil, "", err
	}
	id := connect.ServiceID{TrustDomain: td, Namespace: connect.DefaultNamespace, Datacenter: c.a.cfg.Datacenter, Service: service}
	key, err := c.leafKey()
	if err != nil {
		return nil, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URI()}}, key)
	if err != nil {
		return nil, "", fmt.Errorf("agent: CSR for %q: %w", service, err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	ic, err := c.sign(service, csr)
	if err != nil {
		return nil, "", err
	}
	leaf, err := ca.ParseCert(ic.CertPEM)
	if err != nil {
		return nil, "", fmt.Errorf("agent: leaf for %q: %w", service, err)
	}
	if !ca.SameKey(key, leaf.PublicKey) {
		return nil, "", fmt.Errorf("agent: leaf for %q is not for the key sent", service)
	}
	keyPEM, err := ca.EncodeKey(key)
	if err != nil {
		return nil, "", err
	}
	ic.PrivateKeyPEM = keyPEM
	return ic, ca.HexString(leaf.AuthorityKeyId), nil
}

// leafKey makes a leaf's private key of the active root's type, as the
// CA configuration's PrivateKeyType and PrivateKeyBits say (an RSA root
// gets RSA leaves of at least 2048 bits, an EC root leaves on its curve);
// ECDSA P-256 when the roots do not say.
func (c *caClient) leafKey() (crypto.Signer, error) {
	c.mu.Lock()
	typ, bits := "", 0
	if r := c.activeRootLocked(); r != nil {
		typ, bits = r.PrivateKeyType, r.PrivateKeyBits
	}
	c.mu.Unlock()
	switch {
	case typ == "rsa":
		return ca.GenerateKey("rsa", max(bits, 2048))
	case typ == "ec" && bits != 0:
		if k, err := ca.GenerateKey("ec", bits); err == nil {
			return k, nil
		}
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// trustDomain waits (a while) for the roots and returns the trust domain.
func (c *caClient) trustDomain() (string, error) {
	ctx, cancel := c.a.opContext(caFirstLeafWait)
	defer cancel()
	roots, _, err := c.ConnectCARoots(ctx, 0)
	for err == nil && roots.TrustDomain == "" {
		// A new cluster's leader has not set the CA up yet.
		roots, _, err = c.ConnectCARoots(ctx, c.currentRootsIndex())
		if ctx.Err() != nil {
			return "", server.ErrCANotInitialized
		}
	}
	if err != nil {
		return "", err
	}
	return roots.TrustDomain, nil
}

func (c *caClient) currentRootsIndex() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rootsIdx
}

// sign has the leader sign csr: here when this server leads, else over
// the internal RPC (to the leader from a server, to any server from a
// client agent, which the server relays to its leader).
func (c *caClient) sign(service, csr string) (*structs.IssuedCert, error) {
	if srv := c.a.srv; srv != nil && (srv.IsLeader() || c.a.rpcClient == nil) {
		return srv.ConnectCASign(csr, service)
	}
	body, err := json.Marshal(&structs.CASignRequest{Service: service, CSR: csr})
	if err != nil {
		return nil, err
	}
	req := &rpc.HTTPRequest{Method: http.MethodPut, Path: httpapi.ConnectCASignPath, Body: body,
		Header: map[string][]string{httpapi.OriginNodeHeader: {c.a.nodeName}, httpapi.InternalHeader: {"1"}}}
	var addrs []string
	if srv := c.a.srv; srv != nil {
		leader := srv.Leader()
		if leader == "" {
			return nil, server.ErrNotLeader
		}
		addrs = []string{leader}
		req.Header[httpapi.ForwardedHeader] = []string{"1"}
	} else if addrs = c.a.serverAddrs(); len(addrs) == 0 {
		return nil, errNoServers
	}
	var errs error
	for _, addr := range addrs {
		ctx, cancel := c.a.opContext(30 * time.Second)
		resp, err := c.a.rpcClient.ForwardHTTP(ctx, addr, req)
		cancel()
		if err != nil {
			if rpc.Unreachable(err) {
				errs = errors.Join(errs, err)
				continue
			}
			return nil, fmt.Errorf("agent: sign: %w", err)
		}
		switch resp.Status {
		case http.StatusOK:
			var ic structs.IssuedCert
			if err := json.Unmarshal(resp.Body, &ic); err != nil {
				return nil, fmt.Errorf("agent: sign: %w", err)
			}
			return &ic, nil
		case http.StatusBadRequest:
			return nil, structs.BadRequestError{Reason: string(resp.Body)}
		}
		return nil, fmt.Errorf("%s", resp.Body)
	}
	return nil, fmt.Errorf("agent: sign: no server answered: %w", errs)
}
