// Package durability checks that a server agent with a data dir keeps
// everything across restarts: a clean SIGTERM and a kill -9.
package durability

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

type proc struct {
	cmd      *exec.Cmd
	httpAddr string
	exited   chan error
}

var httpLine = regexp.MustCompile(`HTTP API: (\S+)`)

// freePort reserves a loopback port long enough to hand it to the agent;
// the agent must reuse one raft port across restarts.
func freePort(t *testing.T) int { return testbin.FreePort(t, "127.0.0.1") }

func start(t *testing.T, dataDir string, serverPort int, extra ...string) *proc {
	t.Helper()
	args := append([]string{"agent", "-server", "-bootstrap-expect", "1", "-data-dir", dataDir,
		"-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "durable",
		"-http-port", "0", "-dns-port", "-1", "-grpc-port", "-1",
		"-server-port", fmt.Sprint(serverPort), "-serf-lan-port", "0", "-serf-wan-port", "0"}, extra...)
	cmd := exec.Command(binary, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := httpLine.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
			}
		}
	}()
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.httpAddr = <-addrCh:
	case err := <-p.exited:
		t.Fatalf("agent exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not start within 30s")
	}
	return p
}

func client(t *testing.T, p *proc) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: p.httpAddr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeState puts keys, a catalog registration, an agent service and a
// session lock, and returns what to look for after the restart.
func writeState(t *testing.T, c *api.Client) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if _, err := c.KV().Put(&api.KVPair{Key: fmt.Sprintf("app/k%02d", i), Value: []byte(fmt.Sprint("v", i)), Flags: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: "external", Address: "127.0.0.2",
		Service: &api.AgentService{ID: "db1", Service: "db", Port: 5432, Tags: []string{"primary"}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web1", Name: "web", Port: 8080, Tags: []string{"v1"},
		Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
}

func checkState(t *testing.T, c *api.Client) {
	t.Helper()
	pairs, _, err := c.KV().List("app/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 50 {
		t.Fatalf("after restart: %d keys under app/, want 50", len(pairs))
	}
	if string(pairs[7].Value) != "v7" || pairs[7].Flags != 7 {
		t.Errorf("after restart: app/k07 = %q flags %d, want v7 flags 7", pairs[7].Value, pairs[7].Flags)
	}
	db, _, err := c.Catalog().Service("db", "primary", nil)
	if err != nil || len(db) != 1 || db[0].Address != "127.0.0.2" || db[0].ServicePort != 5432 {
		t.Fatalf("after restart: catalog db = %+v, %v", db, err)
	}
	// The agent's own service must survive too: anti-entropy must not
	// remove it because the agent forgot it.
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["web1"]; !ok {
		t.Fatalf("after restart: agent services = %v, want web1", svcs)
	}
	web, _, err := c.Catalog().Service("web", "", nil)
	if err != nil || len(web) != 1 {
		t.Fatalf("after restart: catalog web = %+v, %v", web, err)
	}
}

func TestRestartAfterSIGTERM(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	p := start(t, dir, port)
	writeState(t, client(t, p))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v, want status 0", err)
		}
		p.exited <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop within 30s of SIGTERM")
	}
	checkState(t, client(t, start(t, dir, port)))
}

func TestRestartAfterKill9(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	p := start(t, dir, port)
	c := client(t, p)
	writeState(t, c)
	// Every acknowledged write must survive, including the last one.
	if _, err := c.KV().Put(&api.KVPair{Key: "last", Value: []byte("acked")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	p.exited <- nil
	c2 := client(t, start(t, dir, port))
	checkState(t, c2)
	kv, _, err := c2.KV().Get("last", nil)
	if err != nil || kv == nil || string(kv.Value) != "acked" {
		t.Fatalf("after kill -9: last = %+v, %v; want acked", kv, err)
	}
}

// Review finding: persisted API checks were loaded before the config's
// services, so a check bound to a config service was dropped on restart.
func TestRestartKeepsAPICheckOnConfigService(t *testing.T) {
	dir, cfgDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "web.json"), []byte(`{"service": {"name": "web", "port": 80}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := start(t, dir, port, "-config-dir", cfgDir)
	if err := client(t, p).Agent().CheckRegister(&api.AgentCheckRegistration{ID: "web-extra", Name: "web-extra", ServiceID: "web",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	p.exited <- nil
	c := client(t, start(t, dir, port, "-config-dir", cfgDir))
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if ch := checks["web-extra"]; ch == nil || ch.ServiceID != "web" {
		t.Fatalf("after restart: agent checks = %v, want web-extra on web", checks)
	}
	hc, _, err := c.Health().Checks("web", nil)
	if err != nil || len(hc) != 1 || hc[0].CheckID != "web-extra" {
		t.Fatalf("after restart: catalog checks of web = %+v, %v", hc, err)
	}
}

// SIGHUP reloads services and checks from the config files; -pid-file
// names the process and goes away on shutdown.
func TestSIGHUPReloadsAndPidFile(t *testing.T) {
	dir, cfgDir := t.TempDir(), t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "trellis.pid")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(cfgDir, "svc.json"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"service": {"name": "before", "port": 1}}`)
	p := start(t, dir, freePort(t), "-config-dir", cfgDir, "-pid-file", pidFile)
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(p.cmd.Process.Pid) {
		t.Fatalf("pid file = %q, %v; want %d", b, err, p.cmd.Process.Pid)
	}
	c := client(t, p)
	write(`{"service": {"name": "after", "port": 2}}`)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := c.Agent().Services()
		if err == nil && svcs["after"] != nil && svcs["before"] == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("services 30s after SIGHUP = %v, %v; want only after", svcs, err)
		}
		<-time.After(20 * time.Millisecond) // poll again, until the deadline
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := <-p.exited; err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
	p.exited <- nil
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file still there after shutdown: %v", err)
	}
}
