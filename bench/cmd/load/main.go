// Command load measures a Trellis dev agent on loopback: it starts the agent
// binary it is given, drives catalog, KV, health, DNS and blocking-query
// loads against it, and prints a table beside Consul 1.22's reference
// figures. It reports figures; nothing here passes or fails on timing. It
// exits non-zero only when the agent cannot be started or answers wrongly.
//
//	go build -o /tmp/trellis ./cmd/trellis
//	go run ./bench/cmd/load -agent /tmp/trellis -out bench/results.md
//
// bench/run.sh does both.
//
// `load cluster` instead starts three servers on 127.0.0.11-13 and
// measures KV writes and consistent reads spread over them, leader
// failover after kill -9, and the servers' memory, beside Consul 0.7.1's
// published cluster figures (bench/cluster.sh, results-cluster.md):
//
//	go run ./bench/cmd/load cluster -agent /tmp/trellis -out bench/results-cluster.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	// SIGTERM too, so that a killed run still stops the servers it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the load generator's flags.
type options struct {
	agentBin  string
	out       string
	goVersion string
	workers   int
	instances int
	perNode   int
	healthN   int
	kvOps     int
	kvKeys    int
	valueSize int
	duration  time.Duration
	wakeups   int
	settle    time.Duration
	startWait time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.agentBin, "agent", "", "path of the trellis binary to start (required)")
	fs.StringVar(&o.out, "out", "", "write the results table to this Markdown file (overwritten)")
	fs.StringVar(&o.goVersion, "go-version", "", "output of go version, recorded in -out")
	fs.IntVar(&o.workers, "workers", 16, "concurrent clients in each phase")
	fs.IntVar(&o.instances, "instances", 10000, "service instances to register in the catalog phase")
	fs.IntVar(&o.perNode, "per-node", 100, "service instances per node in the catalog phase")
	fs.IntVar(&o.healthN, "health-instances", 100, "instances, each with a passing check, of the service queried by the health and DNS phases")
	fs.IntVar(&o.kvOps, "kv-ops", 20000, "operations in each of the KV PUT and GET phases")
	fs.IntVar(&o.kvKeys, "kv-keys", 1000, "size of the KV key space")
	fs.IntVar(&o.valueSize, "value-size", 1024, "KV value size in bytes")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of the health-query and DNS phases")
	fs.IntVar(&o.wakeups, "wakeups", 200, "blocking-query wake-ups to time")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "pause before each RSS reading (a measurement point, not a synchronisation)")
	fs.DurationVar(&o.startWait, "start-timeout", 30*time.Second, "how long the agent may take to print its addresses and accept writes")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case o.agentBin == "":
		return nil, errors.New("load: -agent is required")
	case o.workers < 1 || o.instances < 1 || o.perNode < 1 || o.kvOps < 1 || o.kvKeys < 1 || o.wakeups < 1:
		return nil, errors.New("load: -workers, -instances, -per-node, -kv-ops, -kv-keys and -wakeups must be positive")
	case o.healthN < 1 || o.healthN > (o.instances+o.perNode-1)/o.perNode:
		// The health service gets one instance on each of the catalog
		// phase's nodes, so there must be enough of them.
		return nil, fmt.Errorf("load: -health-instances must be between 1 and the number of nodes (%d)", (o.instances+o.perNode-1)/o.perNode)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "cluster" {
		return runCluster(ctx, args[1:], stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 2
	}
	rep, err := measure(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "load: %v\n", err)
		return 1
	}
	table := rep.table()
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, table)
	fmt.Fprint(stdout, rep.notes())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(rep.markdown(o, table)), 0o644); err != nil {
			fmt.Fprintf(stderr, "load: writing results: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", o.out)
	}
	return 0
}
