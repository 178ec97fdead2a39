// Package catalog implements `trellis catalog`: read-only listings of the
// catalog's datacenters, nodes and services, in the layouts of
// `consul catalog`.
package catalog

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Lists what the catalog holds: datacenters, nodes and services.
`

// Run runs `trellis catalog <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "catalog", help, []cliflags.Verb{
		{Name: "datacenters", Synopsis: "Lists all known datacenters", Run: datacenters},
		{Name: "nodes", Synopsis: "Lists all nodes in the given datacenter", Run: nodes},
		{Name: "services", Synopsis: "Lists all registered services in a datacenter", Run: services},
	}, args, stdout, stderr)
}

const datacentersHelp = `
Usage: trellis catalog datacenters [options]

  Lists the known datacenters, one per line.
`

func datacenters(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("catalog datacenters")
	h.Flags(fs)
	if code, ok := cliflags.Parse(fs, args, datacentersHelp, stdout, stderr); !ok {
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
	dcs, err := client.Catalog().Datacenters()
	if err != nil {
		return cliflags.Report(stderr, "Error listing datacenters", err)
	}
	if len(dcs) == 0 {
		fmt.Fprintln(stderr, "No datacenters found")
		return 1
	}
	for _, dc := range dcs {
		fmt.Fprintln(stdout, dc)
	}
	return 0
}

const nodesHelp = `
Usage: trellis catalog nodes [options]

  Lists the nodes in the catalog:

      Node  ID  Address  DC

  ID is shortened to its first 8 characters unless -detailed is given,
  which also adds each node's tagged addresses and metadata.
`

func nodes(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("catalog nodes")
	h.Flags(fs)
	h.StaleFlag(fs)
	detailed := fs.Bool("detailed", false, "Show full node IDs, tagged addresses and metadata.")
	service := fs.String("service", "", "Only list the nodes providing this `service` (name or ID).")
	near := fs.String("near", "", "Sort by round-trip time from this `node`.")
	filter := fs.String("filter", "", "A filter `expression` on the nodes.")
	var meta cliflags.KeyValue
	fs.Var(&meta, "node-meta", "Only list nodes with this `key=value` metadata. May be repeated.")
	if code, ok := cliflags.Parse(fs, args, nodesHelp, stdout, stderr); !ok {
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
	q := h.QueryOptions()
	q.Near, q.Filter, q.NodeMeta = *near, *filter, meta.Map
	var list []*api.Node
	if *service != "" {
		svcs, _, err := client.Catalog().Service(*service, "", q)
		if err != nil {
			return cliflags.Report(stderr, "Error listing nodes for service", err)
		}
		seen := map[string]bool{}
		for _, s := range svcs {
			if seen[s.Node] {
				continue
			}
			seen[s.Node] = true
			list = append(list, &api.Node{ID: s.ID, Node: s.Node, Address: s.Address, Datacenter: s.Datacenter,
				TaggedAddresses: s.TaggedAddresses, Meta: s.NodeMeta})
		}
	} else {
		var err error
		list, _, err = client.Catalog().Nodes(q)
		if err != nil {
			return cliflags.Report(stderr, "Error listing nodes", err)
		}
	}
	if len(list) == 0 {
		fmt.Fprintln(stderr, "No nodes match the given query - try expanding your search.")
		return 0
	}
	if *near == "" {
		sort.SliceStable(list, func(i, j int) bool { return list[i].Node < list[j].Node })
	}
	tw := cliflags.NewTable(stdout)
	if *detailed {
		fmt.Fprintln(tw, "Node\tID\tAddress\tDC\tTaggedAddresses\tMeta")
	} else {
		fmt.Fprintln(tw, "Node\tID\tAddress\tDC")
	}
	for _, n := range list {
		if *detailed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, n.ID, n.Address, n.Datacenter,
				kvList(n.TaggedAddresses), kvList(n.Meta))
			continue
		}
		id := n.ID
		if len(id) > 8 {
			id = id[:8]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, id, n.Address, n.Datacenter)
	}
	tw.Flush()
	return 0
}

const servicesHelp = `
Usage: trellis catalog services [options]

  Lists the services in the catalog, one per line, sorted by name. With
  -tags, each service's tags follow its name.
`

func services(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("catalog services")
	h.Flags(fs)
	h.StaleFlag(fs)
	tags := fs.Bool("tags", false, "Show each service's tags.")
	node := fs.String("node", "", "Only list the services on this `node`.")
	filter := fs.String("filter", "", "A filter `expression` on the service instances.")
	var meta cliflags.KeyValue
	fs.Var(&meta, "node-meta", "Only list services on nodes with this `key=value` metadata. May be repeated.")
	if code, ok := cliflags.Parse(fs, args, servicesHelp, stdout, stderr); !ok {
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
	q := h.QueryOptions()
	q.NodeMeta = meta.Map
	q.Filter = *filter
	var byName map[string][]string
	if *node != "" {
		list, _, err := client.Catalog().NodeServiceList(*node, q)
		if err != nil {
			return cliflags.Report(stderr, "Error listing services for node", err)
		}
		byName = map[string][]string{}
		if list != nil {
			for _, s := range list.Services {
				byName[s.Service] = mergeTags(byName[s.Service], s.Tags)
			}
		}
	} else {
		var err error
		byName, _, err = client.Catalog().Services(q)
		if err != nil {
			return cliflags.Report(stderr, "Error listing services", err)
		}
	}
	if len(byName) == 0 {
		fmt.Fprintln(stderr, "No services match the given query - try expanding your search.")
		return 0
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	if !*tags {
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
		return 0
	}
	tw := cliflags.NewTable(stdout)
	for _, n := range names {
		t := append([]string(nil), byName[n]...)
		sort.Strings(t)
		fmt.Fprintf(tw, "%s\t%s\n", n, strings.Join(t, ","))
	}
	tw.Flush()
	return 0
}

func mergeTags(have, add []string) []string {
	for _, t := range add {
		dup := false
		for _, h := range have {
			if h == t {
				dup = true
				break
			}
		}
		if !dup {
			have = append(have, t)
		}
	}
	return have
}

// kvList renders a map as "k1=v1, k2=v2", sorted by key.
func kvList(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}
