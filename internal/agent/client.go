package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/trellis-mesh/trellis/internal/dns"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/membership"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// A client agent (no -server) keeps no raft state: it reaches the catalog
// through the servers it learns of by gossip, over the internal RPC, and
// tries another server when one does not answer.

// errNoServers is returned by a client agent that knows no live server.
var errNoServers = errors.New("No known Consul servers")

// serverAddrs returns the RPC addresses of this datacenter's live servers,
// in random order.
func (a *Agent) serverAddrs() []string {
	var out []string
	for _, m := range a.lan.Members() {
		if p, ok := serverPeer(m, a.cfg.Datacenter); ok && m.Status == membership.StatusAlive {
			out = append(out, p.Address)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// remote sends one API request to a server, trying each live server in
// turn until one answers. Only requests safe to repeat go through here.
func (a *Agent) remote(method, path string, query url.Values, body []byte) (*rpc.HTTPResponse, error) {
	addrs := a.serverAddrs()
	if len(addrs) == 0 {
		return nil, errNoServers
	}
	return a.remoteAt(addrs, method, path, query, body)
}

// remoteAt is remote, to the servers at addrs.
func (a *Agent) remoteAt(addrs []string, method, path string, query url.Values, body []byte) (*rpc.HTTPResponse, error) {
	req := &rpc.HTTPRequest{
		Method: method, Path: path, RawQuery: query.Encode(), Body: body,
		Header: map[string][]string{httpapi.OriginNodeHeader: {a.nodeName}},
	}
	var errs error
	for _, addr := range addrs {
		ctx, cancel := a.opContext(30 * time.Second)
		resp, err := a.rpcClient.ForwardHTTP(ctx, addr, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		if !rpc.Unreachable(err) {
			// It may have been served: only a server never reached is
			// skipped for the next.
			return nil, fmt.Errorf("agent: %s: %w", addr, err)
		}
		errs = errors.Join(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, fmt.Errorf("agent: no server answered: %w", errs)
}

// remoteJSON sends a request and decodes a 200 answer into out; a 404
// leaves out untouched.
func (a *Agent) remoteJSON(method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	resp, err := a.remote(method, path, query, body)
	if err != nil {
		return err
	}
	switch resp.Status {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil
	default:
		return fmt.Errorf("agent: %s %s: %d %s", method, path, resp.Status, bytes.TrimSpace(resp.Body))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(resp.Body, out)
}

// remoteDCJSON reads path (a stale read) in another datacenter and decodes
// a 200 answer into out; a 404 leaves out untouched. A server asks that
// datacenter's servers; a client agent asks its own servers, which forward.
// A datacenter no server knows is dns.ErrNoDatacenter.
func (a *Agent) remoteDCJSON(dc, path string, out any) error {
	if a.rpcClient == nil {
		return dns.ErrNoDatacenter // a dev agent reaches no other server
	}
	q := url.Values{"stale": {""}}
	var addrs []string
	if a.srv != nil {
		addrs = a.datacenterServers(dc)
	} else {
		addrs = a.serverAddrs()
		q.Set("dc", dc)
	}
	if len(addrs) == 0 {
		if a.srv != nil {
			return dns.ErrNoDatacenter
		}
		return errNoServers
	}
	resp, err := a.remoteAt(addrs, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	switch {
	case resp.Status == http.StatusOK:
		return json.Unmarshal(resp.Body, out)
	case resp.Status == http.StatusNotFound:
		return nil
	case bytes.Contains(resp.Body, []byte("No path to datacenter")):
		return dns.ErrNoDatacenter
	}
	return fmt.Errorf("agent: GET %s in %s: %d %s", path, dc, resp.Status, bytes.TrimSpace(resp.Body))
}

// catalogNode returns what the catalog holds for this agent's node: from
// the local store on a server, from a server on a client.
func (a *Agent) catalogNode() (*structs.Node, []*structs.NodeService, []*structs.HealthCheck, error) {
	if a.store != nil {
		rt := a.store.Read()
		defer rt.Abort()
		_, n, svcs, err := rt.NodeServices(nil, a.nodeName)
		if err != nil {
			return nil, nil, nil, err
		}
		_, checks, err := rt.NodeChecks(nil, a.nodeName)
		return n, svcs, checks, err
	}
	var list *structs.NodeServiceList
	if err := a.remoteJSON(http.MethodGet, "/v1/catalog/node-services/"+url.PathEscape(a.nodeName), nil, nil, &list); err != nil {
		return nil, nil, nil, err
	}
	var checks []*structs.HealthCheck
	if err := a.remoteJSON(http.MethodGet, "/v1/health/node/"+url.PathEscape(a.nodeName), nil, nil, &checks); err != nil {
		return nil, nil, nil, err
	}
	if list == nil {
		return nil, nil, checks, nil
	}
	return list.Node, list.Services, checks, nil
}

// remoteDNSCatalog answers a client agent's DNS from the servers.
type remoteDNSCatalog struct{ a *Agent }

func (c remoteDNSCatalog) HealthService(name string) ([]*structs.CheckServiceNode, error) {
	var out []*structs.CheckServiceNode
	err := c.a.remoteJSON(http.MethodGet, "/v1/health/service/"+url.PathEscape(name), url.Values{"stale": {""}}, nil, &out)
	return out, err
}

func (c remoteDNSCatalog) HealthConnect(name string) ([]*structs.CheckServiceNode, error) {
	var out []*structs.CheckServiceNode
	err := c.a.remoteJSON(http.MethodGet, "/v1/health/connect/"+url.PathEscape(name), url.Values{"stale": {""}}, nil, &out)
	return out, err
}

func (c remoteDNSCatalog) Node(name string) (*structs.Node, error) {
	var ns *structs.NodeServices
	if err := c.a.remoteJSON(http.MethodGet, "/v1/catalog/node/"+url.PathEscape(name), url.Values{"stale": {""}}, nil, &ns); err != nil || ns == nil {
		return nil, err
	}
	return ns.Node, nil
}
