// Package agentctl implements the commands that act on the running agent
// itself and its membership: `trellis reload`, `leave`, `join` and
// `force-leave`.
package agentctl

import (
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const reloadHelp = `
Usage: trellis reload [options]

  Makes the agent reload its configuration files: the services and checks
  they define are replaced. Prints "Configuration reload triggered".
`

// Reload runs `trellis reload`.
func Reload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, "reload", reloadHelp, "Error reloading", "Configuration reload triggered",
		func(a *api.Agent) error { return a.Reload() })
}

const leaveHelp = `
Usage: trellis leave [options]

  Makes the agent leave the cluster gracefully and shut down. Prints
  "Graceful leave complete".
`

// Leave runs `trellis leave`.
func Leave(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, "leave", leaveHelp, "Error leaving", "Graceful leave complete",
		func(a *api.Agent) error { return a.Leave() })
}

// run is a command that takes no arguments and makes one agent call.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, name, help, failure, success string,
	call func(*api.Agent) error) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet(name)
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, help, stdout, stderr); !ok {
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
	if err := call(client.Agent()); err != nil {
		return cliflags.Report(stderr, failure, err)
	}
	fmt.Fprintln(stdout, success)
	return 0
}

const joinHelp = `
Usage: trellis join [options] ADDRESS...

  Makes the agent join the cluster through the gossip (serf LAN) address
  of one or more members. Prints "Successfully joined cluster by
  contacting N nodes."
`

// Join runs `trellis join`.
func Join(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("join")
	h.Flags(fs)
	wan := fs.Bool("wan", false, "Join the WAN pool (servers only).")
	if code, ok := cliflags.Parse(fs, args, joinHelp, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "At least one address to join must be specified.")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	joined := 0
	for _, addr := range fs.Args() {
		if err := client.Agent().Join(addr, *wan); err != nil {
			fmt.Fprintf(stderr, "Error joining address '%s': %s\n", addr, err)
			continue
		}
		joined++
	}
	if joined == 0 {
		fmt.Fprintln(stderr, "Failed to join any nodes.")
		return 1
	}
	fmt.Fprintf(stdout, "Successfully joined cluster by contacting %d nodes.\n", joined)
	return 0
}

const forceLeaveHelp = `
Usage: trellis force-leave [options] NODE

  Marks a failed member as left, so that it stops being reconnected to and
  leaves the catalog. With -prune it is also removed from the member list
  at once.
`

// ForceLeave runs `trellis force-leave`.
func ForceLeave(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("force-leave")
	h.Flags(fs)
	prune := fs.Bool("prune", false, "Remove the member from the member list entirely.")
	if code, ok := cliflags.Parse(fs, args, forceLeaveHelp, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "A single node name must be specified (got %d arguments).\n", fs.NArg())
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	if err := client.Agent().ForceLeaveOptions(fs.Arg(0), api.ForceLeaveOpts{Prune: *prune}, nil); err != nil {
		return cliflags.Report(stderr, "Error force leaving", err)
	}
	return 0
}
