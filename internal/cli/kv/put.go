package kv

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const putHelp = `
Usage: trellis kv put [options] KEY [DATA]

  Writes DATA to KEY. DATA is the value itself, "@path" for a file's
  content, or "-" for stdin; without DATA the value is empty.

  -cas writes only if the key's modify index is still -modify-index (0:
  only if the key does not exist). -acquire and -release take or give up
  the key's lock for -session.
`

func (c *cmd) put(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("kv put")
	h.Flags(fs)
	acquire := fs.Bool("acquire", false, "Take the key's lock for -session; the write happens only if it is obtained.")
	release := fs.Bool("release", false, "Give up the key's lock held by -session.")
	b64 := fs.Bool("base64", false, "DATA is base64-encoded; decode it before writing.")
	cas := fs.Bool("cas", false, "Check-and-set: write only if the key's modify index is -modify-index.")
	modifyIndex := fs.Uint64("modify-index", 0, "With -cas, the modify `index` the key must have (0: key must not exist).")
	flags := fs.Uint64("flags", 0, "Opaque unsigned `integer` stored with the key.")
	session := fs.String("session", "", "The session `ID` for -acquire and -release.")
	if code, ok := cliflags.Parse(fs, args, putHelp, stdout, stderr); !ok {
		return code
	}
	var key, dataArg string
	switch fs.NArg() {
	case 0:
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	case 1:
		key = fs.Arg(0)
	case 2:
		key, dataArg = fs.Arg(0), fs.Arg(1)
	default:
		fmt.Fprintf(stderr, "Too many arguments (expected 1 or 2, got %d)\n", fs.NArg())
		return 1
	}
	key = cleanKey(key)
	if key == "" {
		fmt.Fprintln(stderr, "Error! Missing KEY argument")
		return 1
	}
	switch {
	case *modifyIndex != 0 && !*cas:
		fmt.Fprintln(stderr, "Cannot specify -modify-index without -cas!")
		return 1
	case *cas && (*acquire || *release):
		fmt.Fprintln(stderr, "Cannot specify -cas with -acquire or -release!")
		return 1
	case *acquire && *release:
		fmt.Fprintln(stderr, "Cannot specify both -acquire and -release!")
		return 1
	case (*acquire || *release) && *session == "":
		fmt.Fprintln(stderr, "Error! Missing -session (required with -acquire and -release)")
		return 1
	case *session != "" && !*acquire && !*release:
		fmt.Fprintln(stderr, "Cannot specify -session without -acquire or -release!")
		return 1
	}
	var data []byte
	if dataArg != "" {
		d, err := c.readData(dataArg)
		if err != nil {
			fmt.Fprintf(stderr, "Error! %v\n", err)
			return 1
		}
		data = d
	}
	if *b64 {
		d, err := base64.StdEncoding.DecodeString(string(data))
		if err != nil {
			fmt.Fprintf(stderr, "Error! Cannot base 64 decode data: %v\n", err)
			return 1
		}
		data = d
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	kv := client.KV()
	pair := &api.KVPair{Key: key, Value: data, Flags: *flags, ModifyIndex: *modifyIndex, Session: *session}
	switch {
	case *cas:
		ok, _, err := kv.CAS(pair, nil)
		if err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error! Did not write to %s", key), err)
		}
		if !ok {
			fmt.Fprintf(stderr, "Error! Did not write to %s: CAS failed\n", key)
			return 1
		}
		fmt.Fprintf(stdout, "Success! Data written to: %s\n", key)
	case *acquire:
		ok, _, err := kv.Acquire(pair, nil)
		if err != nil {
			return cliflags.Report(stderr, "Error! Failed writing data", err)
		}
		if !ok {
			fmt.Fprintln(stderr, "Error! Did not acquire lock")
			return 1
		}
		fmt.Fprintf(stdout, "Success! Lock acquired on: %s\n", key)
	case *release:
		ok, _, err := kv.Release(pair, nil)
		if err != nil {
			return cliflags.Report(stderr, "Error! Failed writing data", err)
		}
		if !ok {
			fmt.Fprintln(stderr, "Error! Did not release lock")
			return 1
		}
		fmt.Fprintf(stdout, "Success! Lock released on: %s\n", key)
	default:
		if _, err := kv.Put(pair, nil); err != nil {
			return cliflags.Report(stderr, "Error! Failed writing data", err)
		}
		fmt.Fprintf(stdout, "Success! Data written to: %s\n", key)
	}
	return 0
}
