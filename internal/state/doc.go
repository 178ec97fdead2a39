// Package state owns the agent's replicated data: the catalog (nodes,
// services, checks), the KV store, sessions, the nodes' network
// coordinates, the autopilot configuration an operator set, and the
// per-table and per-service indexes that blocking queries wait on.
// It is a go-memdb database written only by the raft FSM; every read takes
// a WatchSet so that a blocking query wakes on exactly the rows it read.
//
// Write methods take the raft index of the log entry that causes them, so
// that CreateIndex and ModifyIndex equal the raft index as in Consul.
package state
