package checks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

const (
	// MinInterval is the shortest interval a check runs at; shorter intervals
	// are raised to it.
	MinInterval = 10 * time.Millisecond

	// DefaultTimeout bounds an HTTP, TCP or gRPC probe when the definition
	// gives no timeout.
	DefaultTimeout = 10 * time.Second

	// DefaultScriptTimeout bounds a script check when the definition gives no
	// timeout.
	DefaultScriptTimeout = 30 * time.Second

	// MaxOutputSize is the most output, in bytes, a check reports.
	MaxOutputSize = 4096

	// maxStagger caps the random delay before an interval check's first run,
	// so that checks registered together do not all fire at once but a new
	// check still reports promptly.
	maxStagger = time.Second
)

// ErrScriptsDisabled is returned (wrapped) by New for a script check when
// Options.EnableScriptChecks is false. Its text is Consul's and clients may
// match on it, so it must not change.
var ErrScriptsDisabled = errors.New("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true") //nolint:staticcheck // exact Consul text

// Notifier receives check results. Implementations must not block for long:
// they are called from the runner's goroutine (or, for TTL checks, from the
// SetStatus caller).
type Notifier interface {
	UpdateCheck(checkID, status, output string)
}

// Runner is a started check. Stop ends its goroutines, cancelling any probe in
// flight, and waits for them; after it returns the runner makes no further
// Notifier calls. Stop may be called more than once.
type Runner interface {
	Stop()
}

// TTLRunner is the Runner of a TTL check.
type TTLRunner interface {
	Runner
	// SetStatus reports status and output to the Notifier at once and
	// restarts the TTL timer. If the timer expires before the next SetStatus,
	// the check is reported critical with output beginning "TTL expired".
	// SetStatus after Stop does nothing.
	SetStatus(status, output string)
}

// Options are common to building runners.
type Options struct {
	// Notify receives results. Required.
	Notify Notifier
	// Logger is used for diagnostics; nil discards them.
	Logger *slog.Logger
	// EnableScriptChecks permits script checks; without it New refuses them
	// with ErrScriptsDisabled.
	EnableScriptChecks bool
	// Aliases is the local state alias checks follow; New refuses an
	// alias check without it.
	Aliases AliasSource
}

// New builds and starts the runner for def, reporting results for checkID.
// The kind of check is def.Type(); a TTL check's runner is a TTLRunner.
//
// Results of HTTP, TCP, gRPC and script checks pass through def's
// SuccessBeforePassing, FailuresBeforeWarning and FailuresBeforeCritical
// thresholds before reaching opts.Notify. TTL results do not: each SetStatus
// is an explicit report and is passed on as given.
//
// New reports nothing itself before the first probe: the agent sets a check's
// initial status. On error no goroutine has been started.
func New(checkID string, def *structs.CheckType, opts Options) (Runner, error) {
	if def == nil {
		return nil, fmt.Errorf("checks: check %q: no definition", checkID)
	}
	if opts.Notify == nil {
		return nil, fmt.Errorf("checks: check %q: no notifier", checkID)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("check", checkID)

	kind := def.Type()
	switch kind {
	case "":
		return nil, fmt.Errorf("checks: check %q: definition names no check type (want one of http, tcp, grpc, ttl, args)", checkID)
	case "alias":
		if def.AliasService == "" {
			return nil, fmt.Errorf("checks: check %q: alias checks of a node are not supported: set alias_service", checkID)
		}
		if opts.Aliases == nil {
			return nil, fmt.Errorf("checks: check %q: alias check without an AliasSource", checkID)
		}
		return startAlias(checkID, def.AliasService, opts.Aliases, opts.Notify), nil
	case "ttl":
		return startTTL(checkID, def.TTL.D(), opts.Notify), nil
	case "script":
		if !opts.EnableScriptChecks {
			return nil, fmt.Errorf("checks: check %q: %w", checkID, ErrScriptsDisabled)
		}
	}

	interval := def.Interval.D()
	if interval <= 0 {
		return nil, fmt.Errorf("checks: check %q: %s check needs an interval > 0, got %s", checkID, kind, interval)
	}
	if interval < MinInterval {
		logger.Warn("check interval too short, raising it", "interval", interval, "min", MinInterval)
		interval = MinInterval
	}

	var p probe
	switch kind {
	case "http":
		p = newHTTPProbe(def, networkTimeout(def.Timeout.D(), interval))
	case "tcp":
		p = &tcpProbe{addr: def.TCP, timeout: networkTimeout(def.Timeout.D(), interval)}
	case "grpc":
		p = newGRPCProbe(def, networkTimeout(def.Timeout.D(), interval))
	case "script":
		timeout := def.Timeout.D()
		if timeout <= 0 {
			timeout = DefaultScriptTimeout
		}
		args := def.ScriptArgsOrArgs()
		p = &scriptProbe{args: append([]string(nil), args...), timeout: timeout}
	default:
		return nil, fmt.Errorf("checks: check %q: unknown check type %q", checkID, kind)
	}

	notify := newStatusHandler(opts.Notify, logger, def.SuccessBeforePassing, def.FailuresBeforeWarning, def.FailuresBeforeCritical)
	return startInterval(checkID, interval, p, notify, logger), nil
}

// networkTimeout is the timeout of one network probe: the configured timeout
// or DefaultTimeout, but never more than an interval, so a hung endpoint
// cannot hold results back for longer than the check's own period.
func networkTimeout(timeout, interval time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return min(timeout, interval)
}

// probe runs one check and returns its result. It must return promptly once
// ctx is done; its result is then discarded.
type probe interface {
	probe(ctx context.Context) (status, output string)
	// close releases what the probe holds between runs. It is called once,
	// after the last probe call has returned.
	close()
}

// intervalRunner runs a probe every interval on one goroutine.
type intervalRunner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	p      probe
}

func startInterval(checkID string, interval time.Duration, p probe, notify Notifier, logger *slog.Logger) *intervalRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &intervalRunner{cancel: cancel, p: p}
	stagger := rand.N(min(interval, maxStagger))
	r.wg.Go(func() { r.run(ctx, checkID, interval, stagger, notify, logger) })
	return r
}

func (r *intervalRunner) run(ctx context.Context, checkID string, interval, stagger time.Duration, notify Notifier, logger *slog.Logger) {
	// The next run is timed from the end of the previous one, so a slow probe
	// never overlaps itself.
	t := time.NewTimer(stagger)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status, output := r.p.probe(ctx)
		if ctx.Err() != nil {
			// Stopped mid-probe: the result says only that we cancelled it.
			return
		}
		logger.Debug("check result", "status", status)
		notify.UpdateCheck(checkID, status, output)
		t.Reset(interval)
	}
}

func (r *intervalRunner) Stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
		r.p.close()
	})
}
