package cliflags

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// NewFlagSet returns a flag set for the command name that reports nothing
// itself: Parse does the reporting.
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// Parse parses args into fs. When it returns ok false the command is over
// and code is its exit code: 0 after -h (help went to stdout), 1 after a
// bad flag (the error and help went to stderr).
func Parse(fs *flag.FlagSet, args []string, help string, stdout, stderr io.Writer) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		PrintUsage(stdout, fs, help)
		return 0, false
	default:
		fmt.Fprintln(stderr, err)
		PrintUsage(stderr, fs, help)
		return 1, false
	}
}

// PrintUsage writes help, then fs's flags, to w.
func PrintUsage(w io.Writer, fs *flag.FlagSet, help string) {
	fmt.Fprintln(w, strings.Trim(help, "\n"))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nOptions:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// Verb is one subcommand of a noun, as "get" of "kv".
type Verb struct {
	Name     string
	Synopsis string
	Run      func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Dispatch runs the verb named by args[0]. With no verb it prints the
// noun's usage to stderr and returns 1; with -h, to stdout and returns 0.
func Dispatch(ctx context.Context, noun, help string, verbs []Verb, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		nounUsage(stderr, noun, help, verbs)
		return 1
	}
	switch args[0] {
	case "-h", "-help", "--help":
		nounUsage(stdout, noun, help, verbs)
		return 0
	}
	for _, v := range verbs {
		if v.Name == args[0] {
			return v.Run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "trellis %s: unknown subcommand %q\n", noun, args[0])
	nounUsage(stderr, noun, help, verbs)
	return 1
}

func nounUsage(w io.Writer, noun, help string, verbs []Verb) {
	fmt.Fprintf(w, "Usage: trellis %s <subcommand> [options] [args]\n\n", noun)
	fmt.Fprintln(w, strings.Trim(help, "\n"))
	fmt.Fprintln(w, "\nSubcommands:")
	width := 0
	for _, v := range verbs {
		width = max(width, len(v.Name))
	}
	for _, v := range verbs {
		fmt.Fprintf(w, "    %-*s    %s\n", width, v.Name, v.Synopsis)
	}
}

// KeyValue is a repeatable key=value flag, as -node-meta or -meta.
type KeyValue struct {
	// Map holds what was given, nil if nothing.
	Map map[string]string
}

func (f *KeyValue) String() string { return "" }

// Set adds one key=value pair; a later value for a key replaces an earlier.
func (f *KeyValue) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	if f.Map == nil {
		f.Map = map[string]string{}
	}
	f.Map[k] = v
	return nil
}

// NoArgs reports whether fs was given no positional arguments; when it
// was, it says so on stderr, as Consul's commands do.
func NoArgs(fs *flag.FlagSet, stderr io.Writer) bool {
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "Too many arguments (expected 0, got %d)\n", fs.NArg())
		return false
	}
	return true
}
