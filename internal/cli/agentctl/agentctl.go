// Package agentctl implements the commands that act on the running agent
// itself: `trellis reload` and `trellis leave`.
package agentctl

import (
	"context"
	"fmt"
	"github.com/hashicorp/consul/api"
	"io"

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
	if err := call(client.Agent()); err != nil {
		return cliflags.Report(stderr, failure, err)
	}
	fmt.Fprintln(stdout, success)
	return 0
}
