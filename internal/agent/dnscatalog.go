package agent

import (
	"net/url"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// dnsCacheMax bounds the services whose health view is cached; past it the
// cache starts over, so a flood of made-up names cannot grow it.
const dnsCacheMax = 4096

// dnsCatalog reads the state store for the DNS server. A service's health
// view is cached until the service's index moves: DNS asks the same few
// names over and over, and building the view is most of a query's cost.
type dnsCatalog struct {
	store *state.Store

	mu    sync.Mutex
	gen   <-chan struct{}          // guarded by mu: the store contents the cache was built from
	cache map[string]dnsCacheEntry // guarded by mu: by lowercased service name
}

type dnsCacheEntry struct {
	idx     uint64
	entries []*structs.CheckServiceNode
}

func newDNSCatalog(store *state.Store) *dnsCatalog {
	return &dnsCatalog{store: store, cache: make(map[string]dnsCacheEntry)}
}

// HealthService returns every instance of name with its checks. The slice
// is shared between callers: they must not modify it.
func (c *dnsCatalog) HealthService(name string) ([]*structs.CheckServiceNode, error) {
	key := strings.ToLower(name)
	gen := c.store.AbandonCh()
	idx := c.store.ServiceIndex(key)
	c.mu.Lock()
	if c.gen != gen {
		// A snapshot restore replaced the store: indexes may repeat.
		c.gen, c.cache = gen, make(map[string]dnsCacheEntry)
	}
	if e, ok := c.cache[key]; ok && e.idx == idx {
		c.mu.Unlock()
		return e.entries, nil
	}
	c.mu.Unlock()

	r := c.store.Read()
	idx, entries, err := r.CheckServiceNodes(nil, key)
	r.Abort()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.cache) >= dnsCacheMax {
			c.cache = make(map[string]dnsCacheEntry)
		}
		c.cache[key] = dnsCacheEntry{idx: idx, entries: entries}
	}
	c.mu.Unlock()
	return entries, nil
}

// HealthConnect returns the connect-capable instances for name with their
// checks. It is read each time: connect lookups are rarer than service
// ones, and proxies' indexes are not the service's.
func (c *dnsCatalog) HealthConnect(name string) ([]*structs.CheckServiceNode, error) {
	r := c.store.Read()
	defer r.Abort()
	_, entries, err := r.CheckConnectServiceNodes(nil, name)
	return entries, err
}

// Node returns a node by name, or nil.
func (c *dnsCatalog) Node(name string) (*structs.Node, error) {
	r := c.store.Read()
	defer r.Abort()
	_, n, err := r.Node(nil, name)
	return n, err
}

// localCatalog is this datacenter's catalog as DNS reads it: the store on
// a server (dnsCatalog), the servers on a client agent.
type localCatalog interface {
	HealthService(name string) ([]*structs.CheckServiceNode, error)
	HealthConnect(name string) ([]*structs.CheckServiceNode, error)
	Node(name string) (*structs.Node, error)
}

// dnsRouter implements dns.Catalog: this datacenter's names from local,
// other datacenters' through their servers.
type dnsRouter struct {
	a     *Agent
	local localCatalog
}

func (r dnsRouter) HealthService(dc, name string) ([]*structs.CheckServiceNode, error) {
	if dc == r.a.cfg.Datacenter {
		return r.local.HealthService(name)
	}
	var out []*structs.CheckServiceNode
	err := r.a.remoteDCJSON(dc, "/v1/health/service/"+url.PathEscape(name), &out)
	return out, err
}

func (r dnsRouter) HealthConnect(dc, name string) ([]*structs.CheckServiceNode, error) {
	if dc == r.a.cfg.Datacenter {
		return r.local.HealthConnect(name)
	}
	var out []*structs.CheckServiceNode
	err := r.a.remoteDCJSON(dc, "/v1/health/connect/"+url.PathEscape(name), &out)
	return out, err
}

func (r dnsRouter) Node(dc, name string) (*structs.Node, error) {
	if dc == r.a.cfg.Datacenter {
		return r.local.Node(name)
	}
	var ns *structs.NodeServices
	if err := r.a.remoteDCJSON(dc, "/v1/catalog/node/"+url.PathEscape(name), &ns); err != nil || ns == nil {
		return nil, err
	}
	return ns.Node, nil
}
