// Package rpc owns a Trellis server's RPC port (8300): a Mux that carries
// raft and the internal gRPC service on one TCP port, the raft stream
// layer over it, and the forwarding RPC by which an agent hands an HTTP
// API request to a server.
//
// # Port
//
// Every connection to the port names its protocol in its first byte:
//
//	0x01 (RaftByte)  raft's network transport; the byte is consumed
//	'P'  (GRPCByte)  gRPC: the first byte of the HTTP/2 client preface,
//	                 replayed to the gRPC server
//
// Any other first byte, or none within MuxConfig.FirstByteTimeout (10s),
// closes the connection. Further protocols (TLS, for one) get their own
// byte.
//
// # Forwarding
//
// The gRPC service trellis.rpc.Forward has one unary method, HTTP, that
// takes an HTTPRequest and returns an HTTPResponse, both encoded with
// msgpack (no .proto: the service is described by hand and the codec is
// passed to the server and to each call, never registered globally). The
// server runs the request through the same http.Handler that serves the
// HTTP API; the RPC's context is the request's, so a blocking query lasts
// as long as the forwarder waits and ends when it gives up.
//
// # Example
//
// A server:
//
//	mux, err := rpc.Listen("10.0.0.1:8300")
//	if err != nil { ... }
//	trans := mux.RaftTransport(3, 10*time.Second, hclogger)
//	// raft.NewRaft(conf, fsm, logs, stable, snaps, trans) ...
//	srv := rpc.NewServer(apiHandler)
//	go srv.Serve(mux.GRPCListener())
//	...
//	srv.Stop()
//	raftNode.Shutdown().Error() // closes trans
//	mux.Close()
//
// An agent forwarding a request it cannot answer itself:
//
//	client := rpc.NewClient(rpc.ClientConfig{})
//	defer client.Close()
//	func(w http.ResponseWriter, r *http.Request) {
//		req, err := rpc.RequestFromHTTP(r, rpc.MaxBodyBytes)
//		if errors.Is(err, rpc.ErrBodyTooLarge) { w.WriteHeader(413); return }
//		req.Datacenter = dc
//		resp, err := client.ForwardHTTP(r.Context(), "10.0.0.1:8300", req)
//		if err != nil { ...try another server, or 500... }
//		resp.Write(w)
//	}
//
// The connections are not encrypted yet: the port must be reachable only
// by the cluster.
package rpc
