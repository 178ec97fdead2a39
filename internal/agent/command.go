package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/version"
)

// Command runs `trellis agent ARGS` until SIGINT or SIGTERM, a leave
// request or ctx's end. SIGHUP reloads services and checks. It returns the
// process exit code.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: trellis agent [options]")
		config.PrintUsage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	logger := newLogger(cfg, stderr)
	for _, w := range cfg.Warnings {
		logger.Warn(w)
	}
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintf(stderr, "==> writing pid file: %v\n", err)
			return 1
		}
		defer os.Remove(cfg.PidFile)
	}
	sigCh := make(chan os.Signal, 4)
	signal.Notify(sigCh, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigCh)

	a, err := New(ctx, cfg, Options{Logger: logger, Args: args})
	if err != nil {
		fmt.Fprintf(stderr, "==> Error starting agent: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "==> Trellis agent running!\n")
	fmt.Fprintf(stdout, "           Version: %s\n", version.Version)
	fmt.Fprintf(stdout, "         Node name: %s\n", cfg.NodeName)
	fmt.Fprintf(stdout, "        Datacenter: %s\n", cfg.Datacenter)
	fmt.Fprintf(stdout, "            Server: %v (dev: %v)\n", cfg.Server, cfg.DevMode)
	fmt.Fprintf(stdout, "          HTTP API: %s\n", strings.Join(a.HTTPAddrs(), ", "))
	fmt.Fprintf(stdout, "               DNS: %s\n", strings.Join(a.DNSAddrs(), ", "))
	fmt.Fprintf(stdout, "       gRPC (xDS): %s\n", orDisabled(a.GRPCAddrs()))
	fmt.Fprintf(stdout, "          Data dir: %s\n", orMemory(cfg.DataDir))

	code := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-a.LeaveCh():
			logger.Info("leave requested: leaving the cluster and shutting down")
			a.GracefulLeave()
			break loop
		case sig := <-sigCh:
			if sig == syscall.SIGHUP {
				logger.Info("reloading configuration")
				if err := a.Reload(); err != nil {
					logger.Error("reload failed", "error", err)
				}
				continue
			}
			logger.Info("caught signal: shutting down", "signal", sig.String())
			if leaveOnSignal(cfg, sig) {
				a.GracefulLeave()
			}
			break loop
		}
	}
	if err := a.Close(); err != nil {
		logger.Error("shutdown", "error", err)
		code = 1
	}
	fmt.Fprintln(stdout, "==> Trellis agent stopped")
	return code
}

func orMemory(dir string) string {
	if dir == "" {
		return "(in memory)"
	}
	return dir
}

func newLogger(cfg *config.RuntimeConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	switch cfg.LogLevel {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// leaveOnSignal applies Consul's defaults: a client agent leaves the
// cluster on SIGINT (unless skip_leave_on_interrupt) and on SIGTERM; a
// server leaves only on SIGTERM with leave_on_terminate, since a server
// that leaves also leaves the raft quorum.
func leaveOnSignal(cfg *config.RuntimeConfig, sig os.Signal) bool {
	if cfg.Server {
		return sig == syscall.SIGTERM && cfg.LeaveOnTerm
	}
	if sig == syscall.SIGINT {
		return !cfg.SkipLeaveOnInterrupt
	}
	return true
}

func orDisabled(addrs []string) string {
	if len(addrs) == 0 {
		return "(disabled)"
	}
	return strings.Join(addrs, ", ")
}
