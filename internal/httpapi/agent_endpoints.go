package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/structs"
	"github.com/trellis-mesh/trellis/internal/version"
)

func (a *API) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.deps.Agent.Self(), nil
}

func (a *API) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	// As Consul: any non-empty ?wan= means the WAN pool.
	return a.deps.Agent.Members(r.URL.Query().Get("wan") != ""), nil
}

func (a *API) agentServices(w http.ResponseWriter, r *http.Request) (any, error) {
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	svcs := a.deps.Agent.Services()
	if o.filter != nil {
		return applyFilter(o.filter, svcs)
	}
	return svcs, nil
}

// agentService answers /v1/agent/service/:id. It blocks by content hash,
// as Consul's does: with ?hash= equal to the current hash it waits (up to
// ?wait) for the service to change.
func (a *API) agentService(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	want := r.URL.Query().Get("hash")
	var timeout <-chan struct{}
	if want != "" {
		ctx, cancel := waitContext(r.Context(), o.wait)
		defer cancel()
		timeout = ctx.Done()
	}
	for {
		changed := a.deps.Agent.ServicesChanged()
		svc := a.deps.Agent.Service(id)
		if svc == nil {
			return nil, structs.NotFoundError{Reason: fmt.Sprintf("unknown service ID: %s", id)}
		}
		h, err := serviceHash(svc)
		if err != nil {
			return nil, err
		}
		if h != want {
			svc.ContentHash = h
			w.Header().Set("X-Consul-ContentHash", h)
			return svc, nil
		}
		select {
		case <-changed:
		case <-timeout:
			want = "" // answer with what there is
		}
	}
}

// serviceHash is a digest of a service as the agent reports it.
func serviceHash(svc *structs.NodeService) (string, error) {
	b, err := json.Marshal(svc)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func (a *API) agentServiceRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var def structs.ServiceDefinition
	if err := decodeBody(r, &def); err != nil {
		return nil, err
	}
	_, replace := r.URL.Query()["replace-existing-checks"]
	return nil, a.deps.Agent.AddService(&def, replace)
}

func (a *API) agentServiceDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	return nil, a.deps.Agent.RemoveService(r.PathValue("id"))
}

func (a *API) agentServiceMaintenance(w http.ResponseWriter, r *http.Request) (any, error) {
	enable, reason, err := maintenanceParams(r)
	if err != nil {
		return nil, err
	}
	return nil, a.deps.Agent.ServiceMaintenance(r.PathValue("id"), enable, reason)
}

func (a *API) agentMaintenance(w http.ResponseWriter, r *http.Request) (any, error) {
	enable, reason, err := maintenanceParams(r)
	if err != nil {
		return nil, err
	}
	return nil, a.deps.Agent.NodeMaintenance(enable, reason)
}

func maintenanceParams(r *http.Request) (bool, string, error) {
	q := r.URL.Query()
	v := q.Get("enable")
	if v == "" {
		return false, "", badRequest("Missing value for enable")
	}
	switch strings.ToLower(v) {
	case "true":
		return true, q.Get("reason"), nil
	case "false":
		return false, "", nil
	}
	return false, "", badRequest("Invalid value for enable: %q", v)
}

func (a *API) agentChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	o, err := parseQuery(r)
	if err != nil {
		return nil, err
	}
	checks := a.deps.Agent.Checks()
	if o.filter != nil {
		return applyFilter(o.filter, checks)
	}
	return checks, nil
}

func (a *API) agentCheckRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	// The body is Consul's CheckDefinition, which spells the check's ID
	// "ID" where service definitions say "CheckID"; the client sends "ID".
	var body struct {
		ID string
		structs.CheckType
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	def := body.CheckType
	if def.CheckID == "" {
		def.CheckID = body.ID
	}
	return nil, a.deps.Agent.AddCheck(&def)
}

func (a *API) agentCheckDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	return nil, a.deps.Agent.RemoveCheck(r.PathValue("id"))
}

func (a *API) agentCheckTTL(status string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		return nil, a.deps.Agent.UpdateTTLCheck(r.PathValue("id"), status, r.URL.Query().Get("note"))
	}
}

func (a *API) agentCheckUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Status string
		Output string
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if !structs.ValidStatus(body.Status) {
		return nil, badRequest("Invalid check status: '%s'", body.Status)
	}
	return nil, a.deps.Agent.UpdateTTLCheck(r.PathValue("id"), body.Status, body.Output)
}

// agentHealthEntry is one element of /v1/agent/health/service/*.
type agentHealthEntry struct {
	AggregatedStatus string
	Service          *structs.NodeService
	Checks           []*structs.HealthCheck
}

// aggregateStatus is the worst status among checks: maintenance, then
// critical, warning, passing.
func aggregateStatus(checks []*structs.HealthCheck) string {
	st := structs.HealthPassing
	for _, c := range checks {
		if strings.HasPrefix(c.CheckID, structs.ServiceMaintPrefix) || c.CheckID == structs.NodeMaintCheckID {
			return structs.HealthMaint
		}
		switch c.Status {
		case structs.HealthCritical:
			st = structs.HealthCritical
		case structs.HealthWarning:
			if st == structs.HealthPassing {
				st = structs.HealthWarning
			}
		}
	}
	return st
}

func (a *API) agentHealthFor(svc *structs.NodeService) agentHealthEntry {
	var checks []*structs.HealthCheck
	for _, c := range a.deps.Agent.Checks() {
		if c.ServiceID == svc.ID || c.ServiceID == "" {
			checks = append(checks, c)
		}
	}
	return agentHealthEntry{AggregatedStatus: aggregateStatus(checks), Service: svc, Checks: checks}
}

// healthCode is the HTTP status Consul answers for an aggregated status.
func healthCode(status string) int {
	switch status {
	case structs.HealthPassing:
		return http.StatusOK
	case structs.HealthWarning:
		return 429
	}
	return http.StatusServiceUnavailable
}

func (a *API) writeAgentHealth(w http.ResponseWriter, r *http.Request, status string, body any) (any, error) {
	code := healthCode(status)
	if _, ok := r.URL.Query()["format"]; ok && r.URL.Query().Get("format") == "text" {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprint(w, status)
		return nil, nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	return body, nil
}

func (a *API) agentHealthByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	svc := a.deps.Agent.Service(id)
	if svc == nil {
		return nil, structs.NotFoundError{Reason: fmt.Sprintf("ServiceId %s not found", id)}
	}
	e := a.agentHealthFor(svc)
	return a.writeAgentHealth(w, r, e.AggregatedStatus, e)
}

func (a *API) agentHealthByName(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	var out []agentHealthEntry
	worst := structs.HealthPassing
	rank := map[string]int{structs.HealthPassing: 0, structs.HealthWarning: 1, structs.HealthCritical: 2, structs.HealthMaint: 3}
	for _, svc := range a.deps.Agent.Services() {
		if svc.Service != name {
			continue
		}
		e := a.agentHealthFor(svc)
		out = append(out, e)
		if rank[e.AggregatedStatus] > rank[worst] {
			worst = e.AggregatedStatus
		}
	}
	if len(out) == 0 {
		return nil, structs.NotFoundError{Reason: fmt.Sprintf("ServiceName %s Not Found", name)}
	}
	return a.writeAgentHealth(w, r, worst, out)
}

func (a *API) agentReload(w http.ResponseWriter, r *http.Request) (any, error) {
	return nil, a.deps.Agent.Reload()
}

func (a *API) agentLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	return nil, a.deps.Agent.Leave()
}

func (a *API) agentJoin(w http.ResponseWriter, r *http.Request) (any, error) {
	addr := r.PathValue("addr")
	if addr == "" {
		return nil, badRequest("Missing address to join")
	}
	_, err := a.deps.Agent.Join([]string{addr}, r.URL.Query().Get("wan") != "")
	return nil, err
}

func (a *API) agentForceLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	node := r.PathValue("node")
	if node == "" {
		return nil, badRequest("Missing node name")
	}
	return nil, a.deps.Agent.ForceLeave(node, r.URL.Query().Has("prune"))
}

func (a *API) agentVersion(w http.ResponseWriter, r *http.Request) (any, error) {
	return map[string]any{
		"SHA":               "",
		"BuildDate":         "",
		"HumanVersion":      version.Version,
		"FIPS":              "",
		"Revision":          "",
		"Version":           version.Version,
		"VersionPrerelease": "",
		"VersionMetadata":   "",
	}, nil
}

func (a *API) agentMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	prom := r.URL.Query().Get("format") == "prometheus"
	ct, body, err := a.deps.Agent.Metrics(prom)
	if err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", ct)
	return rawBody(body), nil
}
