// Package lock implements `trellis lock`: run a command while holding a
// distributed lock (or one of N semaphore slots) on a KV prefix, as
// `consul lock` does, so that at most N copies run cluster-wide.
package lock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
)

const help = `
Usage: trellis lock [options] PREFIX CHILD...

  Acquires a lock on PREFIX (the key PREFIX/.lock), runs CHILD, and
  releases the lock when CHILD exits. With -n N > 1, up to N holders share
  PREFIX as a semaphore (contender keys PREFIX/<session>). The lock is held
  by a session the agent expires if this command stops renewing it.

  CHILD is run with "sh -c" (its arguments joined by spaces) unless
  -shell=false, in which case it is run directly. If the lock is lost while
  CHILD runs, or on SIGINT/SIGTERM, CHILD is sent SIGTERM (SIGKILL after a
  grace period), the lock is released and the exit code is 1.

  The exit code is 0 once CHILD has run under the lock, whatever its exit
  status, unless -child-exit-code is given: then it is CHILD's own exit code.
`

// childGrace is how long a child is given to exit after SIGTERM, and how
// long output pipes held open by its own children are waited for.
const childGrace = 5 * time.Second

// Command returns `trellis lock`. stdin is passed to the child with
// -pass-stdin.
func Command(stdin io.Reader) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return run(ctx, stdin, args, stdout, stderr)
	}
}

type options struct {
	limit         int
	name          string
	timeout       time.Duration
	shell         bool
	passStdin     bool
	childExitCode bool
	monitorRetry  int
	verbose       bool
}

func run(ctx context.Context, stdin io.Reader, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	var o options
	fs := cliflags.NewFlagSet("lock")
	h.Flags(fs)
	fs.IntVar(&o.limit, "n", 1, "How many holders may hold the lock at once; above 1 it is a semaphore.")
	fs.StringVar(&o.name, "name", "", "Name of the lock's session. Defaults to \"Trellis lock for PREFIX\".")
	fs.DurationVar(&o.timeout, "timeout", 0, "Give up acquiring the lock after this `duration` (0: wait forever).")
	fs.BoolVar(&o.shell, "shell", true, "Run CHILD with \"sh -c\".")
	fs.BoolVar(&o.passStdin, "pass-stdin", false, "Give this command's stdin to CHILD.")
	fs.BoolVar(&o.childExitCode, "child-exit-code", false, "Exit with CHILD's exit code.")
	fs.IntVar(&o.monitorRetry, "monitor-retry", 3, "How many times to retry a failed check that the lock is still held before taking it as lost.")
	fs.BoolVar(&o.verbose, "verbose", false, "Report each step.")
	if code, ok := cliflags.Parse(fs, args, help, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(stderr, "Error! Expected PREFIX and CHILD arguments")
		cliflags.PrintUsage(stderr, fs, help)
		return 1
	}
	if o.limit < 1 {
		fmt.Fprintln(stderr, "Error! -n must be at least 1")
		return 1
	}
	if o.timeout < 0 {
		fmt.Fprintln(stderr, "Error! -timeout must not be negative")
		return 1
	}
	prefix := strings.TrimPrefix(fs.Arg(0), "/")
	if strings.Trim(prefix, "/") == "" {
		fmt.Fprintln(stderr, "Error! PREFIX must not be empty")
		return 1
	}
	if o.name == "" {
		o.name = "Trellis lock for " + prefix
	}
	child := fs.Args()[1:]

	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	l := &locker{h: &h, o: o, prefix: prefix, stdout: serialised(stdout), stderr: serialised(stderr)}
	return l.run(ctx, stdin, child)
}

// locker runs one lock command. Its requests go through two clients: acq,
// whose requests are aborted when acquisition is given up (timeout,
// signal), and ctl, never aborted, which renews and finally destroys the
// session so that the lock is released even after an interrupt.
type locker struct {
	h      *cliflags.HTTP
	o      options
	prefix string
	stdout io.Writer
	stderr io.Writer
}

// holder is what api.Lock and api.Semaphore have in common.
type holder interface {
	acquire(stopCh <-chan struct{}) (<-chan struct{}, error)
	release() error
	destroy() error
}

type lockHolder struct{ *api.Lock }

func (l lockHolder) acquire(stop <-chan struct{}) (<-chan struct{}, error) { return l.Lock.Lock(stop) }
func (l lockHolder) release() error                                        { return l.Unlock() }
func (l lockHolder) destroy() error {
	if err := l.Destroy(); err != nil && !errors.Is(err, api.ErrLockInUse) {
		return err
	}
	return nil
}

type semHolder struct{ *api.Semaphore }

func (s semHolder) acquire(stop <-chan struct{}) (<-chan struct{}, error) { return s.Acquire(stop) }
func (s semHolder) release() error                                        { return s.Release() }
func (s semHolder) destroy() error {
	if err := s.Destroy(); err != nil && !errors.Is(err, api.ErrSemaphoreInUse) {
		return err
	}
	return nil
}

func (l *locker) infof(format string, args ...any) {
	if l.o.verbose {
		fmt.Fprintf(l.stdout, format+"\n", args...)
	}
}

func (l *locker) run(ctx context.Context, stdin io.Reader, child []string) int {
	// ctl outlives ctx: the session must be destroyed after an interrupt.
	ctl, ctlDone, err := l.h.Client(context.WithoutCancel(ctx))
	if err != nil {
		fmt.Fprintln(l.stderr, err)
		return 1
	}
	defer ctlDone()
	acqCtx, cancelAcq := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAcq()
	acq, acqDone, err := l.h.Client(acqCtx)
	if err != nil {
		fmt.Fprintln(l.stderr, err)
		return 1
	}
	defer acqDone()

	// Acquisition ends at ctx's end or -timeout: close stopCh for the api's
	// checks between attempts and abort its requests (blocking reads may
	// wait 15s).
	deadline, cancelDeadline := ctx, context.CancelFunc(func() {})
	if l.o.timeout > 0 {
		deadline, cancelDeadline = context.WithTimeout(ctx, l.o.timeout)
	}
	defer cancelDeadline()
	stopCh := make(chan struct{})
	stopWatch := context.AfterFunc(deadline, func() {
		close(stopCh)
		cancelAcq()
	})

	behavior, ttl := api.SessionBehaviorRelease, api.DefaultLockSessionTTL
	if l.o.limit > 1 {
		behavior, ttl = api.SessionBehaviorDelete, api.DefaultSemaphoreSessionTTL
	}
	l.infof("Creating session %q", l.o.name)
	session, _, err := acq.Session().Create(&api.SessionEntry{Name: l.o.name, TTL: ttl, Behavior: behavior}, nil)
	if err != nil {
		stopWatch()
		if deadline.Err() != nil {
			fmt.Fprintln(l.stderr, "Shutdown triggered or timeout during lock acquisition")
			return 1
		}
		return cliflags.Report(l.stderr, "Error creating session", err)
	}
	// The renewer is ours: closing renewDone makes it destroy the session,
	// which releases anything the session still holds.
	renewDone := make(chan struct{})
	var renewer sync.WaitGroup
	renewer.Go(func() { _ = ctl.Session().RenewPeriodic(ttl, session, nil, renewDone) })
	defer func() {
		close(renewDone)
		renewer.Wait()
	}()

	var hd holder
	if l.o.limit > 1 {
		s, err := acq.SemaphoreOpts(&api.SemaphoreOptions{Prefix: l.prefix, Limit: l.o.limit, Session: session,
			MonitorRetries: l.o.monitorRetry})
		if err != nil {
			stopWatch()
			fmt.Fprintf(l.stderr, "Error setting up semaphore: %v\n", err)
			return 1
		}
		hd = semHolder{s}
	} else {
		lk, err := acq.LockOpts(&api.LockOptions{Key: path.Join(l.prefix, api.DefaultSemaphoreKey), Session: session,
			MonitorRetries: l.o.monitorRetry})
		if err != nil {
			stopWatch()
			fmt.Fprintf(l.stderr, "Error setting up lock: %v\n", err)
			return 1
		}
		hd = lockHolder{lk}
	}

	l.infof("Attempting lock acquisition")
	lost, err := hd.acquire(stopCh)
	if !stopWatch() {
		// Given up: if acquire won the race, its requests are aborted
		// now and it cannot release; destroying the session (deferred
		// above) releases the lock instead.
		fmt.Fprintln(l.stderr, "Shutdown triggered or timeout during lock acquisition")
		return 1
	}
	if err != nil {
		return cliflags.Report(l.stderr, "Lock acquisition failed", err)
	}
	if lost == nil {
		fmt.Fprintln(l.stderr, "Shutdown triggered or timeout during lock acquisition")
		return 1
	}

	l.infof("Lock acquired, starting child")
	code := l.runChild(ctx, stdin, child, lost)

	l.infof("Releasing lock")
	if err := hd.release(); err != nil && !errors.Is(err, api.ErrLockNotHeld) && !errors.Is(err, api.ErrSemaphoreNotHeld) {
		fmt.Fprintf(l.stderr, "Lock release failed: %v\n", err)
		code = 1
	}
	if err := hd.destroy(); err != nil {
		l.infof("Cleanup failed: %v", err)
	}
	// The api's monitor goroutine ends once it sees the release; give it
	// a moment before its requests are aborted.
	select {
	case <-lost:
	case <-time.After(childGrace):
	}
	return code
}

// runChild runs the child under the lock and returns the command's exit
// code: 1 if the child could not start, was stopped because the lock was
// lost or ctx ended; else 0, or the child's own with -child-exit-code.
func (l *locker) runChild(ctx context.Context, stdin io.Reader, child []string, lost <-chan struct{}) int {
	var cmd *exec.Cmd
	if l.o.shell {
		cmd = exec.Command("sh", "-c", strings.Join(child, " "))
	} else {
		cmd = exec.Command(child[0], child[1:]...)
	}
	cmd.Stdout, cmd.Stderr = l.stdout, l.stderr
	if l.o.passStdin {
		cmd.Stdin = stdin
	}
	cmd.WaitDelay = childGrace
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(l.stderr, "Error running handler: %v\n", err)
		return 1
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()

	var stopped string
	select {
	case err := <-waitErr:
		return l.childResult(cmd, err)
	case <-lost:
		stopped = "Lock lost, killing child"
	case <-ctx.Done():
		stopped = "Shutdown triggered, killing child"
	}
	fmt.Fprintln(l.stderr, stopped)
	terminate(cmd)
	select {
	case <-waitErr:
	case <-time.After(childGrace):
		kill(cmd)
		<-waitErr
	}
	return 1
}

func (l *locker) childResult(cmd *exec.Cmd, err error) int {
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) && cmd.ProcessState == nil {
			fmt.Fprintf(l.stderr, "Error running handler: %v\n", err)
			return 1
		}
		if cmd.ProcessState != nil {
			code = exitCode(cmd.ProcessState)
		}
		if code != 0 {
			l.infof("Child exited with code %d", code)
		}
	}
	if l.o.childExitCode {
		return code
	}
	return 0
}

// serialised returns w made safe for the child's output and this
// command's messages at once. An *os.File is handed to the child as it is
// (so that it sees the terminal); any other writer gets the child's output
// from an os/exec goroutine, so writes to it are serialised.
func serialised(w io.Writer) io.Writer {
	if _, ok := w.(*os.File); ok {
		return w
	}
	return &syncWriter{w: w}
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
