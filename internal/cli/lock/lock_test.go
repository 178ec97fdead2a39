//go:build unix

package lock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// env is one test's agent and scratch directory.
type env struct {
	t    *testing.T
	addr string
	c    *api.Client
	dir  string
	log  string
}

func newEnv(t *testing.T) *env {
	a, c := clitest.Agent(t)
	dir := t.TempDir()
	return &env{t: t, addr: a.HTTPAddr, c: c, dir: dir, log: filepath.Join(dir, "log")}
}

// lockCmd runs `trellis lock -http-addr ADDR ARGS...` under ctx.
func (e *env) lockCmd(ctx context.Context, args ...string) clitest.Result {
	return clitest.RunContext(ctx, Command(strings.NewReader("")), append([]string{"-http-addr", e.addr}, args...)...)
}

// goLock starts lockCmd in a goroutine; the channel yields its result.
func (e *env) goLock(ctx context.Context, args ...string) <-chan clitest.Result {
	ch := make(chan clitest.Result, 1)
	go func() { ch <- e.lockCmd(ctx, args...) }()
	return ch
}

// fifo makes a named pipe; a child that reads it blocks until release.
func (e *env) fifo(name string) string {
	p := filepath.Join(e.dir, name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// release lets the child blocked reading fifo p go on.
func (e *env) release(p string) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("go\n"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) logLines() []string {
	b, err := os.ReadFile(e.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// waitFor polls cond until it holds, failing the test after 10s.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func (e *env) sessions() []*api.SessionEntry {
	s, _, err := e.c.Session().List(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// blockingChild logs start-ID, waits on fifo, then logs end-ID.
func (e *env) blockingChild(id, fifo string) string {
	return fmt.Sprintf("echo start-%s >> '%s'; read x < '%s'; echo end-%s >> '%s'", id, e.log, fifo, id, e.log)
}

func (e *env) quickChild(id string) string {
	return fmt.Sprintf("echo start-%[1]s >> '%[2]s'; echo end-%[1]s >> '%[2]s'", id, e.log)
}

func equal(a, b []string) bool { return strings.Join(a, " ") == strings.Join(b, " ") }

func TestLockMutualExclusion(t *testing.T) {
	e := newEnv(t)
	fa := e.fifo("a")
	resA := e.goLock(t.Context(), "locks/job", e.blockingChild("A", fa))
	e.waitFor("A to hold the lock", func() bool { return equal(e.logLines(), []string{"start-A"}) })

	resB := e.goLock(t.Context(), "locks/job", e.quickChild("B"))
	// B has a session of its own once it is contending for the lock.
	e.waitFor("B to contend", func() bool { return len(e.sessions()) == 2 })
	if got := e.logLines(); !equal(got, []string{"start-A"}) {
		t.Fatalf("B ran while A held the lock: log %v", got)
	}
	if p, _, _ := e.c.KV().Get("locks/job/.lock", nil); p == nil || p.Session == "" || p.Flags != api.LockFlagValue {
		t.Errorf("lock key while held = %+v", p)
	}

	e.release(fa)
	for name, ch := range map[string]<-chan clitest.Result{"A": resA, "B": resB} {
		if r := <-ch; r.Code != 0 {
			t.Errorf("%s: %+v", name, r)
		}
	}
	if got, want := e.logLines(), []string{"start-A", "end-A", "start-B", "end-B"}; !equal(got, want) {
		t.Errorf("log = %v, want %v", got, want)
	}
	// Both cleaned up: sessions destroyed, lock key removed.
	if s := e.sessions(); len(s) != 0 {
		t.Errorf("sessions left: %d", len(s))
	}
	if keys, _, _ := e.c.KV().Keys("locks/", "", nil); len(keys) != 0 {
		t.Errorf("keys left: %v", keys)
	}
}

// TestLockConcurrentStarts starts three contenders at once: whoever wins,
// no child's start and end may interleave with another's.
func TestLockConcurrentStarts(t *testing.T) {
	e := newEnv(t)
	ids := []string{"A", "B", "C"}
	var chans []<-chan clitest.Result
	for _, id := range ids {
		child := fmt.Sprintf("echo start-%[1]s >> '%[2]s'; i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; echo end-%[1]s >> '%[2]s'", id, e.log)
		chans = append(chans, e.goLock(t.Context(), "locks/race", child))
	}
	for i, ch := range chans {
		if r := <-ch; r.Code != 0 {
			t.Errorf("%s: %+v", ids[i], r)
		}
	}
	lines := e.logLines()
	if len(lines) != 6 {
		t.Fatalf("log = %v", lines)
	}
	for i := 0; i < 6; i += 2 {
		id := strings.TrimPrefix(lines[i], "start-")
		if lines[i] != "start-"+id || lines[i+1] != "end-"+id {
			t.Errorf("overlap in log %v", lines)
		}
	}
}

func TestSemaphore(t *testing.T) {
	e := newEnv(t)
	fa, fb := e.fifo("a"), e.fifo("b")
	resA := e.goLock(t.Context(), "-n", "2", "sem/job", e.blockingChild("A", fa))
	e.waitFor("A to hold a slot", func() bool { return equal(e.logLines(), []string{"start-A"}) })
	resB := e.goLock(t.Context(), "-n", "2", "sem/job", e.blockingChild("B", fb))
	e.waitFor("B to hold the second slot", func() bool { return len(e.logLines()) == 2 })

	// Both slots are taken: a third holder times out without running.
	r := e.lockCmd(t.Context(), "-n", "2", "-timeout", "200ms", "sem/job", e.quickChild("C"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "Shutdown triggered or timeout during lock acquisition") {
		t.Errorf("C: %+v", r)
	}

	e.release(fa)
	if r := <-resA; r.Code != 0 {
		t.Errorf("A: %+v", r)
	}
	// A slot is free again while B still holds the other.
	if r := e.lockCmd(t.Context(), "-n", "2", "sem/job", e.quickChild("D")); r.Code != 0 {
		t.Errorf("D: %+v", r)
	}
	e.release(fb)
	if r := <-resB; r.Code != 0 {
		t.Errorf("B: %+v", r)
	}
	lines := e.logLines()
	if !equal(lines[:2], []string{"start-A", "start-B"}) || strings.Contains(strings.Join(lines, " "), "C") {
		t.Errorf("log = %v", lines)
	}
	if s := e.sessions(); len(s) != 0 {
		t.Errorf("sessions left: %d", len(s))
	}
}

func TestLockTimeout(t *testing.T) {
	e := newEnv(t)
	fa := e.fifo("a")
	resA := e.goLock(t.Context(), "locks/t", e.blockingChild("A", fa))
	e.waitFor("A to hold the lock", func() bool { return len(e.logLines()) == 1 })
	r := e.lockCmd(t.Context(), "-timeout", "100ms", "locks/t", e.quickChild("B"))
	if r.Code != 1 || r.Stderr != "Shutdown triggered or timeout during lock acquisition\n" {
		t.Errorf("B: %+v", r)
	}
	e.release(fa)
	if r := <-resA; r.Code != 0 {
		t.Errorf("A: %+v", r)
	}
	if got := e.logLines(); !equal(got, []string{"start-A", "end-A"}) {
		t.Errorf("log = %v", got)
	}
}

func TestChildExitCode(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		args []string
		want int
	}{
		{args: []string{"locks/x", "exit 7"}, want: 0},
		{args: []string{"-child-exit-code", "locks/x", "exit 7"}, want: 7},
		{args: []string{"-child-exit-code", "locks/x", "exit", "3"}, want: 3},
		{args: []string{"-child-exit-code", "locks/x", "kill -TERM $$"}, want: 128 + int(syscall.SIGTERM)},
		{args: []string{"-child-exit-code", "-shell=false", "locks/x", "sh", "-c", "exit 5"}, want: 5},
		{args: []string{"-child-exit-code", "locks/x", "true"}, want: 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if r := e.lockCmd(t.Context(), tt.args...); r.Code != tt.want {
				t.Errorf("exit %d, want %d (stderr %q)", r.Code, tt.want, r.Stderr)
			}
		})
	}
	r := e.lockCmd(t.Context(), "-shell=false", "locks/x", filepath.Join(e.dir, "no-such-program"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "Error running handler") {
		t.Errorf("missing program: %+v", r)
	}
	r = e.lockCmd(t.Context(), "locks/x", "echo", "out;", "echo err >&2")
	if r.Code != 0 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("child output: %+v", r)
	}
}

// TestCancelReleases cancels a run whose child is still going: the child
// is stopped and the lock is free for the next holder at once.
func TestCancelReleases(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	resA := e.goLock(ctx, "locks/c", fmt.Sprintf("echo start-A >> '%s'; exec sleep 60", e.log))
	e.waitFor("A to hold the lock", func() bool { return len(e.logLines()) == 1 })
	cancel()
	r := <-resA
	if r.Code != 1 || !strings.Contains(r.Stderr, "Shutdown triggered, killing child") {
		t.Fatalf("A: %+v", r)
	}
	if s := e.sessions(); len(s) != 0 {
		t.Errorf("sessions left after cancel: %d", len(s))
	}
	// A lock-delay would apply had the lock been freed by invalidating
	// the session rather than released: B must not wait for it.
	if r := e.lockCmd(t.Context(), "-timeout", "5s", "locks/c", e.quickChild("B")); r.Code != 0 {
		t.Errorf("B after A was cancelled: %+v", r)
	}
}

// TestLockLost destroys the holder's session under it: the child is
// stopped and the command fails.
func TestLockLost(t *testing.T) {
	e := newEnv(t)
	fa := e.fifo("a")
	resA := e.goLock(t.Context(), "locks/lost", e.blockingChild("A", fa))
	e.waitFor("A to hold the lock", func() bool { return len(e.logLines()) == 1 })
	ss := e.sessions()
	if len(ss) != 1 {
		t.Fatalf("sessions = %d, want 1", len(ss))
	}
	if _, err := e.c.Session().Destroy(ss[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	r := <-resA
	if r.Code != 1 || !strings.Contains(r.Stderr, "Lock lost, killing child") {
		t.Errorf("A: %+v", r)
	}
	if got := e.logLines(); !equal(got, []string{"start-A"}) {
		t.Errorf("log = %v: the child should have been stopped", got)
	}
}

func TestArgsAndUnreachable(t *testing.T) {
	cmd := Command(strings.NewReader(""))
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args: []string{"prefix"}, want: "Expected PREFIX and CHILD"},
		{args: []string{"-n", "0", "p", "true"}, want: "-n must be at least 1"},
		{args: []string{"/", "true"}, want: "PREFIX must not be empty"},
	} {
		if r := clitest.Run(t, cmd, tt.args...); r.Code != 1 || !strings.Contains(r.Stderr, tt.want) {
			t.Errorf("%v: %+v", tt.args, r)
		}
	}
	dead := clitest.DeadAddr(t)
	r := clitest.Run(t, cmd, "-http-addr", dead, "p", "true")
	if r.Code != 1 || !strings.HasPrefix(r.Stderr, `Error querying agent: Put "http://`+dead+`/v1/session/create"`) {
		t.Errorf("unreachable: %+v", r)
	}
}

func TestPassStdin(t *testing.T) {
	e := newEnv(t)
	cmd := Command(strings.NewReader("hello\n"))
	r := clitest.Run(t, cmd, "-http-addr", e.addr, "-pass-stdin", "locks/in", "cat")
	if r.Code != 0 || r.Stdout != "hello\n" {
		t.Errorf("%+v", r)
	}
}
