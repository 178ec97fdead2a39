package snapshot

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	snap "github.com/trellis-mesh/trellis/internal/snapshot"
)

const restoreHelp = `
Usage: trellis snapshot restore [options] FILE

  Restores the snapshot archive in FILE, as written by "trellis snapshot
  save", replacing the whole state of the servers with it. FILE is
  verified first: a damaged archive is an error and the agent is not
  contacted.

      $ trellis snapshot restore backup.snap
      Restored snapshot

  This is a disaster recovery tool: everything written since the snapshot
  was taken is lost.
`

func restore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("snapshot restore")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, restoreHelp, stdout, stderr); !ok {
		return code
	}
	file, ok := fileArg(fs, stderr)
	if !ok {
		return 1
	}
	f, err := os.Open(file)
	if err != nil {
		fmt.Fprintf(stderr, "Error opening snapshot file: %v\n", err)
		return 1
	}
	defer f.Close()
	a, err := snap.Read(f)
	if err != nil {
		fmt.Fprintf(stderr, "Error verifying snapshot file %s: %v\n", file, err)
		return 1
	}
	a.Close()
	// The agent verifies the upload again, so a file changed since the
	// check above is refused rather than restored.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		fmt.Fprintf(stderr, "Error reading snapshot file %s: %v\n", file, err)
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	if err := client.Snapshot().Restore(nil, f); err != nil {
		return cliflags.Report(stderr, "Error restoring snapshot", err)
	}
	fmt.Fprintln(stdout, "Restored snapshot")
	return 0
}
