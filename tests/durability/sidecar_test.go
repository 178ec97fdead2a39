package durability

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
)

// A sidecar registered over the API is persisted with its port. When the
// agent restarts with a config file that adds another sidecar, the config
// sidecar (loaded first) must not be given the persisted one's port.
func TestRestartKeepsSidecarPortsApart(t *testing.T) {
	dir, cfgDir := t.TempDir(), t.TempDir()
	port := freePort(t)
	p := start(t, dir, port, "-config-dir", cfgDir)
	err := client(t, p).Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "api", Port: 9000,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{}}})
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := client(t, p).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	apiPort := svcs["api-sidecar-proxy"].Port
	if apiPort != 21000 {
		t.Fatalf("the API sidecar got port %d, want 21000", apiPort)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	p.exited <- nil

	if err := os.WriteFile(filepath.Join(cfgDir, "web.json"),
		[]byte(`{"service": {"name": "web", "port": 8080, "connect": {"sidecar_service": {}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := client(t, start(t, dir, port, "-config-dir", cfgDir))
	svcs, err = c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	a, w := svcs["api-sidecar-proxy"], svcs["web-sidecar-proxy"]
	if a == nil || w == nil {
		t.Fatalf("after restart: services %v, want both sidecars", svcs)
	}
	if a.Port != apiPort || w.Port == apiPort || w.Port < 21000 || w.Port > 21255 {
		t.Fatalf("after restart: api sidecar on %d (was %d), web sidecar on %d; want them apart in 21000-21255", a.Port, apiPort, w.Port)
	}
}
