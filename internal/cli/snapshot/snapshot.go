// Package snapshot implements `trellis snapshot`: save the servers' whole
// state to an archive file, restore it from one, and inspect one offline,
// with the output and messages of `consul snapshot`.
package snapshot

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Saves, restores and inspects atomic, point-in-time snapshots of the
  state of the servers: the catalog, key/value entries and sessions. A
  snapshot is a gzipped tar archive (meta.json, state.bin, SHA256SUMS)
  whose checksums are verified before it is kept or restored.
`

// Run runs `trellis snapshot <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "snapshot", help, []cliflags.Verb{
		{Name: "inspect", Synopsis: "Displays information about a Trellis snapshot file", Run: inspect},
		{Name: "restore", Synopsis: "Restores snapshot of Trellis server state", Run: restore},
		{Name: "save", Synopsis: "Saves snapshot of Trellis server state", Run: save},
	}, args, stdout, stderr)
}

// fileArg returns the one FILE argument, or reports why there is not
// exactly one.
func fileArg(fs *flag.FlagSet, stderr io.Writer) (string, bool) {
	switch fs.NArg() {
	case 0:
		fmt.Fprintln(stderr, "Missing FILE argument")
		return "", false
	case 1:
		return fs.Arg(0), true
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return "", false
	}
}
