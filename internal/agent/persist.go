package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// Services and checks registered over the API are persisted in the data
// dir, one file each, so that after a restart the agent still has them and
// anti-entropy does not remove them from the catalog.

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func (a *Agent) persistPath(kind, id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(a.cfg.DataDir, kind, hex.EncodeToString(sum[:16])+".json")
}

func (a *Agent) persist(kind, id string, v any) {
	if a.cfg.DataDir == "" {
		return
	}
	b, err := json.Marshal(v)
	if err == nil {
		if err = os.MkdirAll(filepath.Join(a.cfg.DataDir, kind), 0o700); err == nil {
			err = writeFileAtomic(a.persistPath(kind, id), b)
		}
	}
	if err != nil {
		a.logger.Error("persisting local definition", "kind", kind, "id", id, "error", err)
	}
}

func (a *Agent) persistService(def *structs.ServiceDefinition) {
	id := def.ID
	if id == "" {
		id = def.Name
	}
	a.persist("services", id, def)
}

func (a *Agent) persistCheck(id string, def *structs.CheckType) {
	a.persist("checks", id, def)
}

func (a *Agent) unpersist(kind, id string) {
	if a.cfg.DataDir == "" {
		return
	}
	if err := os.Remove(a.persistPath(kind, id)); err != nil && !os.IsNotExist(err) {
		a.logger.Warn("removing persisted definition", "kind", kind, "id", id, "error", err)
	}
}

// loadPersisted re-registers the services and checks persisted by an
// earlier run. A file that cannot be read is reported and skipped.
func (a *Agent) loadPersisted() error {
	if a.cfg.DataDir == "" {
		return nil
	}
	for _, kind := range []string{"services", "checks"} {
		files, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, kind, "*.json"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("agent: reading %s: %w", f, err)
			}
			if kind == "services" {
				var def structs.ServiceDefinition
				if err := json.Unmarshal(b, &def); err != nil {
					a.logger.Error("skipping unreadable persisted service", "file", f, "error", err)
					continue
				}
				if err := a.addService(&def, false, sourceAPI); err != nil {
					a.logger.Error("restoring persisted service", "file", f, "error", err)
				}
				continue
			}
			var def structs.CheckType
			if err := json.Unmarshal(b, &def); err != nil {
				a.logger.Error("skipping unreadable persisted check", "file", f, "error", err)
				continue
			}
			if err := a.addCheck(&def, sourceAPI); err != nil {
				a.logger.Error("restoring persisted check", "file", f, "error", err)
			}
		}
	}
	return nil
}

// persistedSidecarPorts returns the ports of the sidecars that the
// persisted API registrations will bring back. Config services load
// first, and a config sidecar given a port automatically must not take
// one of these.
func (a *Agent) persistedSidecarPorts() map[int]bool {
	if a.cfg.DataDir == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, "services", "*.json"))
	ports := make(map[int]bool)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // loadPersisted reports it
		}
		var def structs.ServiceDefinition
		if json.Unmarshal(b, &def) != nil {
			continue
		}
		if def.Kind == structs.ServiceKindConnectProxy && def.Port != 0 {
			ports[def.Port] = true
		}
		if def.Connect != nil && def.Connect.SidecarService != nil && def.Connect.SidecarService.Port != 0 {
			ports[def.Connect.SidecarService.Port] = true
		}
	}
	return ports
}
