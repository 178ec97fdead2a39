// Package dataplane runs the whole mesh as real processes: a dev agent
// and two `trellis connect proxy` sidecars carrying an application's
// traffic to its upstream over mTLS, with intentions deciding.
package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

func freePort(t *testing.T) int { return testbin.FreePort(t, "127.0.0.1") }

// start runs the binary with args and returns the first submatch of each
// pattern as the process prints it, waiting at most 30 s for all.
func start(t *testing.T, args []string, patterns ...*regexp.Regexp) []string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%v stderr:\n%s", args[:2], stderr.String())
		}
	})
	found := make(chan []string, 1)
	go func() {
		got := make([]string, len(patterns))
		n := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			for i, p := range patterns {
				if m := p.FindStringSubmatch(sc.Text()); m != nil && got[i] == "" {
					got[i] = m[1]
					if n++; n == len(patterns) {
						found <- got
					}
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case got := <-found:
		return got
	case err := <-exited:
		t.Fatalf("%v exited before it was ready: %v\n%s", args[:2], err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%v not ready within 30s\n%s", args[:2], stderr.String())
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// echo serves a TCP echo on a free loopback port until the test ends.
func echo(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// roundTrip sends a line through addr and reports whether it came back.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	msg := "hello through the mesh\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if got != msg {
		return fmt.Errorf("got %q", got)
	}
	return nil
}

// eventually polls cond until it returns nil, failing after 30 s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		<-tick.C
	}
}

func TestSidecarsCarryTrafficAndEnforceIntentions(t *testing.T) {
	agent := start(t, []string{"agent", "-dev", "-node", "dp", "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", "0", "-dns-port", "-1", "-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "0",
		"-log-level", "warn"},
		regexp.MustCompile(`HTTP API: ([0-9.:]+)`), regexp.MustCompile(`gRPC \(xDS\): ([0-9.:]+)`))
	httpAddr, grpcAddr := agent[0], agent[1]
	c, err := api.NewClient(&api.Config{Address: httpAddr})
	if err != nil {
		t.Fatal(err)
	}

	dbApp, dbSidecar, webSidecar, upstream := echo(t), freePort(t), freePort(t), freePort(t)
	listening := func(port int) api.AgentServiceChecks {
		return api.AgentServiceChecks{{Name: "listening", TCP: "127.0.0.1:" + strconv.Itoa(port), Interval: "300ms"}}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db-1", Name: "db", Port: dbApp,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: dbSidecar, Checks: listening(dbSidecar)}}}))
	must(c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: freePort(t),
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: webSidecar, Checks: listening(webSidecar),
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: upstream}}}}}}))

	ready := regexp.MustCompile(`admin on http://(127\.0\.0\.1:[0-9]+)`)
	for _, svc := range []string{"db-1", "web-1"} {
		start(t, []string{"connect", "proxy", "-sidecar-for", svc, "-http-addr", httpAddr, "-grpc-addr", grpcAddr,
			"-admin-bind", "127.0.0.1:0"}, ready)
	}
	up := "127.0.0.1:" + strconv.Itoa(upstream)
	eventually(t, "web reaches db through both sidecars", func() error { return roundTrip(up) })

	// A deny intention closes web's connections to db ...
	_, err = c.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil)
	must(err)
	eventually(t, "the deny intention refuses web", func() error {
		if err := roundTrip(up); err == nil {
			return fmt.Errorf("a round trip still passed")
		}
		return nil
	})
	// ... and removing it lets them through again.
	_, err = c.Connect().IntentionDeleteExact("web", "db", nil)
	must(err)
	eventually(t, "web reaches db again after the intention is removed", func() error { return roundTrip(up) })
}
