// Package cli dispatches the trellis command line to its subcommands.
// Each subcommand is a function of (ctx, args, stdout, stderr) returning
// an exit code, so it can be tested without a process.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/cli/agentctl"
	"github.com/trellis-mesh/trellis/internal/cli/catalog"
	configcmd "github.com/trellis-mesh/trellis/internal/cli/config"
	"github.com/trellis-mesh/trellis/internal/cli/connect"
	"github.com/trellis-mesh/trellis/internal/cli/intention"
	"github.com/trellis-mesh/trellis/internal/cli/kv"
	"github.com/trellis-mesh/trellis/internal/cli/lock"
	"github.com/trellis-mesh/trellis/internal/cli/members"
	"github.com/trellis-mesh/trellis/internal/cli/operator"
	"github.com/trellis-mesh/trellis/internal/cli/services"
	"github.com/trellis-mesh/trellis/internal/cli/snapshot"
	"github.com/trellis-mesh/trellis/internal/version"
)

// Command is a subcommand.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// commands is the command table. Nouns with verbs ("kv get") dispatch
// their verbs themselves. The process's stdin is handed to the commands
// that read it here, so that tests can pass their own.
func commands() map[string]Command {
	return map[string]Command{
		"agent":       agent.Command,
		"catalog":     catalog.Run,
		"config":      configcmd.Command(os.Stdin),
		"intention":   intention.Run,
		"connect":     connect.Command(os.Stdin),
		"kv":          kv.Command(os.Stdin),
		"leave":       agentctl.Leave,
		"join":        agentctl.Join,
		"force-leave": agentctl.ForceLeave,
		"lock":        lock.Command(os.Stdin),
		"members":     members.Run,
		"operator":    operator.Run,
		"reload":      agentctl.Reload,
		"services":    services.Run,
		"snapshot":    snapshot.Run,
		"version":     versionCommand,
	}
}

// Run runs the subcommand named by args[0].
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(stderr, cmds)
		return 1
	}
	if args[0] == "-v" || args[0] == "-version" || args[0] == "--version" {
		args[0] = "version"
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "trellis: unknown command %q\n", args[0])
		usage(stderr, cmds)
		return 1
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]Command) {
	fmt.Fprintln(w, "Usage: trellis <command> [args]")
	fmt.Fprintln(w, "\nAvailable commands are:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "    %s\n", n)
	}
}

func versionCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	for i, a := range args {
		if a == "-format=json" || (a == "-format" && i+1 < len(args) && args[i+1] == "json") {
			fmt.Fprintf(stdout, "{\n  \"Version\": %q,\n  \"Revision\": \"\",\n  \"Prerelease\": \"\"\n}\n", version.Version)
			return 0
		}
	}
	fmt.Fprintln(stdout, version.Human())
	return 0
}
