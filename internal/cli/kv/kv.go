// Package kv implements `trellis kv`: get, put, delete, export and import
// of keys in the KV store, with the flags, output and messages of
// `consul kv`.
package kv

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Reads and writes the key/value store. Keys are written without a leading
  slash; a leading slash given on the command line is dropped.
`

// Command returns `trellis kv <subcommand>`. stdin is read by "put KEY -"
// and by "import" with "-" or no argument.
func Command(stdin io.Reader) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cmd{stdin: stdin}
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return cliflags.Dispatch(ctx, "kv", help, []cliflags.Verb{
			{Name: "delete", Synopsis: "Removes data from the KV store", Run: c.delete},
			{Name: "export", Synopsis: "Exports a tree from the KV store as JSON", Run: c.export},
			{Name: "get", Synopsis: "Retrieves or lists data from the KV store", Run: c.get},
			{Name: "import", Synopsis: "Imports a tree stored as JSON to the KV store", Run: c.importKV},
			{Name: "put", Synopsis: "Sets or updates data in the KV store", Run: c.put},
		}, args, stdout, stderr)
	}
}

// cmd carries what the kv subcommands need besides their arguments.
type cmd struct {
	stdin io.Reader
}

// readData resolves a data argument: "@path" is the file's content, "-"
// is stdin, anything else is itself.
func (c *cmd) readData(arg string) ([]byte, error) {
	switch {
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("Failed to read file: %w", err)
		}
		return b, nil
	case arg == "-":
		if c.stdin == nil {
			return nil, fmt.Errorf("Failed to read stdin: no stdin")
		}
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return nil, fmt.Errorf("Failed to read stdin: %w", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}

// cleanKey drops a leading slash, which the KV API does not accept.
func cleanKey(k string) string { return strings.TrimPrefix(k, "/") }
