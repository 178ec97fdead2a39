// Package intention implements `trellis intention`: create, delete, get,
// list, check and match of service intentions, with the arguments, output
// and exit codes of `consul intention` (check exits 0 when allowed, 2 when
// denied).
package intention

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Creates, deletes, reads and checks intentions: which services may
  connect to which. An intention is one source of the destination's
  service-intentions config entry.
`

// Run runs `trellis intention <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "intention", help, []cliflags.Verb{
		{Name: "check", Synopsis: "Check whether a connection between two services is allowed", Run: check},
		{Name: "create", Synopsis: "Create intentions for service connections", Run: create},
		{Name: "delete", Synopsis: "Delete an intention", Run: del},
		{Name: "get", Synopsis: "Show information about an intention", Run: get},
		{Name: "list", Synopsis: "List all intentions", Run: list},
		{Name: "match", Synopsis: "Show intentions that match a source or destination", Run: match},
	}, args, stdout, stderr)
}

// pair reads the SRC DST arguments.
func pair(fs *flag.FlagSet, stderr io.Writer) (string, string, bool) {
	a := fs.Args()
	if len(a) != 2 {
		fmt.Fprintf(stderr, "Error: command requires exactly two arguments: SRC DST (got %d)\n", len(a))
		return "", "", false
	}
	return a[0], a[1], true
}

const createHelp = `
Usage: trellis intention create [options] SRC DST

  Creates an intention from SRC to DST, allowing by default (-deny to
  deny). An existing intention is replaced only with -replace.
`

func create(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention create")
	h.Flags(fs)
	allow := fs.Bool("allow", false, "Create an intention that allows when matched.")
	deny := fs.Bool("deny", false, "Create an intention that denies when matched.")
	replace := fs.Bool("replace", false, "Replace the intention if it already exists.")
	desc := fs.String("description", "", "A description of the intention.")
	meta := &cliflags.KeyValue{}
	fs.Var(meta, "meta", "Metadata to set on the intention, formatted as key=value. May be given more than once.")
	if code, ok := cliflags.Parse(fs, args, createHelp, stdout, stderr); !ok {
		return code
	}
	if *allow && *deny {
		fmt.Fprintln(stderr, "Only one of -allow or -deny may be specified")
		return 1
	}
	src, dst, ok := pair(fs, stderr)
	if !ok {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	c := client.Connect()
	if !*replace {
		old, _, err := c.IntentionGetExact(src, dst, nil)
		if err != nil {
			return cliflags.Report(stderr, "Error checking for an existing intention", err)
		}
		if old != nil {
			fmt.Fprintf(stderr, "Error creating intention %q: an intention from %s to %s already exists; use -replace to replace it\n",
				src+" => "+dst, src, dst)
			return 1
		}
	}
	ixn := &api.Intention{SourceName: src, DestinationName: dst, Action: api.IntentionActionAllow,
		Description: *desc, Meta: meta.Map}
	if *deny {
		ixn.Action = api.IntentionActionDeny
	}
	if _, err := c.IntentionUpsert(ixn, nil); err != nil {
		return cliflags.Report(stderr, "Error creating intention "+ixn.String(), err)
	}
	fmt.Fprintf(stdout, "Created: %s\n", ixn.String())
	return 0
}

const deleteHelp = `
Usage: trellis intention delete [options] SRC DST

  Deletes the intention from SRC to DST.
`

func del(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention delete")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, deleteHelp, stdout, stderr); !ok {
		return code
	}
	src, dst, ok := pair(fs, stderr)
	if !ok {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	if _, err := client.Connect().IntentionDeleteExact(src, dst, nil); err != nil {
		return cliflags.Report(stderr, "Error deleting intention", err)
	}
	fmt.Fprintln(stdout, "Intention deleted.")
	return 0
}

const getHelp = `
Usage: trellis intention get [options] SRC DST

  Shows the intention from SRC to DST.
`

func get(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention get")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, getHelp, stdout, stderr); !ok {
		return code
	}
	src, dst, ok := pair(fs, stderr)
	if !ok {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	ixn, _, err := client.Connect().IntentionGetExact(src, dst, h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error reading the intention", err)
	}
	if ixn == nil {
		fmt.Fprintf(stderr, "Error reading the intention: intention from %s to %s not found\n", src, dst)
		return 1
	}
	t := cliflags.NewTable(stdout)
	fmt.Fprintf(t, "Source:\t%s\n", ixn.SourceString())
	fmt.Fprintf(t, "Destination:\t%s\n", ixn.DestinationString())
	if len(ixn.Permissions) > 0 {
		fmt.Fprintf(t, "Permissions:\t%d\n", len(ixn.Permissions))
	} else {
		fmt.Fprintf(t, "Action:\t%s\n", ixn.Action)
	}
	if ixn.Description != "" {
		fmt.Fprintf(t, "Description:\t%s\n", ixn.Description)
	}
	fmt.Fprintf(t, "Precedence:\t%d\n", ixn.Precedence)
	for k, v := range ixn.Meta {
		fmt.Fprintf(t, "Meta[%s]:\t%s\n", k, v)
	}
	if err := t.Flush(); err != nil {
		return 1
	}
	return 0
}

const listHelp = `
Usage: trellis intention list [options]

  Lists every intention, most specific first.
`

func list(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention list")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, listHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	ixns, _, err := client.Connect().Intentions(h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error listing intentions", err)
	}
	if len(ixns) == 0 {
		fmt.Fprintln(stdout, "There are no intentions.")
		return 0
	}
	t := cliflags.NewTable(stdout)
	fmt.Fprintln(t, "Source\tAction\tDestination\tPrecedence")
	for _, ixn := range ixns {
		action := string(ixn.Action)
		if len(ixn.Permissions) > 0 {
			action = strconv.Itoa(len(ixn.Permissions)) + " permissions"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%d\n", ixn.SourceString(), action, ixn.DestinationString(), ixn.Precedence)
	}
	if err := t.Flush(); err != nil {
		return 1
	}
	return 0
}

const checkHelp = `
Usage: trellis intention check [options] SRC DST

  Checks whether a connection from SRC to DST is allowed by the
  intentions (and the default when none matches). Prints Allowed and
  exits 0, or prints Denied and exits 2; other errors exit 1.
`

func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention check")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, checkHelp, stdout, stderr); !ok {
		return code
	}
	src, dst, ok := pair(fs, stderr)
	if !ok {
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	allowed, _, err := client.Connect().IntentionCheck(&api.IntentionCheck{Source: src, Destination: dst}, nil)
	if err != nil {
		return cliflags.Report(stderr, "Error checking the connection", err)
	}
	if allowed {
		fmt.Fprintln(stdout, "Allowed")
		return 0
	}
	fmt.Fprintln(stdout, "Denied")
	return 2
}

const matchHelp = `
Usage: trellis intention match [options] NAME

  Shows the intentions that apply to NAME as a destination (default) or,
  with -source, as a source, in the order they are evaluated.
`

func match(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("intention match")
	h.Flags(fs)
	h.StaleFlag(fs)
	bySource := fs.Bool("source", false, "Match intentions with the given source.")
	byDest := fs.Bool("destination", false, "Match intentions with the given destination.")
	if code, ok := cliflags.Parse(fs, args, matchHelp, stdout, stderr); !ok {
		return code
	}
	if *bySource && *byDest {
		fmt.Fprintln(stderr, "Only one of -source or -destination may be specified")
		return 1
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "Error: command requires exactly one argument: NAME (got %d)\n", fs.NArg())
		return 1
	}
	name := fs.Arg(0)
	by := api.IntentionMatchDestination
	if *bySource {
		by = api.IntentionMatchSource
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	m, _, err := client.Connect().IntentionMatch(&api.IntentionMatch{By: by, Names: []string{name}}, h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error matching the intentions", err)
	}
	for _, ixn := range m[name] {
		fmt.Fprintln(stdout, ixn.String())
	}
	return 0
}
