// Package config implements `trellis config`: write, read, list and
// delete of config entries, with the flags, output and messages of
// `consul config`. Files are HCL or JSON, keys in CamelCase or snake_case.
package config

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl"
	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	"github.com/trellis-mesh/trellis/internal/configentry"
)

const help = `
  Writes, reads, lists and deletes config entries: proxy-defaults,
  service-defaults, service-intentions and mesh.
`

// Command returns `trellis config <subcommand>`; "write -" reads stdin.
func Command(stdin io.Reader) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cmd{stdin: stdin}
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return cliflags.Dispatch(ctx, "config", help, []cliflags.Verb{
			{Name: "delete", Synopsis: "Delete a centralized config entry", Run: c.delete},
			{Name: "list", Synopsis: "List centralized config entries of a given kind", Run: c.list},
			{Name: "read", Synopsis: "Read a centralized config entry", Run: c.read},
			{Name: "write", Synopsis: "Create or update a centralized config entry", Run: c.write},
		}, args, stdout, stderr)
	}
}

type cmd struct {
	stdin io.Reader
}

const writeHelp = `
Usage: trellis config write [options] FILE

  Writes the config entry in FILE (HCL or JSON; "-" reads stdin). The
  entry is checked before it is sent: an unknown key or a bad value is
  reported naming the field.

      $ trellis config write web-defaults.hcl
`

// ParseEntry reads a config entry from HCL or JSON text, as Consul's CLI
// does, and checks it.
func ParseEntry(data []byte) (configentry.Entry, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return configentry.DecodeJSON(trimmed)
	}
	var doc map[string]any
	if err := hcl.Decode(&doc, string(data)); err != nil {
		return nil, fmt.Errorf("Failed to decode config entry input: %v", err)
	}
	return configentry.Decode(doc)
}

func (c *cmd) write(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("config write")
	h.Flags(fs)
	cas := fs.Bool("cas", false, "Perform a Check-And-Set operation. Specifying this value also requires the -modify-index flag to be set.")
	modifyIndex := fs.Uint64("modify-index", 0, "Unsigned integer representing the ModifyIndex of the config entry. This is used in combination with the -cas flag.")
	if code, ok := cliflags.Parse(fs, args, writeHelp, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "Must provide exactly one positional argument to specify the config entry to write\n")
		return 1
	}
	var data []byte
	var err error
	if src := fs.Arg(0); src == "-" {
		if c.stdin == nil {
			fmt.Fprintln(stderr, "Failed to read stdin: no stdin")
			return 1
		}
		data, err = io.ReadAll(c.stdin)
	} else {
		data, err = os.ReadFile(src)
	}
	if err != nil {
		fmt.Fprintf(stderr, "Failed to read config entry input: %v\n", err)
		return 1
	}
	e, err := ParseEntry(data)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to decode config entry input: %v\n", err)
		return 1
	}
	entry, err := toAPI(e)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to decode config entry input: %v\n", err)
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	var written bool
	if *cas {
		written, _, err = client.ConfigEntries().CAS(entry, *modifyIndex, nil)
	} else {
		written, _, err = client.ConfigEntries().Set(entry, nil)
	}
	if err != nil {
		return cliflags.Report(stderr, fmt.Sprintf("Error writing config entry %s/%s", e.GetKind(), e.GetName()), err)
	}
	if !written {
		fmt.Fprintf(stderr, "Config entry not updated: %s/%s\n", e.GetKind(), e.GetName())
		return 1
	}
	fmt.Fprintf(stdout, "Config entry written: %s/%s\n", e.GetKind(), e.GetName())
	return 0
}

// toAPI converts an entry to the official client's type, through its
// JSON, which both share.
func toAPI(e configentry.Entry) (api.ConfigEntry, error) {
	data, err := configentry.Marshal(e)
	if err != nil {
		return nil, err
	}
	return api.DecodeConfigEntryFromJSON(data)
}

// kindName adds -kind and, with needName, -name.
func kindName(fs *flag.FlagSet, needName bool) (*string, *string) {
	kind := fs.String("kind", "", "The kind of configuration to read.")
	var name *string
	if needName {
		name = fs.String("name", "", "The name of configuration to read.")
	}
	return kind, name
}

const readHelp = `
Usage: trellis config read -kind <kind> -name <name> [options]

  Prints a config entry as JSON.
`

func (c *cmd) read(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("config read")
	h.Flags(fs)
	h.StaleFlag(fs)
	kind, name := kindName(fs, true)
	if code, ok := cliflags.Parse(fs, args, readHelp, stdout, stderr); !ok {
		return code
	}
	if *kind == "" {
		fmt.Fprintln(stderr, "Must specify the -kind parameter")
		return 1
	}
	if *name == "" {
		fmt.Fprintln(stderr, "Must specify the -name parameter")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	var raw json.RawMessage
	if _, err := client.Raw().Query("/v1/config/"+*kind+"/"+*name, &raw, h.QueryOptions()); err != nil {
		return cliflags.Report(stderr, "Error reading config entry "+*kind+"/"+*name, err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "    "); err != nil {
		fmt.Fprintf(stderr, "Error formatting config entry: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, buf.String())
	return 0
}

const listHelp = `
Usage: trellis config list -kind <kind> [options]

  Lists the names of the config entries of a kind, one a line.
`

func (c *cmd) list(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("config list")
	h.Flags(fs)
	h.StaleFlag(fs)
	kind, _ := kindName(fs, false)
	if code, ok := cliflags.Parse(fs, args, listHelp, stdout, stderr); !ok {
		return code
	}
	if *kind == "" {
		fmt.Fprintln(stderr, "Must specify the -kind parameter")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	var entries []struct{ Name string }
	if _, err := client.Raw().Query("/v1/config/"+*kind, &entries, h.QueryOptions()); err != nil {
		return cliflags.Report(stderr, "Error listing config entries for kind "+*kind, err)
	}
	for _, e := range entries {
		fmt.Fprintln(stdout, e.Name)
	}
	return 0
}

const deleteHelp = `
Usage: trellis config delete -kind <kind> -name <name> [options]

  Deletes a config entry; with -cas, only if -modify-index is its
  ModifyIndex.
`

func (c *cmd) delete(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("config delete")
	h.Flags(fs)
	kind, name := kindName(fs, true)
	cas := fs.Bool("cas", false, "Perform a Check-And-Set operation. Specifying this value also requires the -modify-index flag to be set.")
	modifyIndex := fs.Uint64("modify-index", 0, "Unsigned integer representing the ModifyIndex of the config entry. This is used in combination with the -cas flag.")
	if code, ok := cliflags.Parse(fs, args, deleteHelp, stdout, stderr); !ok {
		return code
	}
	switch {
	case *kind == "":
		fmt.Fprintln(stderr, "Must specify the -kind parameter")
		return 1
	case *name == "":
		fmt.Fprintln(stderr, "Must specify the -name parameter")
		return 1
	case *cas && *modifyIndex == 0:
		fmt.Fprintln(stderr, "Must specify a -modify-index greater than 0 with -cas")
		return 1
	case !*cas && *modifyIndex != 0:
		fmt.Fprintln(stderr, "Cannot specify -modify-index without -cas")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	deleted := true
	var err error
	if *cas {
		deleted, _, err = client.ConfigEntries().DeleteCAS(*kind, *name, *modifyIndex, nil)
	} else {
		_, err = client.ConfigEntries().Delete(*kind, *name, nil)
	}
	if err != nil {
		return cliflags.Report(stderr, fmt.Sprintf("Error deleting config entry %s/%s", *kind, *name), err)
	}
	if !deleted {
		fmt.Fprintf(stderr, "Config entry not deleted: %s/%s\n", *kind, *name)
		return 1
	}
	fmt.Fprintf(stdout, "Config entry deleted: %s/%s\n", *kind, *name)
	return 0
}
