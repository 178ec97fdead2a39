package agent

import (
	"context"
	"log/slog"

	"github.com/trellis-mesh/trellis/internal/proxycfg"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// startProxyConfig starts the proxy snapshot manager (internal/proxycfg)
// that feeds the xDS server: a snapshot per local connect-proxy, rebuilt
// on every change to what it was built from. Until a proxy registers it
// is one goroutine waiting for the services to change (two on a client
// agent): it asks for no leaf and sends no query. Its goroutines end at
// Close.
//
// On a server (a dev agent included) the manager reads the store, which
// holds the datacenter's catalog and config entries. A client agent has
// no store: it reads a mirror of what its proxies need, copied from the
// servers by blocking queries (proxycfg_client.go). An agent with Connect
// disabled gets no snapshots, nor does one with nothing to publish to (no
// gRPC port, so no xDS server, and Options.ProxySnapshots unset).
func (a *Agent) startProxyConfig(ca *caClient) {
	out := a.opts.ProxySnapshots
	if out == nil && a.XDS() != nil {
		out = xdsPublisher{a.XDS(), a.logger}
	}
	if out == nil || !a.cfg.Connect.Enabled {
		return
	}
	src := proxycfg.Sources{
		Store:       a.store,
		CA:          ca,
		Services:    a,
		Datacenter:  a.cfg.Datacenter,
		Address:     a.cfg.AdvertiseAddr,
		DefaultDeny: a.cfg.ACLEnabled && a.cfg.ACLDefaultPolicy == "deny",
		Logger:      a.logger,
	}
	var client *clientSources
	switch {
	case a.srv != nil && a.store != nil:
	case a.rpcClient != nil:
		client = newClientSources(a, a.serverReads, a.cfg.Datacenter, a.logger)
		src.Store, src.Services = client.mirror.store, client
	default:
		return
	}
	m := proxycfg.New(src, out)
	ctx, cancel := context.WithCancel(context.Background())
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		<-a.done
		cancel()
	}()
	go func() {
		defer a.wg.Done()
		m.Run(ctx)
	}()
	if client != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			client.Run(ctx)
		}()
	}
}

// xdsPublisher hands snapshots to the xDS server, in both renderings: for
// the proxy's sidecar and for the gRPC clients that identify as the
// proxy (proxyless). A snapshot the generator refuses (it should not
// happen for the sidecar; for gRPC clients, one upstream name in two
// datacenters) is logged: the proxy, or its gRPC clients, keep the
// configuration they have.
type xdsPublisher struct {
	x      *xds.Server
	logger *slog.Logger
}

func (p xdsPublisher) Update(snap *proxycfg.Snapshot) {
	if err := p.x.Update(snap); err != nil {
		p.logger.Error("xds: configuration not sent", "proxy", snap.ProxyID, "error", err)
	}
	if err := p.x.UpdateProxyless(snap); err != nil {
		p.logger.Error("xds: configuration of proxyless gRPC clients not sent", "proxy", snap.ProxyID, "error", err)
	}
}

func (p xdsPublisher) Remove(proxyID string) { p.x.Remove(proxyID) }
