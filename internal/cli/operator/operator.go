// Package operator implements `trellis operator`: cluster maintenance
// for operators: the raft peer set (`operator raft list-peers`,
// `remove-peer`, `transfer-leader`) and autopilot (`operator autopilot
// get-config`, `set-config`, `state`), with the flags, messages and
// output of `consul operator`.
package operator

import (
	"context"
	"fmt"
	"io"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Provides cluster-level tools for operators, such as interacting with
  the Raft subsystem.
`

const raftHelp = `
  Inspects and changes the Raft subsystem: the set of servers that
  replicate the state, and which of them leads.
`

// Run runs `trellis operator <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "operator", help, []cliflags.Verb{
		{Name: "autopilot", Synopsis: "Shows and changes Autopilot's configuration and state", Run: autopilotCmd},
		{Name: "raft", Synopsis: "Inspects and changes the Raft subsystem and its peer set", Run: raft},
	}, args, stdout, stderr)
}

func raft(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "operator raft", raftHelp, []cliflags.Verb{
		{Name: "list-peers", Synopsis: "Display the current Raft peer configuration", Run: listPeers},
		{Name: "remove-peer", Synopsis: "Remove a server from the Raft peer configuration", Run: removePeer},
		{Name: "transfer-leader", Synopsis: "Transfer Raft leadership to another server", Run: transferLeader},
	}, args, stdout, stderr)
}

const listPeersHelp = `
Usage: trellis operator raft list-peers [options]

  Displays the current Raft peer configuration, one server per line:

      Node  ID  Address  State  Voter  RaftProtocol

  State is "leader" or "follower". With -stale any server may answer,
  which helps when the cluster has no leader.
`

func listPeers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("operator raft list-peers")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, listPeersHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	cfg, err := client.Operator().RaftGetConfiguration(h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Failed to retrieve raft configuration", err)
	}
	tw := cliflags.NewTable(stdout)
	fmt.Fprintln(tw, "Node\tID\tAddress\tState\tVoter\tRaftProtocol")
	for _, s := range cfg.Servers {
		state := "follower"
		if s.Leader {
			state = "leader"
		}
		proto := s.ProtocolVersion
		if proto == "" {
			proto = "<=1" // as consul, for servers too old to say
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", s.Node, s.ID, s.Address, state, s.Voter, proto)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "Error writing output: %v\n", err)
		return 1
	}
	return 0
}

const removePeerHelp = `
Usage: trellis operator raft remove-peer -id ID | -address IP:port [options]

  Removes the server with the given -id, or at the given -address, from
  the Raft configuration. Give exactly one of the two.

  This is for a server that is gone but was left behind in the Raft
  configuration, where it still counts towards the quorum. A server that
  is still running is better made to leave ("trellis leave" on it).
`

func removePeer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	var id, address string
	fs := cliflags.NewFlagSet("operator raft remove-peer")
	h.Flags(fs)
	fs.StringVar(&id, "id", "", "The `ID` of the server to remove from the Raft configuration.")
	fs.StringVar(&address, "address", "", "The `IP:port` of the server to remove from the Raft configuration.")
	if code, ok := cliflags.Parse(fs, args, removePeerHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	// Checked here rather than left to the agent's 400, so that a usage
	// mistake needs no agent; the wording is consul's.
	switch {
	case id == "" && address == "":
		fmt.Fprintln(stderr, "Error removing peer: an address or id is required for the peer to remove")
		cliflags.PrintUsage(stderr, fs, removePeerHelp)
		return 1
	case id != "" && address != "":
		fmt.Fprintln(stderr, "Error removing peer: cannot give both an address and id")
		cliflags.PrintUsage(stderr, fs, removePeerHelp)
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	var err error
	if address != "" {
		err = client.Operator().RaftRemovePeerByAddress(address, nil)
	} else {
		err = client.Operator().RaftRemovePeerByID(id, nil)
	}
	if err != nil {
		return cliflags.Report(stderr, "Error removing peer", err)
	}
	if address != "" {
		fmt.Fprintf(stdout, "Removed peer with address %q\n", address)
	} else {
		fmt.Fprintf(stdout, "Removed peer with id %q\n", id)
	}
	return 0
}

const transferLeaderHelp = `
Usage: trellis operator raft transfer-leader [-id ID] [options]

  Asks the leader to hand leadership to the voter with the given -id, or
  without -id to whichever voter is most up to date, and waits for the
  handover. It fails when there is no other voter to take over.
`

func transferLeader(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	var id string
	fs := cliflags.NewFlagSet("operator raft transfer-leader")
	h.Flags(fs)
	fs.StringVar(&id, "id", "", "The `ID` of the server to transfer leadership to. Defaults to any up-to-date voter.")
	if code, ok := cliflags.Parse(fs, args, transferLeaderHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	reply, err := client.Operator().RaftLeaderTransfer(id, nil)
	if err != nil {
		return cliflags.Report(stderr, "Error transferring leadership", err)
	}
	if !reply.Success {
		fmt.Fprintln(stderr, "Error transferring leadership: Failed to transfer leadership")
		return 1
	}
	fmt.Fprintln(stdout, "Success")
	return 0
}
