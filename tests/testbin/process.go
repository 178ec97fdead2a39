package testbin

import (
	"bytes"
	"io"
	"os/exec"
	"regexp"
	"sync"
	"testing"
	"time"
)

// WaitFor bounds the waits of Start and Eventually: long enough for a
// loaded 2-core CI machine, short enough that a hung test says so.
const WaitFor = 30 * time.Second

// Eventually polls cond until it returns nil, failing the test with
// cond's last error after WaitFor.
func Eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, WaitFor, err)
		}
		<-tick.C
	}
}

// Process is a binary running as a child of the test.
type Process struct {
	name   string
	cmd    *exec.Cmd
	log    *logBuffer
	exited chan struct{} // closed once Wait returned
	once   sync.Once
}

// Start runs binary with args and waits until it has printed (on
// stdout) a line matching each of patterns, returning their first
// submatches. The process is killed and waited for when the test ends;
// its output is logged if the test failed.
func Start(t testing.TB, binary, name string, args []string, patterns ...*regexp.Regexp) (*Process, []string) {
	t.Helper()
	found := make(chan []string, 1)
	lw := &lineWatcher{patterns: patterns, got: make([]string, len(patterns)), found: found}
	p := &Process{name: name, cmd: exec.Command(binary, args...), log: &logBuffer{}, exited: make(chan struct{})}
	// Both streams go through writers, so that Wait waits for the
	// copies: no read of a pipe Wait has closed.
	p.cmd.Stdout = io.MultiWriter(p.log, lw)
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log.String())
		}
	})
	if len(patterns) == 0 {
		return p, nil
	}
	timer := time.NewTimer(WaitFor)
	defer timer.Stop()
	select {
	case got := <-found:
		return p, got
	case <-p.exited:
		t.Fatalf("%s exited before it was ready (%v):\n%s", name, p.cmd.ProcessState, p.log.String())
	case <-timer.C:
		t.Fatalf("%s not ready within %v:\n%s", name, WaitFor, p.log.String())
	}
	return nil, nil
}

// Stop kills the process and waits for it; calling it again does
// nothing.
func (p *Process) Stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
}

// lineWatcher finds patterns in the lines written to it and sends the
// first submatch of each on found once all have matched.
type lineWatcher struct {
	patterns []*regexp.Regexp
	mu       sync.Mutex
	partial  []byte
	got      []string
	n        int
	found    chan<- []string
}

func (w *lineWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if w.n == len(w.patterns) {
			continue
		}
		for j, p := range w.patterns {
			if m := p.FindStringSubmatch(line); m != nil && w.got[j] == "" {
				w.got[j] = m[1]
				if w.n++; w.n == len(w.patterns) {
					w.found <- w.got
				}
			}
		}
	}
}

// logBuffer keeps the last 64 KiB a process wrote, safe for its writes
// and the test's reads at once.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const logKeep = 64 << 10

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*logKeep {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-logKeep:]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > logKeep {
		return "..." + string(b.buf[len(b.buf)-logKeep:])
	}
	return string(b.buf)
}
