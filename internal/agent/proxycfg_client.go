package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/configentry"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// A client agent has no state store, yet its sidecars need snapshots as
// a server's do. It builds them with the same proxycfg.Manager, from a
// mirror (proxycfg_client_mirror.go) that blocking queries to the
// servers keep fresh:
//
//   - one loop for the config entries of every kind proxycfg reads: a
//     blocking list of one kind wakes at any config entry write (the
//     index is the whole table's), then every kind is read from the same
//     server at that index;
//   - one loop per upstream service of the local sidecars, on
//     /v1/health/connect/<name>: its connect-capable instances with
//     their nodes and checks.
//
// Each returns as soon as the servers' state changes, so a change reaches
// the sidecars in the time of a write to the mirror and a rebuild. The
// leaf and the roots come from the agent's CA client, as on a server.
// Loops start when the first sidecar needs them and stop when the last
// one that did is gone (an upstream's instances are then forgotten); all
// end at Close.
// A failed read is retried with a growing delay, and the mirror keeps
// serving what it holds meanwhile (stale, as Consul's agent cache).
//
// The manager sees a sidecar only once the mirror holds what its first
// snapshot is built from (the entries, and each upstream's instances): a
// first snapshot from an empty mirror would have no intentions (so the
// default decision, maybe allow, for connections a deny intention
// refuses) and no endpoints.

// mirrorWait is the wait of the mirror's blocking queries: under the
// 30-second bound of a call to a server (remoteHold), jitter included.
const mirrorWait = "20s"

// remoteHold bounds one call to a server, as remoteAt does.
const remoteHold = 30 * time.Second

// Retry bounds of the mirror's failed reads.
const (
	mirrorRetryMin = 500 * time.Millisecond
	mirrorRetryMax = 30 * time.Second
)

// remoteGet sends a GET of the HTTP API (path and query) to a server.
type remoteGet func(ctx context.Context, path string, q url.Values) (*rpc.HTTPResponse, error)

// serverReads returns a remoteGet that asks this datacenter's live
// servers in an order fixed for it (a random one), so that the reads
// made with one getter come from one server while it answers. Reads are
// safe to repeat: a server that fails is skipped for the next.
func (a *Agent) serverReads() remoteGet {
	addrs := a.serverAddrs()
	return func(ctx context.Context, path string, q url.Values) (*rpc.HTTPResponse, error) {
		if len(addrs) == 0 {
			return nil, errNoServers
		}
		req := &rpc.HTTPRequest{
			Method: http.MethodGet, Path: path, RawQuery: q.Encode(),
			Header: map[string][]string{httpapi.OriginNodeHeader: {a.nodeName}},
		}
		var errs error
		for _, addr := range addrs {
			rctx, cancel := context.WithTimeout(ctx, remoteHold)
			resp, err := a.rpcClient.ForwardHTTP(rctx, addr, req)
			cancel()
			if err == nil {
				return resp, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = errors.Join(errs, err)
		}
		return nil, fmt.Errorf("agent: no server answered: %w", errs)
	}
}

// clientSources keeps a client agent's mirror fresh and is the
// LocalServices of its proxycfg.Manager: the agent's services, less the
// sidecars the mirror is not ready for yet.
type clientSources struct {
	local   proxycfg.LocalServices
	servers func() remoteGet // a getter for one round of reads
	dc      string
	log     *slog.Logger
	mirror  *mirror

	mu sync.Mutex
	// entriesOK is set once the mirror holds the servers' config
	// entries, until the loop that copies them stops.
	entriesOK bool // guarded by mu
	// synced are the upstream names whose instances the mirror holds.
	synced map[string]bool // guarded by mu
	// shown are the sidecars the manager was shown: they stay shown,
	// whatever the mirror's state, until they are deregistered.
	shown   map[string]bool // guarded by mu
	changed chan struct{}   // guarded by mu; closed and replaced at each change of the above or of local
}

// newClientSources returns the sources of a client agent's manager:
// local are the agent's services, servers gives a getter to the servers
// for each round of reads. A nil log discards.
func newClientSources(local proxycfg.LocalServices, servers func() remoteGet, dc string, log *slog.Logger) *clientSources {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &clientSources{
		local: local, servers: servers, dc: dc, log: log, mirror: newMirror(),
		synced: make(map[string]bool), shown: make(map[string]bool), changed: make(chan struct{}),
	}
}

// Services implements proxycfg.LocalServices: the local services, but a
// connect-proxy only once it has been shown or the mirror holds what its
// first snapshot is built from. A sidecar shown stays shown as its
// registration changes: an upstream it gains has no endpoints until its
// instances are copied, a moment later, as a new upstream's instances
// may be still registering on a server.
func (c *clientSources) Services() map[string]*structs.NodeService {
	svcs := c.local.Services()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.shown {
		if !isSidecarProxy(svcs[id]) {
			delete(c.shown, id)
		}
	}
	for id, s := range svcs {
		if !isSidecarProxy(s) || c.shown[id] {
			continue
		}
		if c.readyLocked(s) {
			c.shown[id] = true
		} else {
			delete(svcs, id)
		}
	}
	return svcs
}

// ServicesChanged implements proxycfg.LocalServices.
func (c *clientSources) ServicesChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *clientSources) readyLocked(s *structs.NodeService) bool {
	if !c.entriesOK {
		return false
	}
	for _, name := range mirroredUpstreams(s, c.dc) {
		if !c.synced[name] {
			return false
		}
	}
	return true
}

// update changes the readiness state under mu and wakes the manager.
func (c *clientSources) update(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
	c.wakeLocked()
}

func (c *clientSources) wakeLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// loaded records that the mirror holds the servers' entries (name "")
// or upstream name's instances, waking the manager the first time: a
// sidecar may be ready now.
func (c *clientSources) loaded(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "" && !c.entriesOK {
		c.entriesOK = true
		c.wakeLocked()
	}
	if name != "" && !c.synced[name] {
		c.synced[name] = true
		c.wakeLocked()
	}
}

func isSidecarProxy(s *structs.NodeService) bool {
	return s != nil && s.Kind == structs.ServiceKindConnectProxy && s.Proxy != nil
}

// mirroredUpstreams are the upstreams of sidecar s whose instances
// proxycfg reads: those of kind service in this datacenter (build.go
// gives the others no endpoints).
func mirroredUpstreams(s *structs.NodeService, dc string) []string {
	var out []string
	for _, u := range s.Proxy.Upstreams {
		if (u.DestinationType != "" && u.DestinationType != structs.UpstreamDestTypeService) || u.DestinationPeer != "" {
			continue
		}
		if u.Datacenter != "" && u.Datacenter != dc {
			continue
		}
		out = append(out, u.DestinationName)
	}
	return out
}

// mirrorLoop is one of the mirror's copy loops.
type mirrorLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startLoop(ctx context.Context, run func(context.Context)) *mirrorLoop {
	ctx, cancel := context.WithCancel(ctx)
	l := &mirrorLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		run(ctx)
	}()
	return l
}

func (l *mirrorLoop) stop() {
	l.cancel()
	<-l.done
}

// Run keeps the copy loops matched to the local sidecars until ctx ends,
// and returns once every loop it started has ended.
func (c *clientSources) Run(ctx context.Context) {
	var entries *mirrorLoop
	instances := make(map[string]*mirrorLoop) // by upstream name
	defer func() {
		for _, l := range instances {
			l.cancel()
		}
		if entries != nil {
			entries.cancel()
		}
		for _, l := range instances {
			<-l.done
		}
		if entries != nil {
			<-entries.done
		}
	}()
	for {
		changed := c.local.ServicesChanged()
		names := make(map[string]bool)
		sidecars := false
		for _, s := range c.local.Services() {
			if isSidecarProxy(s) {
				sidecars = true
				for _, n := range mirroredUpstreams(s, c.dc) {
					names[n] = true
				}
			}
		}
		switch {
		case sidecars && entries == nil:
			entries = startLoop(ctx, c.copyEntries)
		case !sidecars && entries != nil:
			entries.stop()
			entries = nil
			c.update(func() { c.entriesOK = false })
		}
		for name, l := range instances {
			if !names[name] {
				l.stop()
				delete(instances, name)
				c.forget(name)
			}
		}
		for name := range names {
			if instances[name] == nil {
				instances[name] = startLoop(ctx, func(ctx context.Context) { c.copyInstances(ctx, name) })
			}
		}
		// The manager waits on this agent's changes only through here.
		c.update(func() {})
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// forget drops the instances of an upstream no sidecar has any more.
func (c *clientSources) forget(name string) {
	c.update(func() { delete(c.synced, name) })
	if err := c.mirror.setInstances(name, nil); err != nil {
		c.log.Warn("proxycfg: forgetting an upstream's instances failed", "upstream", name, "error", err)
	}
}

// logFailure logs a failed copy: as a warning, unless the agent knows no
// server yet (it is joining).
func (c *clientSources) logFailure(msg string, err error, args ...any) {
	args = append(args, "error", err)
	if errors.Is(err, errNoServers) {
		c.log.Debug(msg, args...)
		return
	}
	c.log.Warn(msg, args...)
}

// backOff waits before the next attempt after a failure, and reports
// false when ctx ended meanwhile.
func backOff(ctx context.Context, backoff *time.Duration) bool {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(2**backoff, mirrorRetryMax)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// copyInstances keeps the mirror's instances of upstream name equal to
// the servers' until ctx ends.
func (c *clientSources) copyInstances(ctx context.Context, name string) {
	var index uint64
	backoff := mirrorRetryMin
	for {
		q := url.Values{"stale": {""}}
		if index > 0 {
			q.Set("index", strconv.FormatUint(index, 10))
			q.Set("wait", mirrorWait)
		}
		var csns []*structs.CheckServiceNode
		next, err := getJSON(ctx, c.servers(), "/v1/health/connect/"+url.PathEscape(name), q, &csns)
		if ctx.Err() != nil {
			return
		}
		if err == nil && (next != index || index == 0) {
			// A lower index is a server behind the last one, or
			// restored from a snapshot: its answer is still the state
			// to copy, and the next query blocks on its index.
			err = c.mirror.setInstances(name, csns)
			c.loaded(name)
		}
		if err == nil {
			index, backoff = next, mirrorRetryMin
			continue
		}
		c.logFailure("proxycfg: copying an upstream's instances from the servers failed", err, "upstream", name)
		index = 0
		if !backOff(ctx, &backoff) {
			return
		}
	}
}

// errEntriesMoved is a round of config entry reads during which an entry
// was written: the round is read again.
var errEntriesMoved = errors.New("agent: config entries changed while being read")

// maxEntryRereads bounds the rounds read again at once for
// errEntriesMoved, before the loop backs off as for an error.
const maxEntryRereads = 3

// copyEntries keeps the mirror's config entries equal to the servers'
// until ctx ends.
func (c *clientSources) copyEntries(ctx context.Context) {
	var index uint64
	backoff := mirrorRetryMin
	rereads := 0
	for {
		entries, next, err := readEntries(ctx, c.servers(), index)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errEntriesMoved) && rereads < maxEntryRereads {
			rereads++
			continue
		}
		rereads = 0
		if err == nil && (next != index || index == 0) {
			err = c.mirror.setEntries(entries)
			// Even an entry the mirror refused (see setEntries) leaves
			// the others current: the sidecars are served from those.
			c.loaded("")
		}
		if err == nil {
			index, backoff = next, mirrorRetryMin
			continue
		}
		c.logFailure("proxycfg: copying config entries from the servers failed", err)
		index = 0
		if !backOff(ctx, &backoff) {
			return
		}
	}
}

// readEntries reads every entry of mirroredKinds from one server, all at
// one index of the config entries table: the first list blocks until the
// index is above index (when not 0), the others must come back at the
// index it did, else errEntriesMoved.
func readEntries(ctx context.Context, get remoteGet, index uint64) ([]configentry.Entry, uint64, error) {
	var out []configentry.Entry
	var at uint64
	for i, kind := range mirroredKinds {
		q := url.Values{"stale": {""}}
		if i == 0 && index > 0 {
			q.Set("index", strconv.FormatUint(index, 10))
			q.Set("wait", mirrorWait)
		}
		var raws []json.RawMessage
		idx, err := getJSON(ctx, get, "/v1/config/"+kind, q, &raws)
		if err != nil {
			return nil, 0, err
		}
		if i == 0 {
			at = idx
		} else if idx != at {
			return nil, 0, errEntriesMoved
		}
		for _, raw := range raws {
			e, err := configentry.Unmarshal(kind, raw)
			if err != nil {
				return nil, 0, fmt.Errorf("agent: config entries %s: %w", kind, err)
			}
			out = append(out, e)
		}
	}
	return out, at, nil
}

// getJSON reads path and decodes a 200 answer into out, returning the
// answer's X-Consul-Index.
func getJSON(ctx context.Context, get remoteGet, path string, q url.Values, out any) (uint64, error) {
	resp, err := get(ctx, path, q)
	if err != nil {
		return 0, err
	}
	if resp.Status != http.StatusOK {
		return 0, fmt.Errorf("agent: GET %s: %d %s", path, resp.Status, bytes.TrimSpace(resp.Body))
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return 0, fmt.Errorf("agent: GET %s: %w", path, err)
	}
	var index uint64
	if v := resp.Header["X-Consul-Index"]; len(v) > 0 {
		index, _ = strconv.ParseUint(v[0], 10, 64)
	}
	return index, nil
}
