//go:build netns

package partition

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Every server has its own namespace and address, so all use the same
// ports.
const (
	httpPort   = 8500
	serfPort   = 8301
	serverPort = 8300
)

// server is one trellis server process running in its own namespace.
type server struct {
	name, ns, ip string
	transport    *http.Transport // dials into ns
	http         *http.Client
	api          *api.Client

	cmd    *exec.Cmd
	out    *output
	exited chan struct{}
}

// raftAddr is the address the servers, and /v1/status/leader, name it by.
func (s *server) raftAddr() string { return fmt.Sprintf("%s:%d", s.ip, serverPort) }

func (s *server) httpAddr() string { return fmt.Sprintf("%s:%d", s.ip, httpPort) }

// startServers starts a server in each of nw's server namespaces, joined
// to the others, and waits until each serves HTTP. The processes are
// killed, and their output shown if t failed, when t ends.
func startServers(t *testing.T, nw *network) []*server {
	t.Helper()
	var all []*server
	for i, ns := range nw.servers {
		s := &server{name: fmt.Sprintf("s%d", i+1), ns: ns, ip: serverIP(i)}
		// A write is held for up to 7s while there is no leader; the
		// timeout leaves room for that on a loaded machine.
		s.transport = &http.Transport{DialContext: nsDialer{ns}.DialContext, MaxIdleConnsPerHost: 4}
		s.http = &http.Client{Transport: s.transport, Timeout: 30 * time.Second}
		cfg := api.DefaultNonPooledConfig()
		cfg.Address = s.httpAddr()
		cfg.HttpClient = s.http
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.api = c
		all = append(all, s)
	}
	for _, s := range all {
		s.start(t, all)
	}
	for _, s := range all {
		s.waitReady(t)
	}
	return all
}

func (s *server) start(t *testing.T, all []*server) {
	t.Helper()
	args := []string{"netns", "exec", s.ns, binary, "agent", "-server", "-bootstrap-expect", fmt.Sprint(len(all)),
		"-data-dir", t.TempDir(), "-node", s.name, "-bind", s.ip, "-client", s.ip,
		"-http-port", fmt.Sprint(httpPort), "-serf-lan-port", fmt.Sprint(serfPort), "-server-port", fmt.Sprint(serverPort),
		"-serf-wan-port", "-1", "-dns-port", "-1", "-grpc-port", "-1", "-retry-interval", "200ms", "-log-level", "warn"}
	for _, o := range all {
		if o != s {
			args = append(args, "-retry-join", fmt.Sprintf("%s:%d", o.ip, serfPort))
		}
	}
	// ip netns exec execs the binary in place, so cmd's process is the
	// server itself.
	s.cmd = exec.Command("ip", args...)
	s.out = &output{ready: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Should the test process die before its cleanup, so do the servers.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.name, err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.kill()
		s.transport.CloseIdleConnections()
		if t.Failed() {
			t.Logf("output of %s (%s in %s):\n%s", s.name, s.ip, s.ns, s.out.String())
		}
	})
}

func (s *server) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-s.out.ready:
	case <-s.exited:
		t.Fatalf("%s exited before serving: %v\n%s", s.name, s.cmd.ProcessState, s.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not serve within 30s", s.name)
	}
}

// kill ends the process as a crash would and waits for it.
func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// do sends a raw request, for the status code and headers the api
// package hides.
func (s *server) do(method, path, body string) (status int, h http.Header, text string, err error) {
	req, err := http.NewRequest(method, "http://"+s.httpAddr()+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, "", fmt.Errorf("%s %s on %s: %w", method, path, s.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b)), err
}

// output keeps a server's stdout and stderr and closes ready once the
// HTTP API is up.
type output struct {
	mu    sync.Mutex
	buf   bytes.Buffer // guarded by mu
	ready chan struct{}
	seen  bool // guarded by mu; ready is closed
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if !o.seen && bytes.Contains(o.buf.Bytes(), []byte("HTTP API: ")) {
		o.seen = true
		close(o.ready)
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
