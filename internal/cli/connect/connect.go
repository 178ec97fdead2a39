// Package connect implements `trellis connect`: the service mesh's
// command line. Here: the Connect CA's configuration (`connect ca
// get-config`, `set-config`), with the output and messages of `consul
// connect ca`, the built-in sidecar proxy (`connect proxy`), Envoy's
// bootstrap configuration (`connect envoy -bootstrap`) and a proxyless
// gRPC application's (`connect grpc-bootstrap`).
package connect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
  Interacts with the service mesh (Connect): its certificate authority,
  the built-in sidecar proxy, the bootstrap of Envoy sidecars and of
  proxyless gRPC applications.
`

const caHelp = `
  Shows and changes the configuration of the Connect certificate
  authority, which signs the services' leaf certificates.
`

// Command returns `trellis connect <subcommand>`; set-config reads
// "-config-file -" from stdin.
func Command(stdin io.Reader) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		ca := func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
			return cliflags.Dispatch(ctx, "connect ca", caHelp, []cliflags.Verb{
				{Name: "get-config", Synopsis: "Display the current Connect Certificate Authority (CA) configuration", Run: getConfig},
				{Name: "set-config", Synopsis: "Modify the current Connect CA configuration", Run: setConfig(stdin)},
			}, args, stdout, stderr)
		}
		return cliflags.Dispatch(ctx, "connect", help, []cliflags.Verb{
			{Name: "ca", Synopsis: "Interact with the Connect Certificate Authority (CA)", Run: ca},
			{Name: "proxy", Synopsis: "Runs the built-in sidecar proxy", Run: proxyCommand},
			{Name: "envoy", Synopsis: "Prints the bootstrap configuration of an Envoy sidecar", Run: envoyCommand},
			{Name: "grpc-bootstrap", Synopsis: "Writes a proxyless gRPC application's certificates and prints its xDS bootstrap", Run: grpcBootstrapCommand},
		}, args, stdout, stderr)
	}
}

const getConfigHelp = `
Usage: trellis connect ca get-config [options]

  Displays the current Connect CA configuration as JSON:

      {
              "Provider": "consul",
              "Config": {
                      "LeafCertTTL": "72h",
                      ...
`

func getConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("connect ca get-config")
	h.Flags(fs)
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
	cfg, _, err := client.Connect().CAGetConfig(h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error request CA configuration", err)
	}
	out, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		fmt.Fprintf(stderr, "Error encoding the CA configuration: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

const setConfigHelp = `
Usage: trellis connect ca set-config [options] -config-file FILE

  Replaces the Connect CA configuration with the JSON in FILE ("-" reads
  stdin), in the shape get-config prints:

      {
          "Provider": "consul",
          "Config": {"LeafCertTTL": "24h", "PrivateKeyType": "ec"}
      }

  A change that needs a new root (provider, key type or size, a supplied
  RootCert and PrivateKey) rotates the root: the new one is cross-signed
  by the old, which stays trusted until the leaves it signed expire.
`

func setConfig(stdin io.Reader) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return runSetConfig(ctx, stdin, args, stdout, stderr)
	}
}

func runSetConfig(ctx context.Context, stdin io.Reader, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("connect ca set-config")
	h.Flags(fs)
	file := fs.String("config-file", "", "The path to the config `file` to use, or - for stdin.")
	if code, ok := cliflags.Parse(fs, args, setConfigHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	if *file == "" {
		fmt.Fprintln(stderr, "-config-file must be set")
		return 1
	}
	var raw []byte
	var err error
	if *file == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(*file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error reading config file: %v\n", err)
		return 1
	}
	var cfg api.CAConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		fmt.Fprintf(stderr, "Error parsing config file: %v\n", err)
		return 1
	}
	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	if _, err := client.Connect().CASetConfig(&cfg, nil); err != nil {
		return cliflags.Report(stderr, "Error setting CA configuration", err)
	}
	fmt.Fprintln(stdout, "Configuration updated!")
	return 0
}
