// Package clitest runs trellis CLI commands in tests: against a real
// in-process agent, with buffers for stdout and stderr.
package clitest

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
)

// Command is the shape of every CLI command.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// Result is what a command run produced.
type Result struct {
	Stdout string
	Stderr string
	Code   int
}

// Run runs cmd with args under t's context.
func Run(t testing.TB, cmd Command, args ...string) Result {
	t.Helper()
	return RunContext(t.Context(), cmd, args...)
}

// RunContext runs cmd with args under ctx. It is safe to call from
// goroutines other than the test's.
func RunContext(ctx context.Context, cmd Command, args ...string) Result {
	var out, errb bytes.Buffer
	code := cmd(ctx, args, &out, &errb)
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Agent starts a test agent and returns it with an API client for it, to
// set up and check state independently of the command under test.
func Agent(t testing.TB) (*agenttest.Agent, *api.Client) {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr, Scheme: "http"})
	if err != nil {
		t.Fatalf("clitest: api client: %v", err)
	}
	return a, c
}

// DeadAddr returns a loopback address nothing listens on: one the OS gave
// a listener that is closed again.
func DeadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clitest: listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("clitest: close: %v", err)
	}
	return addr
}
