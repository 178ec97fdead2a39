// Package testbin builds the trellis binary once for a test package that
// runs it as real processes.
package testbin

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds the binary, runs the package's tests with its path, removes
// it, and exits with the tests' code. Call it from TestMain.
func Main(m *testing.M, set func(path string)) {
	dir, err := os.MkdirTemp("", "trellis-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	path := filepath.Join(dir, "trellis")
	build := exec.Command("go", "build", "-o", path, "github.com/trellis-mesh/trellis/cmd/trellis")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building trellis:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	set(path)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// FreePort returns a TCP port free on ip right now, for a process that
// must be told its port before it starts (raft and gossip peers name each
// other's ports).
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
