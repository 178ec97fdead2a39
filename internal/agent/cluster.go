package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/httpapi"
	"github.com/trellis-mesh/trellis/internal/rpc"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// startMux binds the server port, which carries raft and the internal RPC,
// and returns raft's transport over it.
func (a *Agent) startMux() (*rpc.Mux, error) {
	addr := net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(max(a.cfg.ServerPort, 0)))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: server port %s: %w", addr, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	adv := &net.TCPAddr{IP: net.ParseIP(a.cfg.AdvertiseAddr), Port: port}
	a.serverPort = port
	return rpc.NewMux(l, rpc.MuxConfig{Advertise: adv, Logger: a.logger}), nil
}

func raftTransportLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "raft-net", Level: hclog.Off})
}

// startRPCServer serves forwarded API requests on the mux.
func (a *Agent) startRPCServer() {
	if a.mux == nil {
		return
	}
	a.rpcServer = rpc.NewServer(a.api)
	l := a.mux.GRPCListener()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.rpcServer.Serve(l); err != nil {
			a.logger.Debug("rpc server stopped", "error", err)
		}
	}()
}

// forwarder sends API requests to servers over the internal RPC.
type forwarder struct{ client *rpc.Client }

// Forward implements httpapi.Forwarder: it tries each address until one
// answers. Only a server that could not be reached at all is skipped for
// the next: one that may have served the request ends the attempt. When
// none was reached, the error is an rpc.NotSentError.
func (f forwarder) Forward(w http.ResponseWriter, r *http.Request, addrs []string, final bool) error {
	req, err := rpc.RequestFromHTTP(r, rpc.MaxBodyBytes)
	if err != nil {
		return structs.BadRequestError{Reason: err.Error()}
	}
	if final {
		req.Header[httpapi.ForwardedHeader] = []string{"1"}
	}
	var unreached error
	for _, addr := range addrs {
		resp, err := f.client.ForwardHTTP(r.Context(), addr, req)
		if err == nil {
			return resp.Write(w)
		}
		if !rpc.Unreachable(err) || r.Context().Err() != nil {
			return fmt.Errorf("rpc error forwarding to %s: %w", addr, err)
		}
		unreached = errors.Join(unreached, fmt.Errorf("rpc error forwarding to %s: %w", addr, err))
	}
	return rpc.NotSentError{Err: unreached}
}

// applyCatalog writes a catalog change for this agent: through raft here
// when this server leads, else through the leader's API over the RPC.
func (a *Agent) applyCatalog(t fsm.MessageType, msg any) error {
	if a.srv == nil {
		path := "/v1/catalog/register"
		if t == fsm.DeregisterRequestType {
			path = "/v1/catalog/deregister"
		}
		return a.remoteJSON(http.MethodPut, path, nil, msg, nil)
	}
	if a.srv.IsLeader() || a.rpcClient == nil {
		_, err := a.srv.Apply(t, msg)
		return err
	}
	leader := a.srv.Leader()
	if leader == "" {
		return server.ErrNotLeader
	}
	path := "/v1/catalog/register"
	if t == fsm.DeregisterRequestType {
		path = "/v1/catalog/deregister"
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	ctx, cancel := a.opContext(30 * time.Second)
	defer cancel()
	resp, err := a.rpcClient.ForwardHTTP(ctx, leader, &rpc.HTTPRequest{
		Method: http.MethodPut, Path: path, Body: body,
		Header: map[string][]string{httpapi.ForwardedHeader: {"1"}, "Content-Type": {"application/json"}},
	})
	if err != nil {
		return fmt.Errorf("agent: sync through leader %s: %w", leader, err)
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("agent: sync through leader %s: %d %s", leader, resp.Status, bytes.TrimSpace(resp.Body))
	}
	return nil
}
