// Package services implements `trellis services register` and
// `trellis services deregister`: adding and removing services on the local
// agent, from service definition files (HCL or JSON) or from flags.
package services

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/structs"
)

const help = `
  Registers and deregisters services on the local agent.
`

// Run runs `trellis services <subcommand>`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cliflags.Dispatch(ctx, "services", help, []cliflags.Verb{
		{Name: "deregister", Synopsis: "Deregister services with the local agent", Run: deregister},
		{Name: "register", Synopsis: "Register services with the local agent", Run: register},
	}, args, stdout, stderr)
}

const registerHelp = `
Usage: trellis services register [options] [FILE...]

  Registers the services defined in each FILE, or the one service described
  by the flags. A FILE holds a "service" block (one service) or "services"
  (a list), in HCL or JSON (chosen by a .json or .hcl extension, else by
  content), with the keys of an agent service definition in snake_case or
  CamelCase:

      service {
        name = "web"
        port = 8080
        tags = ["v1"]
        check { http = "http://localhost:8080/health"  interval = "10s" }
      }

  Each service registered is printed as "Registered service: NAME".
`

func register(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("services register")
	h.Flags(fs)
	name := fs.String("name", "", "The service's `name`. Required unless FILEs are given.")
	id := fs.String("id", "", "The service's `ID`; defaults to its name.")
	address := fs.String("address", "", "The service's `address`; defaults to the node's.")
	port := fs.Int("port", 0, "The service's `port`.")
	var tags multiFlag
	fs.Var(&tags, "tag", "A `tag` for the service. May be repeated.")
	var meta cliflags.KeyValue
	fs.Var(&meta, "meta", "Service metadata as `key=value`. May be repeated.")
	var tagged cliflags.KeyValue
	fs.Var(&tagged, "tagged-address", "A tagged address as `key=address[:port]`. May be repeated.")
	if code, ok := cliflags.Parse(fs, args, registerHelp, stdout, stderr); !ok {
		return code
	}
	flagsUsed := *name != "" || *id != "" || *address != "" || *port != 0 || len(tags) > 0 || meta.Map != nil || tagged.Map != nil
	var defs []*structs.ServiceDefinition
	switch {
	case fs.NArg() > 0 && flagsUsed:
		fmt.Fprintln(stderr, "Error: service flags (-name, -id, ...) cannot be combined with definition files")
		return 1
	case fs.NArg() > 0:
		for _, path := range fs.Args() {
			d, err := loadFile(path, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "Error: %v\n", err)
				return 1
			}
			defs = append(defs, d...)
		}
	case *name == "":
		fmt.Fprintln(stderr, "Error: a service -name or a definition FILE is required")
		return 1
	default:
		def := &structs.ServiceDefinition{ID: *id, Name: *name, Address: *address, Port: *port, Tags: tags, Meta: meta.Map}
		for k, v := range tagged.Map {
			sa, err := parseServiceAddress(v)
			if err != nil {
				fmt.Fprintf(stderr, "Error: -tagged-address %s: %v\n", k, err)
				return 1
			}
			if def.TaggedAddresses == nil {
				def.TaggedAddresses = map[string]structs.ServiceAddress{}
			}
			def.TaggedAddresses[k] = sa
		}
		defs = append(defs, def)
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	for _, d := range defs {
		// The definition goes over the wire as Trellis's own type, which
		// the agent decodes; api.AgentServiceRegistration would drop what
		// it does not model.
		if _, err := client.Raw().Write("/v1/agent/service/register", d, nil, nil); err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error registering service %q", d.Name), err)
		}
		fmt.Fprintf(stdout, "Registered service: %s\n", d.Name)
	}
	return 0
}

const deregisterHelp = `
Usage: trellis services deregister [options] FILE...
       trellis services deregister [options] -id=ID

  Deregisters the services defined in each FILE (by their ID, or name when
  they have none), or the service with the given -id, from the local agent.
  Each service removed is printed as "Deregistered service: ID".
`

func deregister(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("services deregister")
	h.Flags(fs)
	id := fs.String("id", "", "The `ID` of the service to deregister.")
	if code, ok := cliflags.Parse(fs, args, deregisterHelp, stdout, stderr); !ok {
		return code
	}
	var ids []string
	switch {
	case fs.NArg() > 0 && *id != "":
		fmt.Fprintln(stderr, "Error: -id cannot be combined with definition files")
		return 1
	case fs.NArg() > 0:
		for _, path := range fs.Args() {
			defs, err := loadFile(path, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "Error: %v\n", err)
				return 1
			}
			for _, d := range defs {
				// Loading checked that every definition has a name.
				sid := d.ID
				if sid == "" {
					sid = d.Name
				}
				ids = append(ids, sid)
			}
		}
	case *id != "":
		ids = []string{*id}
	default:
		fmt.Fprintln(stderr, "Error: a service -id or a definition FILE is required")
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	for _, sid := range ids {
		if err := client.Agent().ServiceDeregister(sid); err != nil {
			return cliflags.Report(stderr, fmt.Sprintf("Error deregistering service %q", sid), err)
		}
		fmt.Fprintf(stdout, "Deregistered service: %s\n", sid)
	}
	return 0
}

// loadFile reads the service definitions in the file at path, as the agent
// reads them from a config file, and prints any warnings to stderr.
func loadFile(path string, stderr io.Writer) ([]*structs.ServiceDefinition, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defs, warnings, err := config.ParseServiceDefinitions(path, data)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "Warning:", w)
	}
	return defs, err
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (f *multiFlag) String() string { return strings.Join(*f, ",") }

func (f *multiFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// parseServiceAddress parses "address" or "address:port".
func parseServiceAddress(s string) (structs.ServiceAddress, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		// No port.
		return structs.ServiceAddress{Address: s}, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return structs.ServiceAddress{}, fmt.Errorf("invalid port %q", p)
	}
	return structs.ServiceAddress{Address: host, Port: n}, nil
}
