//go:build unix

package checks

import (
	"os/exec"
	"syscall"
)

// killProcessGroupOnCancel runs cmd in a process group of its own and, when
// its context ends, kills the whole group: a shell script's children would
// otherwise outlive it and keep its output pipe open.
func killProcessGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
