package snapshot

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/hashicorp/raft"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	snap "github.com/trellis-mesh/trellis/internal/snapshot"
	"github.com/trellis-mesh/trellis/internal/state"
)

const inspectHelp = `
Usage: trellis snapshot inspect [options] FILE

  Verifies the snapshot archive in FILE and prints its metadata and how
  many records of each type it holds, most numerous first. No agent is
  needed.

      $ trellis snapshot inspect backup.snap
      ID           2-6-1795308240583
      Size         981
      Index        6
      Term         2
      Version      1

      Type          Count
      ----          -----
      index         5
      checks        1
      kvs           1
      nodes         1
      services      1
      ----          -----
      Total         9

  Size is the size in bytes of the state in the archive, uncompressed.
`

// inspectOutput is the -format json output: the layout of
// `consul snapshot inspect -format json`, without the byte sizes Trellis
// does not record per type.
type inspectOutput struct {
	Meta  inspectMeta
	Stats []typeStat
}

type inspectMeta struct {
	ID      string
	Size    int64
	Index   uint64
	Term    uint64
	Version raft.SnapshotVersion
}

type typeStat struct {
	Name  string
	Count int
}

func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cliflags.NewFlagSet("snapshot inspect")
	format := fs.String("format", "pretty", "Output `format`: pretty or json.")
	if code, ok := cliflags.Parse(fs, args, inspectHelp, stdout, stderr); !ok {
		return code
	}
	if *format != "pretty" && *format != "json" {
		fmt.Fprintf(stderr, "Error! Unknown format %q: want pretty or json\n", *format)
		return 1
	}
	file, ok := fileArg(fs, stderr)
	if !ok {
		return 1
	}
	out, err := inspectFile(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *format == "json" {
		b, err := json.MarshalIndent(out, "", "   ")
		if err != nil {
			fmt.Fprintf(stderr, "Error encoding output: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	printPretty(stdout, out)
	return 0
}

// inspectFile verifies the archive at path and counts its records. Its
// errors are whole messages for the user, naming path.
func inspectFile(path string) (*inspectOutput, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("Error opening snapshot file: %w", err)
	}
	defer f.Close()
	a, err := snap.Read(f)
	if err != nil {
		return nil, fmt.Errorf("Error verifying snapshot file %s: %w", path, err)
	}
	defer a.Close()
	r, err := a.State()
	if err != nil {
		return nil, fmt.Errorf("Error reading snapshot file %s: %w", path, err)
	}
	counts, err := state.Inspect(r)
	if err != nil {
		return nil, fmt.Errorf("Error inspecting snapshot file %s: %w", path, err)
	}
	out := &inspectOutput{
		Meta: inspectMeta{ID: a.Meta.ID, Size: a.Meta.Size, Index: a.Meta.Index, Term: a.Meta.Term, Version: a.Meta.Version},
		// Never null in JSON, even for an empty state.
		Stats: []typeStat{},
	}
	for name, n := range counts {
		out.Stats = append(out.Stats, typeStat{Name: name, Count: n})
	}
	// Consul lists the types largest first; Trellis has counts, not sizes.
	slices.SortFunc(out.Stats, func(a, b typeStat) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

func printPretty(w io.Writer, out *inspectOutput) {
	tw := tabwriter.NewWriter(w, 0, 0, 6, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", out.Meta.ID)
	fmt.Fprintf(tw, "Size\t%d\n", out.Meta.Size)
	fmt.Fprintf(tw, "Index\t%d\n", out.Meta.Index)
	fmt.Fprintf(tw, "Term\t%d\n", out.Meta.Term)
	fmt.Fprintf(tw, "Version\t%d\n", out.Meta.Version)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 6, ' ', 0)
	fmt.Fprintln(tw, "Type\tCount")
	fmt.Fprintln(tw, "----\t-----")
	total := 0
	for _, s := range out.Stats {
		fmt.Fprintf(tw, "%s\t%d\n", s.Name, s.Count)
		total += s.Count
	}
	fmt.Fprintln(tw, "----\t-----")
	fmt.Fprintf(tw, "Total\t%d\n", total)
	tw.Flush()
}
