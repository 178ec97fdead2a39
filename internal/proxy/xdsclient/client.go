// Package xdsclient is the sidecar's xDS client: it holds an aggregated
// (ADS), state-of-the-world stream open to the agent, subscribes to the
// proxy's clusters and listeners and then to the route configurations,
// endpoints and secrets they refer to, and hands every complete,
// consistent configuration to the data plane, ACKing what the data plane
// applied and NACKing what it refused.
//
// Protocol, per response of type T:
//
//   - resources that do not decode or validate are NACKed at once;
//   - otherwise they are kept pending, and the RDS, EDS and SDS
//     subscriptions follow the listeners and clusters now known (as
//     Envoy's: route configurations named by the listeners' HTTP
//     connection managers, load assignments of the EDS clusters, secrets
//     of the TLS contexts);
//   - once clusters, listeners and every route configuration, load
//     assignment and secret they name are known, and every cluster that
//     a listener or route sends traffic to is among the clusters, the
//     configuration is applied (unless it equals the one running) and
//     every pending response is ACKed if that succeeded,
//     NACKed with the previous version and the error if it failed; a
//     refused version that the server sends again is answered with that
//     version, so that the server waits for a new one rather than resending
//     it in a loop (go-control-plane answers a version other than its
//     current one at once).
//
// A broken stream is reopened with a bounded, jittered backoff; the
// running configuration stays as it is meanwhile.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy"
)

// Applier runs configurations: *proxy.Proxy in the sidecar. Apply returns
// an error, and changes nothing, when cfg cannot be run.
type Applier interface {
	Apply(cfg proxy.Config) error
}

// Options configure a Client.
type Options struct {
	// Target is the agent's gRPC address, "127.0.0.1:8502".
	Target string
	// NodeID is the proxy's service ID: the agent serves each proxy the
	// resources of the snapshot with that ID.
	NodeID string
	// Applier receives each new complete configuration.
	Applier Applier
	// Logger defaults to discarding.
	Logger *slog.Logger
	// DialOptions replace the default, plaintext transport.
	DialOptions []grpc.DialOption
	// MinBackoff and MaxBackoff bound the wait before reopening a broken
	// stream (defaults 100ms and 30s); it doubles after each stream that
	// broke before any response, and each wait is drawn at random from its
	// upper half.
	MinBackoff, MaxBackoff time.Duration
}

// Client is the ADS client of one proxy. Run it once, then Close it.
type Client struct {
	opts   Options
	logger *slog.Logger
	conn   *grpc.ClientConn

	// Owned by Run's goroutine.
	state   map[string]*typeState
	applied *proxy.Config // the configuration last applied, nil before
}

// typeState is what the client knows of one resource type.
type typeState struct {
	// Kept across streams: the resources of the running configuration,
	// and the version they came with.
	accepted map[string]proto.Message
	version  string
	known    bool // a response of this type was applied

	// Reset with each stream.
	nonce      string   // of the latest response
	subscribed bool     // a request was sent on this stream
	names      []string // the subscription sent (nil: wildcard)
	pending    *response
	rejected   string // the version last NACKed on this stream
	rejectErr  string
}

// response is a decoded response not yet ACKed nor NACKed.
type response struct {
	version string
	res     map[string]proto.Message
}

// New checks opts and prepares the connection; nothing is dialled before
// Run.
func New(opts Options) (*Client, error) {
	if opts.Target == "" || opts.NodeID == "" || opts.Applier == nil {
		return nil, errors.New("xdsclient: target, node ID and applier are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	dial := opts.DialOptions
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(opts.Target, dial...)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: target %q: %w", opts.Target, err)
	}
	c := &Client{
		opts:   opts,
		logger: opts.Logger.With("component", "xdsclient", "node", opts.NodeID),
		conn:   conn,
		state:  map[string]*typeState{},
	}
	for _, t := range types {
		c.state[t] = &typeState{}
	}
	return c, nil
}

// Run keeps a stream open until ctx ends, reopening it when it breaks, and
// returns once its stream is closed. Call it once.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.opts.MinBackoff
	for {
		got, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = c.opts.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.logger.Warn("xDS stream broken; reconnecting", "error", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if !got {
			backoff = min(2*backoff, c.opts.MaxBackoff)
		}
	}
}

// Close closes the connection to the agent, after Run has returned.
func (c *Client) Close() error { return c.conn.Close() }

// stream runs one ADS stream until it breaks or ctx ends; got says
// whether it received a response.
func (c *Client) stream(ctx context.Context) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, and gRPC's goroutines with it
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	for _, st := range c.state {
		st.nonce, st.subscribed, st.names, st.pending, st.rejected, st.rejectErr = "", false, nil, nil, "", ""
	}
	send := func(typ string, errDetail error) error {
		st := c.state[typ]
		req := &discoveryv3.DiscoveryRequest{
			Node:          &corev3.Node{Id: c.opts.NodeID},
			TypeUrl:       typ,
			VersionInfo:   st.version,
			ResourceNames: st.names,
			ResponseNonce: st.nonce,
		}
		if errDetail != nil {
			req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: errDetail.Error()}
		}
		st.subscribed = true
		return s.Send(req)
	}
	p := &protocol{c: c, send: send}
	for _, t := range []string{resource.ClusterType, resource.ListenerType} {
		if err := send(t, nil); err != nil {
			return false, err
		}
	}
	if err := p.resubscribe(); err != nil {
		return false, err
	}
	c.logger.Info("xDS stream open", "target", c.opts.Target)
	for {
		resp, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = true
		if err := p.handle(resp); err != nil {
			return got, err
		}
	}
}

// protocol handles the responses of one stream.
type protocol struct {
	c    *Client
	send func(typ string, errDetail error) error
}

func (p *protocol) handle(resp *discoveryv3.DiscoveryResponse) error {
	c := p.c
	st, ok := c.state[resp.GetTypeUrl()]
	if !ok {
		c.logger.Warn("xDS response of an unrequested type ignored", "type", resp.GetTypeUrl())
		return nil
	}
	typ := resp.GetTypeUrl()
	st.nonce = resp.GetNonce()
	if st.rejected != "" && resp.GetVersionInfo() == st.rejected {
		// The server sends a refused version again: claim it, with the
		// error, so that it waits for the next one.
		return p.sendVersion(typ, st.rejected, errors.New(st.rejectErr))
	}
	res, err := decode(typ, resp.GetResources())
	if err != nil {
		err = fmt.Errorf("xdsclient: %s version %q: %w", typ, resp.GetVersionInfo(), err)
		c.logger.Error("xDS response refused", "error", err)
		st.pending = nil
		st.rejected, st.rejectErr = resp.GetVersionInfo(), err.Error()
		return p.send(typ, err)
	}
	st.pending = &response{version: resp.GetVersionInfo(), res: res}
	if err := p.resubscribe(); err != nil {
		return err
	}
	return p.tryApply()
}

// sendVersion sends a request for typ claiming version.
func (p *protocol) sendVersion(typ, version string, errDetail error) error {
	st := p.c.state[typ]
	saved := st.version
	st.version = version
	err := p.send(typ, errDetail)
	st.version = saved
	return err
}

// candidate returns the resources of typ the next configuration would
// have, and whether any were received.
func (c *Client) candidate(typ string) (map[string]proto.Message, bool) {
	st := c.state[typ]
	if st.pending != nil {
		return st.pending.res, true
	}
	return st.accepted, st.known
}

// resubscribe sends the EDS and SDS subscriptions the candidate clusters
// and listeners need, where they changed.
func (p *protocol) resubscribe() error {
	clusters, _ := p.c.candidate(resource.ClusterType)
	listeners, _ := p.c.candidate(resource.ListenerType)
	for typ, names := range map[string][]string{
		resource.RouteType:    rdsNames(listeners),
		resource.EndpointType: edsNames(clusters),
		resource.SecretType:   secretNames(listeners, clusters),
	} {
		st := p.c.state[typ]
		if slices.Equal(st.names, names) && (st.subscribed || len(names) == 0) {
			continue
		}
		if names == nil {
			// Once subscribed, an empty list unsubscribes; it must not be
			// sent first, where it would mean every resource.
			if !st.subscribed {
				continue
			}
			names = []string{}
		}
		st.names = names
		if err := p.send(typ, nil); err != nil {
			return err
		}
	}
	return nil
}

// tryApply applies the candidate configuration if it is complete, then
// ACKs or NACKs the pending responses.
func (p *protocol) tryApply() error {
	c := p.c
	var all [5]map[string]proto.Message
	for i, t := range types {
		res, known := c.candidate(t)
		if !known && i < 2 {
			return nil // no clusters or no listeners yet
		}
		all[i] = res
	}
	cfg, complete := assemble(all[1], all[0], all[2], all[3], all[4])
	if !complete {
		return nil
	}
	var applyErr error
	if c.applied == nil || !equal(*c.applied, cfg) {
		if applyErr = c.opts.Applier.Apply(cfg); applyErr == nil {
			c.applied = &cfg
			c.logger.Info("xDS configuration applied", "listeners", len(cfg.Listeners), "clusters", len(cfg.Clusters),
				"routes", len(cfg.Routes), "endpoints", len(cfg.Endpoints), "secrets", len(cfg.Secrets))
		} else {
			applyErr = fmt.Errorf("xdsclient: apply: %w", applyErr)
			c.logger.Error("xDS configuration refused", "error", applyErr)
		}
	}
	for _, t := range types {
		st := c.state[t]
		if st.pending == nil {
			continue
		}
		pend := st.pending
		st.pending = nil
		if applyErr != nil {
			st.rejected, st.rejectErr = pend.version, applyErr.Error()
			if err := p.send(t, applyErr); err != nil {
				return err
			}
			continue
		}
		st.accepted, st.version, st.known = pend.res, pend.version, true
		st.rejected, st.rejectErr = "", ""
		if err := p.send(t, nil); err != nil {
			return err
		}
	}
	if applyErr != nil {
		// The subscriptions follow the configuration kept.
		return p.resubscribe()
	}
	return nil
}
