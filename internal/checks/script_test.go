package checks

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

func shScript(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestScriptExitCodes(t *testing.T) {
	tests := []struct {
		name, script, wantStatus, wantOutput string
	}{
		{"exit 0", "echo out; echo err >&2; exit 0", structs.HealthPassing, "out\nerr\n"},
		{"exit 1", "echo out; echo err >&2; exit 1", structs.HealthWarning, "out\nerr\n"},
		{"exit 2", "echo out; echo err >&2; exit 2", structs.HealthCritical, "out\nerr\n"},
		{"exit 127", "exit 127", structs.HealthCritical, ""},
		{"killed", "kill -9 $$", structs.HealthCritical, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNotifier(t)
			start(t, "s", &structs.CheckType{Args: shScript(tt.script), Interval: dur(testInterval)}, Options{Notify: n, EnableScriptChecks: true})
			got := n.next(t)
			if got.status != tt.wantStatus || got.output != tt.wantOutput {
				t.Errorf("got %s %q, want %s %q", got.status, got.output, tt.wantStatus, tt.wantOutput)
			}
		})
	}
}

func TestScriptArgsAlias(t *testing.T) {
	n := newFakeNotifier(t)
	start(t, "s", &structs.CheckType{ScriptArgs: shScript("echo legacy"), Interval: dur(testInterval)}, Options{Notify: n, EnableScriptChecks: true})
	if got := n.next(t); got.status != structs.HealthPassing || got.output != "legacy\n" {
		t.Errorf("got %s %q, want passing %q", got.status, got.output, "legacy\n")
	}
}

func TestScriptNotFound(t *testing.T) {
	n := newFakeNotifier(t)
	start(t, "s", &structs.CheckType{Args: []string{filepath.Join(t.TempDir(), "missing")}, Interval: dur(testInterval)}, Options{Notify: n, EnableScriptChecks: true})
	got := n.next(t)
	if got.status != structs.HealthCritical {
		t.Errorf("status = %s, want critical", got.status)
	}
	wantContains(t, got.output, "missing")
}

func TestScriptOutputKeepsTail(t *testing.T) {
	// 1000 lines of 10 bytes, then "END\n": 10004 bytes.
	script := `i=0; while [ $i -lt 1000 ]; do echo 123456789; i=$((i+1)); done; echo END`
	n := newFakeNotifier(t)
	start(t, "s", &structs.CheckType{Args: shScript(script), Interval: dur(testInterval)}, Options{Notify: n, EnableScriptChecks: true})
	got := n.next(t)
	wantPrefix(t, got.output, "Captured 4096 of 10004 bytes\n...\n")
	if !strings.HasSuffix(got.output, "123456789\nEND\n") {
		t.Errorf("output ends %q, want the script's last bytes", got.output[len(got.output)-20:])
	}
	if n := len(got.output) - len("Captured 4096 of 10004 bytes\n...\n"); n != MaxOutputSize {
		t.Errorf("kept %d bytes, want %d", n, MaxOutputSize)
	}
}

// On timeout the script's whole process group is killed, so a background
// child cannot outlive the check or hold its output open.
func TestScriptTimeoutKillsProcessGroup(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("inspects /proc")
	}
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := `sleep 60 & echo $! > ` + pidFile + `; wait`
	n := newFakeNotifier(t)
	start(t, "s", &structs.CheckType{Args: shScript(script), Interval: dur(time.Hour), Timeout: dur(200 * time.Millisecond)}, Options{Notify: n, EnableScriptChecks: true})

	got := n.next(t)
	if got.status != structs.HealthCritical || got.output != "Timed out (200ms) running check" {
		t.Errorf("got %s %q, want critical %q", got.status, got.output, "Timed out (200ms) running check")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("script never wrote its child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the timed-out script still runs", pid)
		}
		<-time.After(5 * time.Millisecond) // polling interval
	}
}

// processAlive reports whether pid runs; a zombie (killed, not yet reaped by
// whatever adopted it) counts as dead.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func TestScriptStopKills(t *testing.T) {
	n := newFakeNotifier(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	r := start(t, "s", &structs.CheckType{Args: shScript(`echo $$ > ` + pidFile + `; exec sleep 60`), Interval: dur(time.Hour)}, Options{Notify: n, EnableScriptChecks: true})

	// Poll until the script has started.
	deadline := time.Now().Add(waitTimeout)
	var b []byte
	for {
		var err error
		if b, err = os.ReadFile(pidFile); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("script never started")
		}
		<-time.After(5 * time.Millisecond) // polling interval
	}
	stopped := make(chan struct{})
	go func() { r.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop did not return while a script ran")
	}
	if len(n.ch) != 0 {
		t.Errorf("stopped script was reported: %+v", <-n.ch)
	}
	if runtime.GOOS == "linux" {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if processAlive(pid) {
			t.Errorf("script %d still runs after Stop", pid)
		}
	}
}

func TestScriptRefusedWhenDisabled(t *testing.T) {
	n := newFakeNotifier(t)
	r, err := New("s", &structs.CheckType{Args: shScript("exit 0"), Interval: dur(testInterval)}, Options{Notify: n})
	if err == nil {
		r.Stop()
		t.Fatal("New accepted a script check with scripts disabled")
	}
	if !errors.Is(err, ErrScriptsDisabled) {
		t.Errorf("err = %v, want ErrScriptsDisabled", err)
	}
	const consul = "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true"
	if ErrScriptsDisabled.Error() != consul {
		t.Errorf("ErrScriptsDisabled = %q, want Consul's %q", ErrScriptsDisabled, consul)
	}
}
