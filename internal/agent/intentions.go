package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/configentry"
)

// A client agent answers /v1/agent/connect/authorize from a cache of the
// datacenter's service-intentions entries and mesh entry, kept fresh by a
// blocking query to the servers (any config entry write wakes it), so
// that a check costs no round trip and an intention write shows as soon
// as the query returns.

// intentionCacheWait is the blocking query's wait: under remoteAt's
// 30-second bound per attempt, jitter included.
const intentionCacheWait = "20s"

// intentionCache holds the last answer of the blocking query.
type intentionCache struct {
	mu      sync.Mutex
	entries []*configentry.ServiceIntentionsConfigEntry // guarded by mu; shared, never modified
	mesh    *configentry.MeshConfigEntry                // guarded by mu; nil when none is stored
	err     error                                       // guarded by mu; the last fetch's error, until one succeeds
	loaded  bool                                        // guarded by mu
	changed chan struct{}                               // guarded by mu; closed and replaced at each update
}

func newIntentionCache() *intentionCache {
	return &intentionCache{changed: make(chan struct{})}
}

func (c *intentionCache) set(entries []*configentry.ServiceIntentionsConfigEntry, mesh *configentry.MeshConfigEntry, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.entries, c.mesh, c.loaded = entries, mesh, true
	}
	c.err = err
	close(c.changed)
	c.changed = make(chan struct{})
}

// get returns the cached entries, waiting for the first fetch (or ctx).
// Once loaded, a failing refresh keeps serving the last known entries, as
// Consul's agent cache does.
func (c *intentionCache) get(ctx context.Context) ([]*configentry.ServiceIntentionsConfigEntry, *configentry.MeshConfigEntry, error) {
	for {
		c.mu.Lock()
		entries, mesh, err, loaded, ch := c.entries, c.mesh, c.err, c.loaded, c.changed
		c.mu.Unlock()
		if loaded {
			return entries, mesh, nil
		}
		if err != nil {
			return nil, nil, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// runIntentionCache keeps c fresh until the agent shuts down.
func (a *Agent) runIntentionCache(c *intentionCache) {
	defer a.wg.Done()
	var index uint64
	for {
		select {
		case <-a.done:
			return
		default:
		}
		q := url.Values{"stale": {""}, "wait": {intentionCacheWait}}
		if index > 0 {
			q.Set("index", strconv.FormatUint(index, 10))
		}
		entries, next, err := a.fetchIntentions(q)
		var mesh *configentry.MeshConfigEntry
		if err == nil {
			mesh, err = a.fetchMesh()
		}
		if err != nil {
			c.set(nil, nil, err)
			select { // back off, so that a cluster without servers is not hammered
			case <-a.done:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if next < index {
			next = 0 // the servers' index went back (a restore): start over
		}
		index = next
		c.set(entries, mesh, nil)
	}
}

func (a *Agent) fetchIntentions(q url.Values) ([]*configentry.ServiceIntentionsConfigEntry, uint64, error) {
	resp, err := a.remote(http.MethodGet, "/v1/config/"+configentry.ServiceIntentions, q, nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.Status != http.StatusOK {
		return nil, 0, fmt.Errorf("agent: intentions: %d %s", resp.Status, resp.Body)
	}
	var entries []*configentry.ServiceIntentionsConfigEntry
	if err := json.Unmarshal(resp.Body, &entries); err != nil {
		return nil, 0, fmt.Errorf("agent: intentions: %w", err)
	}
	var index uint64
	if v := resp.Header["X-Consul-Index"]; len(v) > 0 {
		index, _ = strconv.ParseUint(v[0], 10, 64)
	}
	return entries, index, nil
}

// fetchMesh reads the mesh entry (nil when none is stored), as stale as
// the intentions read just before it.
func (a *Agent) fetchMesh() (*configentry.MeshConfigEntry, error) {
	resp, err := a.remote(http.MethodGet, "/v1/config/"+configentry.MeshConfig+"/"+configentry.MeshConfigMesh, url.Values{"stale": {""}}, nil)
	if err != nil {
		return nil, err
	}
	switch resp.Status {
	case http.StatusNotFound:
		return nil, nil
	case http.StatusOK:
	default:
		return nil, fmt.Errorf("agent: mesh entry: %d %s", resp.Status, resp.Body)
	}
	var mesh configentry.MeshConfigEntry
	if err := json.Unmarshal(resp.Body, &mesh); err != nil {
		return nil, fmt.Errorf("agent: mesh entry: %w", err)
	}
	return &mesh, nil
}
