// Command intentionlag measures how long an intention write takes to show
// in /v1/agent/connect/authorize: it flips web → db between allow and deny
// and polls authorize until the answer follows, N rounds, then prints a
// markdown table. It starts an in-process dev agent unless -addr names a
// running one.
//
//	go run ./bench/cmd/intentionlag -rounds 200
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent"
	"github.com/trellis-mesh/trellis/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("intentionlag", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTP address of a running agent; empty starts an in-process dev agent")
	rounds := fs.Int("rounds", 200, "intention flips to measure")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a round after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" {
		a, err := startDev()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer a.Close()
		*addr = a.HTTPAddrs()[0]
	}
	c, err := api.NewClient(&api.Config{Address: *addr})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	const uri = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/bench-web"
	var writes, lags, totals []time.Duration
	polls := 0
	for i := range *rounds {
		allow := i%2 == 0
		action := api.IntentionActionDeny
		if allow {
			action = api.IntentionActionAllow
		}
		start := time.Now()
		if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "bench-web", DestinationName: "bench-db", Action: action}, nil); err != nil {
			fmt.Fprintf(stderr, "round %d: write: %v\n", i, err)
			return 1
		}
		written := time.Now()
		for {
			polls++
			res, err := c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "bench-db", ClientCertURI: uri})
			if err != nil {
				fmt.Fprintf(stderr, "round %d: authorize: %v\n", i, err)
				return 1
			}
			if res.Authorized == allow {
				break
			}
			if time.Since(start) > *timeout {
				fmt.Fprintf(stderr, "round %d: authorize did not follow the write within %v\n", i, *timeout)
				return 1
			}
		}
		done := time.Now()
		writes = append(writes, written.Sub(start))
		lags = append(lags, done.Sub(written))
		totals = append(totals, done.Sub(start))
	}
	_, _ = c.Connect().IntentionDeleteExact("bench-web", "bench-db", nil)
	fmt.Fprintf(stdout, "intention write → authorize reflects it, %d rounds, %d authorize calls\n\n", *rounds, polls)
	fmt.Fprintln(stdout, "| measure | median | p99 | max |")
	fmt.Fprintln(stdout, "|---|---|---|---|")
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{
		{"write (PUT exact, raft commit)", writes},
		{"after the write returns, until authorize follows", lags},
		{"write start → authorize follows", totals},
	} {
		slices.Sort(m.d)
		fmt.Fprintf(stdout, "| %s | %s | %s | %s |\n", m.name, pct(m.d, 50), pct(m.d, 99), m.d[len(m.d)-1].Round(time.Microsecond))
	}
	return 0
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i].Round(time.Microsecond)
}

// startDev starts a dev agent in this process on OS-chosen ports.
func startDev() (*agent.Agent, error) {
	args := []string{"-dev", "-http-port", "0", "-dns-port", "-1", "-server-port", "0",
		"-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "-1", "-node", "bench", "-log-level", "warn"}
	cfg, err := config.Load(args)
	if err != nil {
		return nil, fmt.Errorf("intentionlag: config: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.New(ctx, cfg, agent.Options{Args: args, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("intentionlag: start agent: %w", err)
	}
	return a, nil
}
