package connect_test

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// The noun is registered in the trellis dispatcher.
func TestRegistered(t *testing.T) {
	for _, args := range [][]string{{"connect"}, {"connect", "ca"}} {
		r := clitest.Run(t, cli.Run, args...)
		want := "Usage: trellis " + strings.Join(args, " ") + " <subcommand>"
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, want) {
			t.Errorf("trellis %s: %+v, want exit 1 and %q", strings.Join(args, " "), r, want)
		}
	}
}
