package structs

import "time"

// AutopilotConfig is the cluster's autopilot configuration: the body of
// GET and PUT /v1/operator/autopilot/configuration, and the row the state
// store keeps once an operator has set it. Durations encode as Go
// duration strings ("200ms"), as Consul's ReadableDuration.
//
// RedundancyZoneTag, DisableUpgradeMigration and UpgradeVersionTag are
// Consul Enterprise settings: they are stored and returned, and have no
// effect.
type AutopilotConfig struct {
	// CleanupDeadServers removes failed servers from the raft
	// configuration (and forces them out of gossip).
	CleanupDeadServers bool
	// LastContactThreshold is how long a server may go without word from
	// the leader and still count as healthy.
	LastContactThreshold Duration
	// MaxTrailingLogs is how many log entries a server may be behind the
	// leader and still count as healthy.
	MaxTrailingLogs uint64
	// MinQuorum is the number of voters below which dead servers are no
	// longer removed.
	MinQuorum uint
	// ServerStabilizationTime is how long a new server must be healthy
	// before it may be promoted to a voter.
	ServerStabilizationTime Duration

	RedundancyZoneTag       string
	DisableUpgradeMigration bool
	UpgradeVersionTag       string

	// CreateIndex and ModifyIndex are the raft indexes of the first and
	// the last write; both are 0 while the defaults of the leader's agent
	// config are in force. PUT ignores them (?cas= names the index).
	CreateIndex uint64
	ModifyIndex uint64
}

// AutopilotHealthReply is the body of GET /v1/operator/autopilot/health
// (consul/api's OperatorHealthReply). The status is 200 when Healthy and
// 429 otherwise, as Consul's.
type AutopilotHealthReply struct {
	// Healthy is true when every server is.
	Healthy bool
	// FailureTolerance is how many healthy voters could fail without
	// losing the quorum.
	FailureTolerance int
	Servers          []AutopilotServerHealth
}

// AutopilotServerHealth is one server of an AutopilotHealthReply
// (consul/api's ServerHealth).
type AutopilotServerHealth struct {
	ID      string // raft ID
	Name    string // node name
	Address string // raft (server port) address
	// SerfStatus is the server's gossip status: alive, failed, left or
	// none.
	SerfStatus  string
	Version     string
	Leader      bool
	LastContact Duration // since the server last heard from the leader
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	Voter       bool
	// StableSince is when Healthy last changed.
	StableSince time.Time
}

// AutopilotState is the body of GET /v1/operator/autopilot/state
// (consul/api's AutopilotState).
type AutopilotState struct {
	Healthy                    bool
	FailureTolerance           int
	OptimisticFailureTolerance int
	Servers                    map[string]*AutopilotServer // by raft ID
	Leader                     string
	Voters                     []string
}

// AutopilotServer is one server of an AutopilotState (consul/api's
// AutopilotServer).
type AutopilotServer struct {
	ID          string
	Name        string
	Address     string
	NodeStatus  string // alive, failed, left or none
	Version     string
	LastContact Duration
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	StableSince time.Time
	ReadReplica bool
	// Status is the server's raft role: leader, voter, non-voter,
	// staging or none.
	Status   string
	Meta     map[string]string
	NodeType string // "voter": every server is meant to vote
}

// RaftStats is what a server reports of its own raft log to the leader's
// autopilot, over the internal RPC.
type RaftStats struct {
	// LastContact is the time since this server last heard from the
	// leader; 0 on the leader.
	LastContact Duration
	LastTerm    uint64
	LastIndex   uint64
}
