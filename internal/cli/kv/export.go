package kv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

// entry is one key in the export format, shared with `consul kv export`:
// a JSON array of these, values base64-encoded.
type entry struct {
	Key   string `json:"key"`
	Flags uint64 `json:"flags"`
	Value string `json:"value"`
}

const exportHelp = `
Usage: trellis kv export [options] [PREFIX]

  Prints every key under PREFIX (all keys without it) as a JSON array of
  {"key", "flags", "value"} objects, values base64-encoded: the format
  "trellis kv import" and "consul kv import" read.
`

func (c *cmd) export(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("kv export")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, exportHelp, stdout, stderr); !ok {
		return code
	}
	var prefix string
	switch fs.NArg() {
	case 0:
	case 1:
		prefix = cleanKey(fs.Arg(0))
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	pairs, _, err := client.KV().List(prefix, h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error querying keys", err)
	}
	out := make([]entry, 0, len(pairs))
	for _, p := range pairs {
		out = append(out, entry{Key: p.Key, Flags: p.Flags, Value: base64.StdEncoding.EncodeToString(p.Value)})
	}
	b, err := json.MarshalIndent(out, "", "\t")
	if err != nil {
		fmt.Fprintf(stderr, "Error exporting KV data: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(b))
	return 0
}

const importHelp = `
Usage: trellis kv import [options] [DATA]

  Writes the keys in DATA, in the format of "trellis kv export". DATA is
  the JSON itself, "@path" for a file's content, or "-" (the default) for
  stdin. Each key written is printed as "Imported: KEY".
`

func (c *cmd) importKV(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("kv import")
	h.Flags(fs)
	prefix := fs.String("prefix", "", "Prepend this `prefix` to every key imported.")
	if code, ok := cliflags.Parse(fs, args, importHelp, stdout, stderr); !ok {
		return code
	}
	dataArg := "-"
	switch fs.NArg() {
	case 0:
	case 1:
		dataArg = fs.Arg(0)
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return 1
	}
	data, err := c.readData(dataArg)
	if err != nil {
		fmt.Fprintf(stderr, "Error! %v\n", err)
		return 1
	}
	var entries []entry
	if err := json.Unmarshal(data, &entries); err != nil {
		fmt.Fprintf(stderr, "Cannot unmarshal data: %v\n", err)
		return 1
	}
	// Decode every value before writing any, so bad input writes nothing.
	pairs := make([]*api.KVPair, len(entries))
	for i, e := range entries {
		v, err := base64.StdEncoding.DecodeString(e.Value)
		if err != nil {
			fmt.Fprintf(stderr, "Error base 64 decoding value for key %s: %v\n", e.Key, err)
			return 1
		}
		key := cleanKey(*prefix + e.Key)
		if key == "" {
			fmt.Fprintf(stderr, "Error! Entry %d has an empty key\n", i)
			return 1
		}
		pairs[i] = &api.KVPair{Key: key, Flags: e.Flags, Value: v}
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	for _, p := range pairs {
		if _, err := client.KV().Put(p, nil); err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error! Failed writing data for key %s", p.Key), err)
		}
		fmt.Fprintf(stdout, "Imported: %s\n", p.Key)
	}
	return 0
}
