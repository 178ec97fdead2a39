package kv

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const getHelp = `
Usage: trellis kv get [options] [KEY_OR_PREFIX]

  Prints the value of KEY. With -recurse, prints every key under the
  prefix as "key:value", one per line. With -keys, lists the keys under
  the prefix, up to the next -separator. -detailed prints each entry's
  metadata too. A missing key is an error (exit 1); an empty listing is not.
`

func (c *cmd) get(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("kv get")
	h.Flags(fs)
	h.StaleFlag(fs)
	b64 := fs.Bool("base64", false, "Base64-encode the values printed.")
	detailed := fs.Bool("detailed", false, "Print each entry's metadata as well as its value.")
	keys := fs.Bool("keys", false, "List the keys under the prefix instead of values.")
	recurse := fs.Bool("recurse", false, "Print every key under the prefix, as key:value.")
	sep := fs.String("separator", "/", "With -keys, list keys only up to the next `separator` (\"\" lists all).")
	if code, ok := cliflags.Parse(fs, args, getHelp, stdout, stderr); !ok {
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
	if key == "" && !*keys && !*recurse {
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	}
	if *keys && *recurse {
		fmt.Fprintln(stderr, "Error! Cannot specify both -keys and -recurse")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	kv := client.KV()
	show := func(v []byte) string {
		if *b64 {
			return base64.StdEncoding.EncodeToString(v)
		}
		return string(v)
	}
	switch {
	case *keys:
		list, _, err := kv.Keys(key, *sep, h.QueryOptions())
		if err != nil {
			return cliflags.Report(stderr, "Error listing keys", err)
		}
		for _, k := range list {
			fmt.Fprintln(stdout, k)
		}
	case *recurse:
		pairs, _, err := kv.List(key, h.QueryOptions())
		if err != nil {
			return cliflags.Report(stderr, "Error querying keys", err)
		}
		for i, p := range pairs {
			if *detailed {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				printDetailed(stdout, p, show)
				continue
			}
			fmt.Fprintf(stdout, "%s:%s\n", p.Key, show(p.Value))
		}
	default:
		p, _, err := kv.Get(key, h.QueryOptions())
		if err != nil {
			return cliflags.Report(stderr, "Error querying key", err)
		}
		if p == nil {
			fmt.Fprintf(stderr, "Error! No key exists at: %s\n", key)
			return 1
		}
		if *detailed {
			printDetailed(stdout, p, show)
		} else {
			fmt.Fprintln(stdout, show(p.Value))
		}
	}
	return 0
}

// printDetailed prints an entry's fields, one per line, names aligned.
func printDetailed(w io.Writer, p *api.KVPair, show func([]byte) string) {
	session := p.Session
	if session == "" {
		session = "-"
	}
	tw := tabwriter.NewWriter(w, 0, 2, 6, ' ', 0)
	fmt.Fprintf(tw, "CreateIndex\t%d\n", p.CreateIndex)
	fmt.Fprintf(tw, "Flags\t%d\n", p.Flags)
	fmt.Fprintf(tw, "Key\t%s\n", p.Key)
	fmt.Fprintf(tw, "LockIndex\t%d\n", p.LockIndex)
	fmt.Fprintf(tw, "ModifyIndex\t%d\n", p.ModifyIndex)
	fmt.Fprintf(tw, "Session\t%s\n", session)
	fmt.Fprintf(tw, "Value\t%s\n", show(p.Value))
	tw.Flush()
}
