package kv

import (
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const deleteHelp = `
Usage: trellis kv delete [options] KEY_OR_PREFIX

  Removes KEY, or with -recurse every key under the prefix. With -cas the
  key is removed only if its modify index is still -modify-index.
`

func (c *cmd) delete(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("kv delete")
	h.Flags(fs)
	cas := fs.Bool("cas", false, "Check-and-set: delete only if the key's modify index is -modify-index.")
	modifyIndex := fs.Uint64("modify-index", 0, "With -cas, the modify `index` the key must have.")
	recurse := fs.Bool("recurse", false, "Delete every key under the prefix.")
	if code, ok := cliflags.Parse(fs, args, deleteHelp, stdout, stderr); !ok {
		return code
	}
	var key string
	switch fs.NArg() {
	case 0:
	case 1:
		key = cleanKey(fs.Arg(0))
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1, got %d)\n", fs.NArg())
		return 1
	}
	switch {
	case key == "" && !*recurse:
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	case *cas && *recurse:
		fmt.Fprintln(stderr, "Cannot specify both -cas and -recurse!")
		return 1
	case *cas && *modifyIndex == 0:
		fmt.Fprintln(stderr, "Must specify -modify-index with -cas!")
		return 1
	case *modifyIndex != 0 && !*cas:
		fmt.Fprintln(stderr, "Cannot specify -modify-index without -cas!")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	kv := client.KV()
	switch {
	case *recurse:
		if _, err := kv.DeleteTree(key, nil); err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error! Did not delete prefix %s", key), err)
		}
		fmt.Fprintf(stdout, "Success! Deleted keys with prefix: %s\n", key)
	case *cas:
		ok, _, err := kv.DeleteCAS(&api.KVPair{Key: key, ModifyIndex: *modifyIndex}, nil)
		if err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error! Did not delete key %s", key), err)
		}
		if !ok {
			fmt.Fprintf(stderr, "Error! Did not delete key %s: CAS failed\n", key)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Deleted key: %s\n", key)
	default:
		if _, err := kv.Delete(key, nil); err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error! Did not delete key %s", key), err)
		}
		fmt.Fprintf(stdout, "Success! Deleted key: %s\n", key)
	}
	return 0
}
