// Package agentctl implements the commands that act on the running agent
// itself: `trellis reload` and `trellis leave`.
package agentctl

import (
	"context"
	"fmt"
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
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("reload")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, reloadHelp, stdout, stderr); !ok {
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
	if err := client.Agent().Reload(); err != nil {
		return cliflags.Report(stderr, "Error reloading", err)
	}
	fmt.Fprintln(stdout, "Configuration reload triggered")
	return 0
}

const leaveHelp = `
Usage: trellis leave [options]

  Makes the agent leave the cluster gracefully and shut down. Prints
  "Graceful leave complete".
`

// Leave runs `trellis leave`.
func Leave(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("leave")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, leaveHelp, stdout, stderr); !ok {
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
	if err := client.Agent().Leave(); err != nil {
		return cliflags.Report(stderr, "Error leaving", err)
	}
	fmt.Fprintln(stdout, "Graceful leave complete")
	return 0
}
