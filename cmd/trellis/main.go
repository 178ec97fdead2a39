// Command trellis is the single Trellis binary: agent, and the CLI.
package main

import (
	"context"
	"os"

	"github.com/trellis-mesh/trellis/internal/cli"
)

func main() {
	os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
