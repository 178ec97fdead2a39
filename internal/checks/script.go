package checks

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// scriptWaitDelay bounds how long a finished or killed script's output pipes
// may be held open by processes that escaped its process group.
const scriptWaitDelay = time.Second

// scriptProbe runs a command, Nagios-style: exit 0 is passing, 1 is warning,
// anything else is critical. Output is stdout and stderr together, of which
// the last MaxOutputSize bytes are kept.
type scriptProbe struct {
	args    []string
	timeout time.Duration
}

func (p *scriptProbe) probe(ctx context.Context) (string, string) {
	tctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	cmd := exec.CommandContext(tctx, p.args[0], p.args[1:]...)
	out := newTailBuffer(MaxOutputSize)
	// One writer for both streams: exec then writes it from one goroutine.
	cmd.Stdout = out
	cmd.Stderr = out
	killProcessGroupOnCancel(cmd)
	cmd.WaitDelay = scriptWaitDelay

	err := cmd.Run()
	if ctx.Err() != nil {
		return "", "" // stopped; discarded by the caller
	}
	if err != nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return structs.HealthCritical, fmt.Sprintf("Timed out (%s) running check", p.timeout)
	}
	if cmd.ProcessState == nil {
		// It never started (not found, not executable, ...).
		return structs.HealthCritical, err.Error()
	}
	switch cmd.ProcessState.ExitCode() {
	case 0:
		return structs.HealthPassing, out.String()
	case 1:
		return structs.HealthWarning, out.String()
	default: // including -1, killed by a signal
		return structs.HealthCritical, out.String()
	}
}

func (p *scriptProbe) close() {}
