// Package operator implements `trellis operator`: cluster maintenance
// for operators, for now the raft peer set (`operator raft list-peers`),
// with the output of `consul operator`.
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
  Inspects the Raft subsystem: the set of servers that replicate the
  state, and which of them leads.
`

// Run runs `trellis operator <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "operator", help, []cliflags.Verb{
		{Name: "raft", Synopsis: "Inspects the Raft subsystem and its peer set", Run: raft},
	}, args, stdout, stderr)
}

func raft(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "operator raft", raftHelp, []cliflags.Verb{
		{Name: "list-peers", Synopsis: "Display the current Raft peer configuration", Run: listPeers},
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
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return 1
	}
	client, done, err := h.Client(ctx)
	if err != nil {
		fmt.Fprintln(stderr, err)
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
