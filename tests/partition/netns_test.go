//go:build netns

package partition

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The private network: a bridge namespace holding br0 and one end of
// each server's veth pair (vethN), and one namespace per server holding
// the other end (eth0) with the server's address. Nothing is added to
// the root namespace, and the addresses exist only inside these
// namespaces, so fixed ports and a fixed subnet cannot clash with
// anything: not even with another run, whose namespaces are its own.
const (
	nsPrefix  = "trellis-part-"
	subnet    = "10.213.7." // a /24
	firstHost = 11          // server i (from 0) is subnet + (firstHost+i)
)

// netnsNames matches our namespaces and captures the pid of the test
// process that made them.
var netnsNames = regexp.MustCompile(`^` + regexp.QuoteMeta(nsPrefix) + `(\d+)-`)

// runs numbers the networks of one test process (-count=N runs the test
// N times in it), so that no two share a name.
var runs atomic.Int64

type network struct {
	bridge  string   // the bridge namespace
	servers []string // server i's namespace
}

// newNetwork builds a bridge namespace and n server namespaces joined to
// it, and deletes them all when t ends. It fails t, rather than skipping,
// when it cannot: the test is only run when asked for (-tags netns).
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	removeStale(t)
	prefix := fmt.Sprintf("%s%d-%d-", nsPrefix, os.Getpid(), runs.Add(1))
	nw := &network{bridge: prefix + "br"}
	for i := range n {
		nw.servers = append(nw.servers, fmt.Sprintf("%ss%d", prefix, i+1))
	}
	var made []string
	t.Cleanup(func() {
		// Deleting a namespace deletes the links in it, and a veth pair
		// goes with either end. The servers must be dead by now (their
		// cleanups run first), or their namespaces outlive the name.
		for _, ns := range made {
			if err := ip("netns", "del", ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	add := func(ns string) {
		t.Helper()
		if err := ip("netns", "add", ns); err != nil {
			t.Fatalf("cannot create network namespaces (the test needs root and iproute2): %v", err)
		}
		made = append(made, ns)
		must(t, ip("-n", ns, "link", "set", "lo", "up"))
	}
	add(nw.bridge)
	must(t, ip("-n", nw.bridge, "link", "add", "br0", "type", "bridge"))
	must(t, ip("-n", nw.bridge, "link", "set", "br0", "up"))
	for i, ns := range nw.servers {
		add(ns)
		veth := nw.veth(i)
		// Made in the bridge namespace with its peer sent straight into
		// the server's: no end ever appears in the root namespace.
		must(t, ip("-n", nw.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns))
		must(t, ip("-n", nw.bridge, "link", "set", veth, "master", "br0", "up"))
		must(t, ip("-n", ns, "addr", "add", serverIP(i)+"/24", "dev", "eth0"))
		must(t, ip("-n", ns, "link", "set", "eth0", "up"))
	}
	return nw
}

func serverIP(i int) string { return subnet + strconv.Itoa(firstHost+i) }

// veth is the bridge-side name of server i's veth pair.
func (nw *network) veth(i int) string { return fmt.Sprintf("veth%d", i+1) }

// cut takes server i off the bridge: its end of the pair loses carrier,
// so nothing passes either way, while the server keeps its address and
// its own namespace (where the test reaches it) works as before.
func (nw *network) cut(t *testing.T, i int) {
	t.Helper()
	must(t, ip("-n", nw.bridge, "link", "set", nw.veth(i), "down"))
}

// heal puts server i back on the bridge.
func (nw *network) heal(t *testing.T, i int) {
	t.Helper()
	must(t, ip("-n", nw.bridge, "link", "set", nw.veth(i), "up"))
}

// removeStale deletes the namespaces of earlier runs whose test process
// is gone (killed before its cleanup ran); those of live processes, this
// one's included, are left alone.
func removeStale(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("cannot list network namespaces (the test needs root and iproute2): ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "name (id: 3)" or "name"
		if len(f) == 0 {
			continue
		}
		m := netnsNames.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if err := ip("netns", "del", f[0]); err != nil {
			t.Logf("stale namespace: %v", err)
		} else {
			t.Logf("deleted stale namespace %s", f[0])
		}
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// nsDialer dials from inside a named network namespace, for an
// http.Transport in the test process, which stays in the root namespace.
// A socket belongs to the namespace of the thread that created it, for
// good, so only the dial runs on a thread switched into ns.
type nsDialer struct{ ns string }

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, restored, err := d.dialLocked(ctx, network, addr)
		if restored {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread is in the wrong namespace: ending this
		// goroutine still locked to it makes the runtime discard it.
		done <- result{c, err}
	}()
	// The dial honours ctx, so this wait is no longer than the request's.
	r := <-done
	return r.c, r.err
}

// dialLocked dials addr from ns on the current, locked thread. restored
// is false when the thread could not be put back in its own namespace.
// addr must be an IP and port: a name lookup might run on another thread.
func (d nsDialer) dialLocked(ctx context.Context, network, addr string) (c net.Conn, restored bool, err error) {
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, fmt.Errorf("dial %s in %s: %w", addr, d.ns, err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + d.ns)
	if err != nil {
		return nil, true, fmt.Errorf("dial %s in %s: %w", addr, d.ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("dial %s in %s: setns: %w", addr, d.ns, err)
	}
	var dialer net.Dialer
	c, err = dialer.DialContext(ctx, network, addr)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The connection, if any, is good: it stays in ns.
		return c, false, err
	}
	return c, true, err
}
