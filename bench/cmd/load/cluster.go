package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clusterOptions are the flags of `load cluster`.
type clusterOptions struct {
	agentBin     string
	out          string
	goVersion    string
	dir          string
	ips          []string
	workers      int
	putOps       int
	leaderOps    int
	afterOps     int
	getOps       int
	kvKeys       int
	valueSize    int
	failovers    int
	gomaxprocs   int
	settle       time.Duration
	startWait    time.Duration
	failoverWait time.Duration
}

func parseClusterFlags(args []string, stderr io.Writer) (*clusterOptions, error) {
	o := &clusterOptions{}
	var ips string
	fs := flag.NewFlagSet("load cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.agentBin, "agent", "", "path of the trellis binary to start (required)")
	fs.StringVar(&o.out, "out", "", "write the results table to this Markdown file (overwritten)")
	fs.StringVar(&o.goVersion, "go-version", "", "output of go version, recorded in -out")
	fs.StringVar(&o.dir, "dir", "", "directory for the servers' data dirs and logs (default: a new temporary directory, removed at the end)")
	fs.StringVar(&ips, "ips", "127.0.0.11,127.0.0.12,127.0.0.13", "comma-separated loopback addresses, one server on each")
	fs.IntVar(&o.workers, "workers", 16, "concurrent clients in each phase")
	fs.IntVar(&o.putOps, "put-ops", 20000, "KV PUTs spread over every server")
	fs.IntVar(&o.leaderOps, "leader-ops", 10000, "KV PUTs sent to the leader only; 0 skips the phase")
	fs.IntVar(&o.afterOps, "after-ops", 20000, "KV PUTs spread over every server after the failover rounds; 0 skips the phase")
	fs.IntVar(&o.getOps, "get-ops", 20000, "?consistent KV GETs spread over every server")
	fs.IntVar(&o.kvKeys, "kv-keys", 1000, "size of the KV key space")
	fs.IntVar(&o.valueSize, "value-size", 1024, "KV value size in bytes")
	fs.IntVar(&o.failovers, "failovers", 10, "leader kill -9 rounds; 0 skips the phase")
	fs.IntVar(&o.gomaxprocs, "server-gomaxprocs", 0, "GOMAXPROCS of each server; 0 leaves Go's default (the number of CPUs)")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "pause before each RSS reading (a measurement point, not a synchronisation)")
	fs.DurationVar(&o.startWait, "start-timeout", 60*time.Second, "how long the cluster may take to elect a leader that accepts writes, and a restarted server to catch up")
	fs.DurationVar(&o.failoverWait, "failover-timeout", 30*time.Second, "how long a failover round may take before the phase is abandoned")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for ip := range strings.SplitSeq(ips, ",") {
		if a := net.ParseIP(strings.TrimSpace(ip)); a == nil || !a.IsLoopback() {
			return nil, fmt.Errorf("load cluster: -ips: %q is not a loopback address", ip)
		}
		o.ips = append(o.ips, strings.TrimSpace(ip))
	}
	switch {
	case o.agentBin == "":
		return nil, errors.New("load cluster: -agent is required")
	case len(o.ips) < 3:
		return nil, errors.New("load cluster: -ips needs at least three addresses: the failover phase kills one server and needs a quorum left")
	case o.workers < 1 || o.putOps < 1 || o.getOps < 1 || o.kvKeys < 1 || o.valueSize < 1:
		return nil, errors.New("load cluster: -workers, -put-ops, -get-ops, -kv-keys and -value-size must be positive")
	case o.leaderOps < 0 || o.afterOps < 0 || o.failovers < 0:
		return nil, errors.New("load cluster: -leader-ops, -after-ops and -failovers must not be negative")
	}
	return o, nil
}

// runCluster is `load cluster`: it measures a three-server cluster.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseClusterFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 2
	}
	rep, err := measureCluster(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "load cluster: %v\n", err)
		return 1
	}
	table := rep.table()
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, table)
	fmt.Fprint(stdout, rep.notes())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(rep.markdown(table)), 0o644); err != nil {
			fmt.Fprintf(stderr, "load cluster: writing results: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", o.out)
	}
	return 0
}

// member is one server of the benchmark cluster: its fixed identity
// (address, ports, data dir), kept across restarts, and its current
// process, if any.
type member struct {
	name, ip, dir               string
	httpPort, serfPort, rpcPort int
	log                         string // the process's stdout and stderr, appended across restarts
	cl                          *client

	mu     sync.Mutex
	cmd    *exec.Cmd     // guarded by mu; nil when not running
	exited chan struct{} // guarded by mu; closed once cmd has been waited for
}

func (m *member) httpAddr() string { return net.JoinHostPort(m.ip, strconv.Itoa(m.httpPort)) }

// raftAddr is the address /v1/status/leader names this server by.
func (m *member) raftAddr() string { return net.JoinHostPort(m.ip, strconv.Itoa(m.rpcPort)) }

func (m *member) pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *member) running() bool { return m.pid() != 0 }

// start runs the member's server process, joined to the others, and
// waits until it prints its HTTP address (it is then listening).
func (m *member) start(ctx context.Context, c *cluster) error {
	all, timeout := c.members, c.wait
	args := []string{"agent", "-server", "-bootstrap-expect", strconv.Itoa(len(all)), "-data-dir", m.dir,
		"-node", m.name, "-bind", m.ip, "-client", m.ip, "-http-port", strconv.Itoa(m.httpPort),
		"-serf-lan-port", strconv.Itoa(m.serfPort), "-server-port", strconv.Itoa(m.rpcPort),
		"-serf-wan-port", "0", "-dns-port", "-1", "-grpc-port", "-1", "-retry-interval", "200ms",
		"-log-level", "warn"}
	for _, o := range all {
		if o != m {
			args = append(args, "-retry-join", net.JoinHostPort(o.ip, strconv.Itoa(o.serfPort)))
		}
	}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log: %w", m.name, err)
	}
	fmt.Fprintf(logf, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), m.name)
	cmd := exec.Command(c.bin, args...)
	if c.gomaxprocs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(c.gomaxprocs))
	}
	cmd.Stderr = logf
	// If this process dies without cleaning up, the kernel kills the
	// servers rather than leave them holding the ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return fmt.Errorf("%s: stdout pipe: %w", m.name, err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: start %s: %w", m.name, c.bin, err)
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	// The reader owns the pipe to its end (Wait must not run before the
	// reads finish), so it is also the goroutine that waits for the
	// process; it copies stdout to the log.
	go func() {
		sc := bufio.NewScanner(out)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if strings.Contains(line, "HTTP API:") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(logf, out)
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()

	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-exited:
		m.mu.Lock()
		m.cmd = nil
		m.mu.Unlock()
		return fmt.Errorf("%s exited before serving (%s)", m.name, cmd.ProcessState)
	case <-t.C:
		err = fmt.Errorf("%s did not print its HTTP address within %v", m.name, timeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	m.kill()
	return err
}

// kill ends the process as a crash would (SIGKILL) and waits for it.
func (m *member) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// freePort asks the OS for a port on ip that is free for TCP and UDP (the
// gossip port needs both) and releases it for a server to take.
func freePort(ip string) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, fmt.Errorf("port on %s: %w", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("port on %s: no port free for both TCP and UDP", ip)
}

// cluster is the benchmark's servers.
type cluster struct {
	bin        string
	gomaxprocs int // of each server, if positive
	members    []*member
	wait       time.Duration
}

func newCluster(o *clusterOptions, dir string) (*cluster, error) {
	c := &cluster{bin: o.agentBin, gomaxprocs: o.gomaxprocs, wait: o.startWait}
	for i, ip := range o.ips {
		m := &member{name: fmt.Sprintf("s%d", i+1), ip: ip}
		m.dir = filepath.Join(dir, m.name)
		m.log = filepath.Join(dir, m.name+".log")
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return nil, err
		}
		for _, p := range []*int{&m.httpPort, &m.serfPort, &m.rpcPort} {
			port, err := freePort(ip)
			if err != nil {
				return nil, err
			}
			*p = port
		}
		m.cl = newClient(m.httpAddr(), o.workers)
		c.members = append(c.members, m)
	}
	return c, nil
}

func (c *cluster) start(ctx context.Context) error {
	for _, m := range c.members {
		if err := m.start(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// close kills every server and drops the clients' connections.
func (c *cluster) close() {
	for _, m := range c.members {
		m.kill()
		m.cl.close()
	}
}

func (c *cluster) byRaftAddr(addr string) *member {
	for _, m := range c.members {
		if m.raftAddr() == addr {
			return m
		}
	}
	return nil
}

// leaderOf asks m who leads.
func (m *member) leaderOf(ctx context.Context) (string, error) {
	body, _, err := m.cl.do(ctx, http.MethodGet, "/v1/status/leader", nil, true)
	if err != nil {
		return "", err
	}
	var addr string
	if err := json.Unmarshal(body, &addr); err != nil {
		return "", fmt.Errorf("%s: /v1/status/leader: %w", m.name, err)
	}
	return addr, nil
}

// poll calls cond every interval until it returns nil or timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %v: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}

// waitLeader waits until every running member names the same leader, a
// running member, and that leader accepts a write; it returns the leader.
func (c *cluster) waitLeader(ctx context.Context) (*member, error) {
	var leader *member
	err := poll(ctx, c.wait, 20*time.Millisecond, func(ctx context.Context) error {
		names := map[string]bool{}
		for _, m := range c.members {
			if !m.running() {
				continue
			}
			l, err := m.leaderOf(ctx)
			if err != nil || l == "" {
				return fmt.Errorf("%s knows no leader (%v)", m.name, err)
			}
			names[l] = true
		}
		if len(names) != 1 {
			return fmt.Errorf("members disagree on the leader: %v", names)
		}
		for l := range names {
			leader = c.byRaftAddr(l)
		}
		if leader == nil || !leader.running() {
			return fmt.Errorf("leader %v is not a running member", names)
		}
		_, _, err := leader.cl.do(ctx, http.MethodPut, "/v1/kv/bench/ready", []byte("1"), false)
		return err
	})
	return leader, err
}

// waitCaughtUp waits until the cluster is whole again after m restarted:
// every member agrees on a leader that accepts writes, the leader counts
// every member as a raft voter, and m serves from its own state (?stale)
// a write the leader made after the restart, so its log has caught up at
// least that far. It returns the leader.
func (c *cluster) waitCaughtUp(ctx context.Context, m *member, round int) (*member, error) {
	leader, err := c.waitLeader(ctx)
	if err != nil {
		return nil, err
	}
	marker := strconv.Itoa(round)
	const path = "/v1/kv/bench/failover/marker"
	if _, _, err := leader.cl.do(ctx, http.MethodPut, path, []byte(marker), false); err != nil {
		return nil, fmt.Errorf("marker write on leader %s: %w", leader.name, err)
	}
	err = poll(ctx, c.wait, 20*time.Millisecond, func(ctx context.Context) error {
		body, _, err := leader.cl.do(ctx, http.MethodGet, "/v1/status/peers", nil, true)
		if err != nil {
			return err
		}
		var peers []string
		if err := json.Unmarshal(body, &peers); err != nil {
			return fmt.Errorf("/v1/status/peers: %w", err)
		}
		if len(peers) != len(c.members) {
			return fmt.Errorf("leader %s has %d voters %v, want %d", leader.name, len(peers), peers, len(c.members))
		}
		body, _, err = m.cl.do(ctx, http.MethodGet, path+"?stale&raw", nil, true)
		if err != nil {
			return fmt.Errorf("%s: stale read of the marker: %w", m.name, err)
		}
		if string(body) != marker {
			return fmt.Errorf("%s: marker is %q, want %q", m.name, body, marker)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return leader, nil
}
