package operator

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const autopilotHelp = `
  Shows and changes the configuration of Autopilot, which watches the
  servers' health from the leader and removes dead servers from the Raft
  configuration, and shows its view of the servers.
`

func autopilotCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "operator autopilot", autopilotHelp, []cliflags.Verb{
		{Name: "get-config", Synopsis: "Display the current Autopilot configuration", Run: autopilotGetConfig},
		{Name: "set-config", Synopsis: "Modify the current Autopilot configuration", Run: autopilotSetConfig},
		{Name: "state", Synopsis: "Display the current Autopilot state", Run: autopilotState},
	}, args, stdout, stderr)
}

const getConfigHelp = `
Usage: trellis operator autopilot get-config [options]

  Displays the current Autopilot configuration, one setting a line:

      CleanupDeadServers = true
      LastContactThreshold = 200ms
      ...

  Until an operator sets one, it is the leader's agent configuration.
`

func autopilotGetConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("operator autopilot get-config")
	h.Flags(fs)
	h.StaleFlag(fs)
	if code, ok := cliflags.Parse(fs, args, getConfigHelp, stdout, stderr); !ok {
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
	c, err := client.Operator().AutopilotGetConfiguration(h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error querying Autopilot configuration", err)
	}
	fmt.Fprintf(stdout, "CleanupDeadServers = %t\n", c.CleanupDeadServers)
	fmt.Fprintf(stdout, "LastContactThreshold = %s\n", c.LastContactThreshold.String())
	fmt.Fprintf(stdout, "MaxTrailingLogs = %d\n", c.MaxTrailingLogs)
	fmt.Fprintf(stdout, "MinQuorum = %d\n", c.MinQuorum)
	fmt.Fprintf(stdout, "ServerStabilizationTime = %s\n", c.ServerStabilizationTime.String())
	fmt.Fprintf(stdout, "RedundancyZoneTag = %q\n", c.RedundancyZoneTag)
	fmt.Fprintf(stdout, "DisableUpgradeMigration = %t\n", c.DisableUpgradeMigration)
	fmt.Fprintf(stdout, "UpgradeVersionTag = %q\n", c.UpgradeVersionTag)
	return 0
}

const setConfigHelp = `
Usage: trellis operator autopilot set-config [options]

  Changes the settings given as flags and keeps the others. The change
  is a check-and-set on the configuration just read: if another change
  came in between, nothing is written and the command fails; run it
  again.
`

func autopilotSetConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("operator autopilot set-config")
	h.Flags(fs)
	cleanup := fs.Bool("cleanup-dead-servers", false,
		"Whether to remove dead servers from the Raft configuration: `true|false`.")
	lastContact := fs.Duration("last-contact-threshold", 0,
		"How long a server may go without contact from the leader and still be healthy, as `200ms`.")
	trailing := fs.Uint64("max-trailing-logs", 0,
		"How many log entries a server may trail the leader by and still be healthy.")
	minQuorum := fs.Uint("min-quorum", 0,
		"The number of servers below which Autopilot no longer removes dead servers.")
	stabilization := fs.Duration("server-stabilization-time", 0,
		"How long a new server must be healthy before it may become a voter, as `10s`.")
	zoneTag := fs.String("redundancy-zone-tag", "", "Node-meta key for redundancy zones (stored; no effect in Trellis).")
	noMigration := fs.Bool("disable-upgrade-migration", false, "Disable upgrade migrations: `true|false` (stored; no effect in Trellis).")
	versionTag := fs.String("upgrade-version-tag", "", "Node-meta key of the version for upgrade migrations (stored; no effect in Trellis).")
	if code, ok := cliflags.Parse(fs, args, setConfigHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"last-contact-threshold", "server-stabilization-time"} {
		if d := fs.Lookup(name).Value.(flag.Getter).Get().(time.Duration); set[name] && d < 0 {
			fmt.Fprintf(stderr, "Error: -%s must not be negative, got %v\n", name, d)
			return 1
		}
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	op := client.Operator()
	c, err := op.AutopilotGetConfiguration(nil)
	if err != nil {
		return cliflags.Report(stderr, "Error querying Autopilot configuration", err)
	}
	if set["cleanup-dead-servers"] {
		c.CleanupDeadServers = *cleanup
	}
	if set["last-contact-threshold"] {
		c.LastContactThreshold = api.NewReadableDuration(*lastContact)
	}
	if set["max-trailing-logs"] {
		c.MaxTrailingLogs = *trailing
	}
	if set["min-quorum"] {
		c.MinQuorum = *minQuorum
	}
	if set["server-stabilization-time"] {
		c.ServerStabilizationTime = api.NewReadableDuration(*stabilization)
	}
	if set["redundancy-zone-tag"] {
		c.RedundancyZoneTag = *zoneTag
	}
	if set["disable-upgrade-migration"] {
		c.DisableUpgradeMigration = *noMigration
	}
	if set["upgrade-version-tag"] {
		c.UpgradeVersionTag = *versionTag
	}
	ok, err = op.AutopilotCASConfiguration(c, nil)
	if err != nil {
		return cliflags.Report(stderr, "Error setting Autopilot configuration", err)
	}
	if !ok {
		fmt.Fprintln(stderr, "Configuration could not be atomically updated, please try again")
		return 1
	}
	fmt.Fprintln(stdout, "Configuration updated!")
	return 0
}

const stateHelp = `
Usage: trellis operator autopilot state [options]

  Displays the leader's Autopilot state: whether the servers are healthy,
  how many could fail without an outage, the voters, and each server's
  health as the leader last saw it.
`

func autopilotState(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("operator autopilot state")
	h.Flags(fs)
	format := fs.String("format", "pretty", "Output `format`: pretty or json.")
	if code, ok := cliflags.Parse(fs, args, stateHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	if *format != "pretty" && *format != "json" {
		fmt.Fprintf(stderr, "Error: unknown format %q: want pretty or json\n", *format)
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	st, err := client.Operator().AutopilotState(nil)
	if err != nil {
		return cliflags.Report(stderr, "Error querying Autopilot state", err)
	}
	if *format == "json" {
		b, err := json.MarshalIndent(st, "", "    ")
		if err != nil {
			fmt.Fprintf(stderr, "Error encoding the Autopilot state: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	fmt.Fprint(stdout, formatState(st))
	return 0
}

// formatState is the pretty output of `operator autopilot state`, laid
// out as consul's: the cluster's health, the voters, then each server,
// by ID.
func formatState(st *api.AutopilotState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Healthy:                      %t\n", st.Healthy)
	fmt.Fprintf(&b, "Failure Tolerance:            %d\n", st.FailureTolerance)
	fmt.Fprintf(&b, "Optimistic Failure Tolerance: %d\n", st.OptimisticFailureTolerance)
	fmt.Fprintf(&b, "Leader:                       %s\n", st.Leader)
	b.WriteString("Voters:\n")
	for _, id := range st.Voters {
		fmt.Fprintf(&b, "   %s\n", id)
	}
	ids := make([]string, 0, len(st.Servers))
	for id := range st.Servers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	b.WriteString("Servers:\n")
	for _, id := range ids {
		s := st.Servers[id]
		fmt.Fprintf(&b, "   %s\n", id)
		fmt.Fprintf(&b, "      Name:            %s\n", s.Name)
		fmt.Fprintf(&b, "      Address:         %s\n", s.Address)
		fmt.Fprintf(&b, "      Version:         %s\n", s.Version)
		fmt.Fprintf(&b, "      Status:          %s\n", s.Status)
		fmt.Fprintf(&b, "      Node Type:       %s\n", s.NodeType)
		fmt.Fprintf(&b, "      Node Status:     %s\n", s.NodeStatus)
		fmt.Fprintf(&b, "      Healthy:         %t\n", s.Healthy)
		fmt.Fprintf(&b, "      Last Contact:    %s\n", s.LastContact.String())
		fmt.Fprintf(&b, "      Last Term:       %d\n", s.LastTerm)
		fmt.Fprintf(&b, "      Last Index:      %d\n", s.LastIndex)
		if len(s.Meta) > 0 {
			keys := make([]string, 0, len(s.Meta))
			for k := range s.Meta {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			b.WriteString("      Meta\n")
			for _, k := range keys {
				fmt.Fprintf(&b, "         %q: %q\n", k, s.Meta[k])
			}
		}
	}
	return b.String()
}
