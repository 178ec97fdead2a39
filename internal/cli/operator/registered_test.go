package operator_test

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// TestRegistered runs the new nouns through the trellis dispatcher.
func TestRegistered(t *testing.T) {
	for _, args := range [][]string{{"operator"}, {"operator", "raft"}, {"snapshot"}} {
		r := clitest.Run(t, cli.Run, args...)
		want := "Usage: trellis " + strings.Join(args, " ") + " <subcommand>"
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, want) {
			t.Errorf("trellis %s: %+v, want exit 1 and %q", strings.Join(args, " "), r, want)
		}
	}
}
