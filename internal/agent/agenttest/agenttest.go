// Package agenttest starts real, in-process Trellis agents for tests: a
// dev-mode server on loopback with OS-chosen ports, stopped at cleanup.
package agenttest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/config"
)

// Agent is a running test agent.
type Agent struct {
	*agent.Agent
	// HTTPAddr and DNSAddr are "127.0.0.1:port".
	HTTPAddr string
	DNSAddr  string
	Config   *config.RuntimeConfig
}

// Options adjust a test agent.
type Options struct {
	// Args are extra agent flags, after "-dev -http-port 0 -dns-port 0".
	Args []string
	// Agent options; zero values take the agent's defaults.
	Agent agent.Options
	// Verbose logs the agent at debug level to stderr.
	Verbose bool
}

// Start starts an agent and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	args := append([]string{"-dev", "-http-port", "0", "-dns-port", "0", "-server-port", "0",
		"-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "-1", "-node", "test-node"}, opts.Args...)
	cfg, err := config.Load(args)
	if err != nil {
		t.Fatalf("agenttest: config: %v", err)
	}
	ao := opts.Agent
	ao.Args = args
	if ao.Logger == nil {
		if opts.Verbose || os.Getenv("TRELLIS_TEST_LOG") != "" {
			ao.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.New(ctx, cfg, ao)
	if err != nil {
		t.Fatalf("agenttest: start: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("agenttest: close: %v", err)
		}
	})
	ta := &Agent{Agent: a, Config: cfg, HTTPAddr: a.HTTPAddrs()[0]}
	if d := a.DNSAddrs(); len(d) > 0 {
		ta.DNSAddr = d[0]
	}
	return ta
}
