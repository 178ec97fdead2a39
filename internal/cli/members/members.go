// Package members implements `trellis members`: the agent's view of the
// cluster's members, as a table in the layout of `consul members`.
package members

import (
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
Usage: trellis members [options]

  Lists the members of the cluster as the agent sees them:

      Node  Address  Status  Type  Build  Protocol  DC  Partition  Segment

  With -detailed, each member's tags are listed instead of the summary.
`

// Run runs `trellis members`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("members")
	h.Flags(fs)
	detailed := fs.Bool("detailed", false, "Show each member's tags.")
	wan := fs.Bool("wan", false, "List the WAN members instead of the LAN ones.")
	status := fs.String("status", "", "Only show members whose status matches this regular `expression` (alive, leaving, left, failed).")
	if code, ok := cliflags.Parse(fs, args, help, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	var statusRE *regexp.Regexp
	if *status != "" {
		re, err := regexp.Compile(*status)
		if err != nil {
			fmt.Fprintf(stderr, "Failed to compile status regexp: %v\n", err)
			return 1
		}
		statusRE = re
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	ms, err := client.Agent().Members(*wan)
	if err != nil {
		return cliflags.Report(stderr, "Error retrieving members", err)
	}
	var shown []*api.AgentMember
	for _, m := range ms {
		if statusRE == nil || statusRE.MatchString(statusName(m.Status)) {
			shown = append(shown, m)
		}
	}
	if len(shown) == 0 {
		// As consul: nothing matched the filter is a failure.
		return 2
	}
	sort.Slice(shown, func(i, j int) bool { return shown[i].Name < shown[j].Name })
	tw := cliflags.NewTable(stdout)
	if *detailed {
		fmt.Fprintln(tw, "Node\tAddress\tStatus\tTags")
		for _, m := range shown {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, address(m), statusName(m.Status), tagList(m.Tags))
		}
	} else {
		fmt.Fprintln(tw, "Node\tAddress\tStatus\tType\tBuild\tProtocol\tDC\tPartition\tSegment")
		for _, m := range shown {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, address(m), statusName(m.Status),
				memberType(m.Tags), build(m.Tags), m.Tags["vsn"], m.Tags["dc"], partition(m.Tags), segment(m.Tags))
		}
	}
	tw.Flush()
	return 0
}

func address(m *api.AgentMember) string {
	return net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
}

// statusName names a serf member status.
func statusName(s int) string {
	switch s {
	case 0:
		return "none"
	case 1:
		return "alive"
	case 2:
		return "leaving"
	case 3:
		return "left"
	case 4:
		return "failed"
	}
	return "unknown"
}

func memberType(tags map[string]string) string {
	switch tags["role"] {
	case "consul":
		return "server"
	case "node":
		return "client"
	}
	return "unknown"
}

// build is the version from the build tag, without the revision after ':'.
func build(tags map[string]string) string {
	b, _, _ := strings.Cut(tags["build"], ":")
	return b
}

func partition(tags map[string]string) string {
	if p := tags["ap"]; p != "" {
		return p
	}
	return "default"
}

// segment: a server serves every segment; a client is in its own or the
// default one.
func segment(tags map[string]string) string {
	if tags["role"] == "consul" {
		return "<all>"
	}
	if s := tags["segment"]; s != "" {
		return s
	}
	return "<default>"
}

func tagList(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return strings.Join(parts, ",")
}
