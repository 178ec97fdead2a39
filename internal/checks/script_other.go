//go:build !unix

package checks

import "os/exec"

// killProcessGroupOnCancel leaves exec's default, which kills only the
// process itself; children that hold its output open are cut off after
// scriptWaitDelay.
func killProcessGroupOnCancel(cmd *exec.Cmd) {}
