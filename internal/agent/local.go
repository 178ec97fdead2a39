package agent

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/checks"
	"github.com/trellis-mesh/trellis/internal/fsm"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// source says where a local service or check came from: config files are
// re-read on reload, API registrations are kept (and persisted).
type source int

const (
	sourceAPI source = iota
	sourceConfig
)

type localService struct {
	svc        *structs.NodeService
	source     source
	sidecarFor string // the parent's ID, for a sidecar_service registration
}

type localCheck struct {
	check         *structs.HealthCheck
	def           *structs.CheckType // nil for maintenance checks
	runner        checks.Runner
	source        source
	criticalSince time.Time
}

func badRequest(format string, args ...any) error {
	return structs.BadRequestError{Reason: fmt.Sprintf(format, args...)}
}

// validateService checks a service definition and returns its instance.
func validateService(def *structs.ServiceDefinition) (*structs.NodeService, error) {
	if def.Name == "" {
		return nil, badRequest("Missing service name")
	}
	if def.Port < 0 || def.Port > 65535 {
		return nil, badRequest("Invalid service port %d: must be between 0 and 65535", def.Port)
	}
	if def.Weights != nil && (def.Weights.Passing < 1 || def.Weights.Warning < 0) {
		return nil, badRequest("Passing must be greater than 0")
	}
	if err := def.ValidateConnect(); err != nil {
		return nil, badRequest("%v", err)
	}
	ns := def.NodeService()
	if ns.Meta == nil {
		ns.Meta = map[string]string{}
	}
	if ns.Tags == nil {
		ns.Tags = []string{}
	}
	return ns, nil
}

// scriptsAllowed reports whether a script check from src may run: any with
// enable_script_checks, only those from config files with
// enable_local_script_checks (the API must not be a way to run commands).
func (a *Agent) scriptsAllowed(src source) bool {
	return a.cfg.EnableScriptChecks || (src == sourceConfig && a.cfg.EnableLocalScriptChecks)
}

// lookupService returns a local service by ID, or nil.
func (a *Agent) lookupService(id string) *structs.NodeService {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ls := a.services[id]; ls != nil {
		return ls.svc
	}
	return nil
}

// checkFromDef validates a check definition and builds the catalog check
// it reports as. svc is the service whose definition embeds it, or nil;
// a standalone check's ServiceID is looked up with resolve.
func (a *Agent) checkFromDef(def *structs.CheckType, svc *structs.NodeService, n, total int, src source,
	resolve func(id string) *structs.NodeService) (*structs.HealthCheck, error) {
	id := def.CheckID
	if svc != nil && id == "" {
		id = "service:" + svc.ID
		if total > 1 {
			id = fmt.Sprintf("service:%s:%d", svc.ID, n+1)
		}
	}
	if id == "" {
		id = def.Name
	}
	if id == "" {
		return nil, badRequest("Missing check name")
	}
	name := def.Name
	if name == "" {
		if svc != nil {
			name = fmt.Sprintf("Service '%s' check", svc.Service)
		} else {
			name = id
		}
	}
	status := def.Status
	if status == "" {
		status = structs.HealthCritical
	}
	if !structs.ValidStatus(status) {
		return nil, badRequest("Status for checks must 'passing', 'warning', 'critical'")
	}
	typ := def.Type()
	switch typ {
	case "":
		return nil, badRequest("Check %q: must provide TTL or Args/HTTP/TCP/GRPC and an Interval", id)
	case "alias":
		if err := a.validateAlias(id, def); err != nil {
			return nil, err
		}
	case "http", "tcp", "grpc", "script":
		if def.Interval <= 0 {
			return nil, badRequest("Check %q: Interval must be > 0 for Script, HTTP, gRPC or TCP checks", id)
		}
	}
	if typ == "script" && !a.scriptsAllowed(src) {
		return nil, badRequest("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true")
	}
	if def.Timeout < 0 || def.Interval < 0 || def.DeregisterCriticalServiceAfter < 0 {
		return nil, badRequest("Check %q: durations must not be negative", id)
	}
	hc := &structs.HealthCheck{
		Node:    a.nodeName,
		CheckID: id,
		Name:    name,
		Status:  status,
		Notes:   def.Notes,
		Type:    typ,
		Definition: structs.HealthCheckDefinition{
			HTTP:                           def.HTTP,
			TLSServerName:                  def.TLSServerName,
			TLSSkipVerify:                  def.TLSSkipVerify,
			Header:                         def.Header,
			Method:                         def.Method,
			Body:                           def.Body,
			TCP:                            def.TCP,
			GRPC:                           def.GRPC,
			GRPCUseTLS:                     def.GRPCUseTLS,
			Interval:                       def.Interval,
			Timeout:                        def.Timeout,
			DeregisterCriticalServiceAfter: def.DeregisterCriticalServiceAfter,
			ScriptArgs:                     def.ScriptArgsOrArgs(),
		},
	}
	if def.Interval > 0 {
		hc.Interval = def.Interval.String()
	}
	if def.Timeout > 0 {
		hc.Timeout = def.Timeout.String()
	}
	if svc != nil {
		hc.ServiceID, hc.ServiceName, hc.ServiceTags = svc.ID, svc.Service, svc.Tags
	} else if def.ServiceID != "" {
		owner := resolve(def.ServiceID)
		if owner == nil {
			return nil, badRequest("ServiceID %q does not exist", def.ServiceID)
		}
		hc.ServiceID, hc.ServiceName, hc.ServiceTags = owner.ID, owner.Service, owner.Tags
	}
	return hc, nil
}

// AddService registers a service with its checks on this agent and syncs
// it to the catalog before returning.
func (a *Agent) AddService(def *structs.ServiceDefinition, replaceExistingChecks bool) error {
	return a.addService(def, replaceExistingChecks, sourceAPI)
}

// preparedService is a validated service definition with its checks,
// ready to install.
type preparedService struct {
	def        *structs.ServiceDefinition
	svc        *structs.NodeService
	hcs        []*structs.HealthCheck
	defs       []*structs.CheckType
	sidecarFor string // see localService
}

func (a *Agent) prepareService(def *structs.ServiceDefinition, src source) (*preparedService, error) {
	ns, err := validateService(def)
	if err != nil {
		return nil, err
	}
	p := &preparedService{def: def, svc: ns, defs: def.AllChecks()}
	p.hcs = make([]*structs.HealthCheck, len(p.defs))
	for i, cd := range p.defs {
		if p.hcs[i], err = a.checkFromDef(cd, ns, i, len(p.defs), src, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// installServiceLocked puts a prepared service and its checks in the local
// state and returns the IDs of its checks. a.mu must be held.
func (a *Agent) installServiceLocked(p *preparedService, src source) map[string]bool {
	a.services[p.svc.ID] = &localService{svc: p.svc, source: src, sidecarFor: p.sidecarFor}
	a.servicesChangedLocked()
	keep := make(map[string]bool)
	for i, hc := range p.hcs {
		keep[hc.CheckID] = true
		a.putCheckLocked(hc, p.defs[i], src)
	}
	return keep
}

func (a *Agent) addService(def *structs.ServiceDefinition, replace bool, src source) error {
	// syncMu from the start: a sidecar's port is chosen against the
	// local services, which only change under it.
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	ps, persistDef, err := a.prepareWithSidecar(def, src, map[int]bool{})
	if err != nil {
		return err
	}
	a.mu.Lock()
	var removed, dropped []string
	// A parent re-registered without its sidecar (or with another ID
	// for it) loses the old one.
	for _, id := range a.sidecarsOfLocked(ps[0].svc.ID) {
		if len(ps) < 2 || ps[1].svc.ID != id {
			removed = append(removed, a.removeServiceLocked(id)...)
		}
	}
	for _, p := range ps {
		keep := a.installServiceLocked(p, src)
		if !replace {
			continue
		}
		for id, lc := range a.checks {
			if lc.check.ServiceID == p.svc.ID && !keep[id] && lc.def != nil {
				a.dropCheckLocked(id)
				dropped = append(dropped, id)
			}
		}
	}
	a.mu.Unlock()
	if src == sourceAPI {
		a.persistService(persistDef)
	}
	// Registering the service only adds checks: remove the replaced ones
	// from the catalog too.
	for _, p := range ps {
		err = errors.Join(err, a.syncServiceLocked(p.svc.ID))
	}
	for _, id := range removed {
		err = errors.Join(err, a.syncServiceLocked(id))
	}
	for _, id := range dropped {
		err = errors.Join(err, a.syncCheckLocked(id))
	}
	a.syncFailed(err)
	return nil
}

// syncFailed logs a failed sync of a change the agent has taken: as in
// Consul, the registration stands and anti-entropy retries the sync.
func (a *Agent) syncFailed(err error) {
	if err != nil {
		a.logger.Warn("syncing to the catalog failed; anti-entropy will retry", "error", err)
	}
}

// putCheckLocked stores a check and (re)starts its runner. A re-registered
// check keeps its current status unless the definition sets one.
func (a *Agent) putCheckLocked(hc *structs.HealthCheck, def *structs.CheckType, src source) {
	if old, ok := a.checks[hc.CheckID]; ok {
		if old.runner != nil {
			old.runner.Stop()
		}
		if def != nil && def.Status == "" {
			hc.Status, hc.Output = old.check.Status, old.check.Output
		}
	}
	lc := &localCheck{check: hc, def: def, source: src}
	if hc.Status == structs.HealthCritical {
		lc.criticalSince = time.Now()
	}
	a.checks[hc.CheckID] = lc
	a.localChangedLocked()
	if def == nil || a.closed {
		// Once Close has stopped the runners, none may start.
		return
	}
	r, err := checks.New(hc.CheckID, def, checks.Options{
		Notify:             checkNotifier{a},
		Logger:             a.logger,
		EnableScriptChecks: a.scriptsAllowed(src),
		Aliases:            aliasSource{a},
	})
	if err != nil {
		a.logger.Error("starting check", "check", hc.CheckID, "error", err)
		hc.Output = err.Error()
		return
	}
	lc.runner = r
}

func (a *Agent) dropCheckLocked(id string) {
	if lc, ok := a.checks[id]; ok {
		if lc.runner != nil {
			lc.runner.Stop()
		}
		delete(a.checks, id)
		a.unpersist("checks", id)
		a.localChangedLocked()
	}
}

// RemoveService deregisters a local service and its checks.
func (a *Agent) RemoveService(id string) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if _, ok := a.services[id]; !ok {
		a.mu.Unlock()
		return structs.NotFoundError{Reason: fmt.Sprintf("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id)}
	}
	removed := a.removeServiceLocked(id)
	a.mu.Unlock()
	var err error
	for _, id := range removed {
		err = errors.Join(err, a.syncServiceLocked(id))
	}
	a.syncFailed(err)
	return nil
}

// removeServiceLocked removes a local service, its checks and its
// sidecars, and returns the IDs of the services removed.
func (a *Agent) removeServiceLocked(id string) []string {
	if _, ok := a.services[id]; !ok {
		return nil
	}
	delete(a.services, id)
	a.servicesChangedLocked()
	for cid, lc := range a.checks {
		if lc.check.ServiceID == id {
			a.dropCheckLocked(cid)
		}
	}
	a.unpersist("services", id)
	removed := []string{id}
	for _, sc := range a.sidecarsOfLocked(id) {
		removed = append(removed, a.removeServiceLocked(sc)...)
	}
	return removed
}

// AddCheck registers a check on this agent.
func (a *Agent) AddCheck(def *structs.CheckType) error {
	return a.addCheck(def, sourceAPI)
}

func (a *Agent) addCheck(def *structs.CheckType, src source) error {
	hc, err := a.checkFromDef(def, nil, 0, 1, src, a.lookupService)
	if err != nil {
		return err
	}
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if hc.ServiceID != "" && a.services[hc.ServiceID] == nil {
		// The service went away since the check was validated.
		a.mu.Unlock()
		return badRequest("ServiceID %q does not exist", hc.ServiceID)
	}
	a.putCheckLocked(hc, def, src)
	a.mu.Unlock()
	if src == sourceAPI {
		a.persistCheck(hc.CheckID, def)
	}
	a.syncFailed(a.syncCheckLocked(hc.CheckID))
	return nil
}

// RemoveCheck deregisters a local check.
func (a *Agent) RemoveCheck(id string) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if _, ok := a.checks[id]; !ok {
		a.mu.Unlock()
		return unknownCheck(id)
	}
	a.dropCheckLocked(id)
	a.mu.Unlock()
	a.syncFailed(a.syncCheckLocked(id))
	return nil
}

// unknownCheck is Consul's answer for a check ID the agent does not have.
func unknownCheck(id string) error {
	return structs.NotFoundError{Reason: fmt.Sprintf("Unknown check ID %q. Ensure that the check ID is passed, not the check name.", id)}
}

// UpdateTTLCheck sets the status of a TTL check (agent/check/pass etc.).
func (a *Agent) UpdateTTLCheck(id, status, output string) error {
	a.mu.Lock()
	lc, ok := a.checks[id]
	if !ok {
		a.mu.Unlock()
		return unknownCheck(id)
	}
	ttl, isTTL := lc.runner.(checks.TTLRunner)
	a.mu.Unlock()
	if !isTTL {
		return badRequest("CheckID %q does not have associated TTL", id)
	}
	// SetStatus restarts the runner's timer and queues the result; it is
	// applied here, so that the caller reads its own write. applyMu keeps
	// the update loop from applying an older result after it.
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	// Look the runner up again under the lock: a re-registration may have
	// replaced it, and the status must reach the current one. SetStatus
	// only queues, so calling it under a.mu cannot block.
	a.mu.Lock()
	if lc, ok := a.checks[id]; ok {
		if cur, isTTL := lc.runner.(checks.TTLRunner); isTTL {
			ttl = cur
		}
	}
	ttl.SetStatus(status, output)
	a.mu.Unlock()
	a.pendMu.Lock()
	r, ok := a.pending[id]
	delete(a.pending, id)
	a.pendMu.Unlock()
	if ok {
		a.updateCheck(id, r.status, r.output)
	}
	return nil
}

// checkNotifier feeds runner results into the agent. It never blocks: a
// runner may be stopped while the agent holds its locks, so results are
// queued (the latest per check) for the agent's update loop.
type checkNotifier struct{ a *Agent }

type checkResult struct{ status, output string }

func (n checkNotifier) UpdateCheck(id, status, output string) {
	a := n.a
	a.pendMu.Lock()
	a.pending[id] = checkResult{status, output}
	a.pendMu.Unlock()
	select {
	case a.pendCh <- struct{}{}:
	default:
	}
}

// runCheckUpdates applies queued check results until ctx ends.
func (a *Agent) runCheckUpdates(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-a.pendCh:
		}
		a.applyMu.Lock()
		a.pendMu.Lock()
		batch := a.pending
		a.pending = make(map[string]checkResult)
		a.pendMu.Unlock()
		for id, r := range batch {
			a.updateCheck(id, r.status, r.output)
		}
		a.applyMu.Unlock()
	}
}

func (a *Agent) updateCheck(id, status, output string) {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	lc, ok := a.checks[id]
	if !ok || (lc.check.Status == status && lc.check.Output == output) {
		a.mu.Unlock()
		return
	}
	n := lc.check.Clone()
	n.Status, n.Output = status, output
	if status == structs.HealthCritical && lc.check.Status != structs.HealthCritical {
		lc.criticalSince = time.Now()
	}
	statusChanged := lc.check.Status != status
	lc.check = n
	if statusChanged {
		// Alias checks follow statuses only: an output-only change (most
		// check results) need not rebuild their view.
		a.localChangedLocked()
	}
	a.mu.Unlock()
	if err := a.syncCheckLocked(id); err != nil {
		a.logger.Warn("syncing check", "check", id, "error", err)
	}
}

// ServiceMaintenance puts a service in or out of maintenance mode.
func (a *Agent) ServiceMaintenance(id string, enable bool, reason string) error {
	a.mu.Lock()
	ls, ok := a.services[id]
	a.mu.Unlock()
	if !ok {
		return structs.NotFoundError{Reason: fmt.Sprintf("No service registered with ID %q", id)}
	}
	checkID := structs.ServiceMaintPrefix + id
	if !enable {
		return a.removeMaintCheck(checkID)
	}
	if reason == "" {
		reason = structs.DefaultSvcMaintReason
	}
	return a.addMaintCheck(&structs.HealthCheck{
		Node: a.nodeName, CheckID: checkID, Name: "Service Maintenance Mode", Notes: reason,
		ServiceID: id, ServiceName: ls.svc.Service, ServiceTags: ls.svc.Tags,
		Status: structs.HealthCritical, Type: "maintenance",
	})
}

// NodeMaintenance puts the node in or out of maintenance mode.
func (a *Agent) NodeMaintenance(enable bool, reason string) error {
	if !enable {
		return a.removeMaintCheck(structs.NodeMaintCheckID)
	}
	if reason == "" {
		reason = structs.DefaultMaintReason
	}
	return a.addMaintCheck(&structs.HealthCheck{
		Node: a.nodeName, CheckID: structs.NodeMaintCheckID, Name: "Node Maintenance Mode",
		Notes: reason, Status: structs.HealthCritical, Type: "maintenance",
	})
}

func (a *Agent) addMaintCheck(hc *structs.HealthCheck) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if _, ok := a.checks[hc.CheckID]; ok {
		a.mu.Unlock()
		return nil
	}
	a.checks[hc.CheckID] = &localCheck{check: hc}
	a.localChangedLocked()
	a.mu.Unlock()
	return a.syncCheckLocked(hc.CheckID)
}

func (a *Agent) removeMaintCheck(id string) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if _, ok := a.checks[id]; !ok {
		a.mu.Unlock()
		return nil
	}
	delete(a.checks, id)
	a.localChangedLocked()
	a.mu.Unlock()
	return a.syncCheckLocked(id)
}

// servicesChangedLocked wakes the watchers of the local services (hash
// blocking on /v1/agent/service/:id). a.mu must be held.
func (a *Agent) servicesChangedLocked() {
	close(a.servicesCh)
	a.servicesCh = make(chan struct{})
	a.localChangedLocked()
}

// ServicesChanged returns a channel closed at the next change to the local
// services.
func (a *Agent) ServicesChanged() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.servicesCh
}

// Services returns the local services by ID.
func (a *Agent) Services() map[string]*structs.NodeService {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]*structs.NodeService, len(a.services))
	for id, ls := range a.services {
		s := ls.svc.Clone()
		s.Datacenter = a.cfg.Datacenter
		out[id] = s
	}
	return out
}

// Service returns one local service, or nil.
func (a *Agent) Service(id string) *structs.NodeService {
	a.mu.Lock()
	defer a.mu.Unlock()
	ls, ok := a.services[id]
	if !ok {
		return nil
	}
	s := ls.svc.Clone()
	s.Datacenter = a.cfg.Datacenter
	// Consul reports the content hash of the definition here, so that
	// clients can block on changes; the ModifyIndex serves the same end.
	return s
}

// Checks returns the local checks by ID.
func (a *Agent) Checks() map[string]*structs.HealthCheck {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]*structs.HealthCheck, len(a.checks))
	for id, lc := range a.checks {
		out[id] = lc.check.Clone()
	}
	return out
}

// --- sync to the catalog ---

// syncServiceLocked writes one local service, with its checks, to the
// catalog, or removes it there when it is no longer local. syncMu must be
// held so that syncs apply in the order of the changes.
func (a *Agent) syncServiceLocked(id string) error {
	a.mu.Lock()
	ls, ok := a.services[id]
	var svc *structs.NodeService
	var hcs []*structs.HealthCheck
	if ok {
		svc = ls.svc.Clone()
		for _, lc := range a.checks {
			if lc.check.ServiceID == id {
				hcs = append(hcs, lc.check.Clone())
			}
		}
	}
	a.mu.Unlock()
	if !ok {
		return a.applyCatalog(fsm.DeregisterRequestType, &structs.DeregisterRequest{Node: a.nodeName, ServiceID: id})
	}
	sort.Slice(hcs, func(i, j int) bool { return hcs[i].CheckID < hcs[j].CheckID })
	return a.applyCatalog(fsm.RegisterRequestType, &structs.RegisterRequest{
		Node: a.nodeName, SkipNodeUpdate: true, Service: svc, Checks: hcs,
	})
}

// syncCheckLocked writes one local check to the catalog, or removes it.
func (a *Agent) syncCheckLocked(id string) error {
	a.mu.Lock()
	lc, ok := a.checks[id]
	var hc *structs.HealthCheck
	if ok {
		hc = lc.check.Clone()
	}
	a.mu.Unlock()
	if !ok {
		return a.applyCatalog(fsm.DeregisterRequestType, &structs.DeregisterRequest{Node: a.nodeName, CheckID: id})
	}
	return a.applyCatalog(fsm.RegisterRequestType, &structs.RegisterRequest{
		Node: a.nodeName, SkipNodeUpdate: true, Check: hc,
	})
}

// SyncFull is anti-entropy: it makes the catalog's view of this node equal
// to the agent's, registering what is missing or different and removing
// what the agent does not have.
func (a *Agent) SyncFull() error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	return a.syncFullLocked()
}

// syncFullLocked is SyncFull with syncMu held. One item that fails to sync
// does not keep the others from syncing.
func (a *Agent) syncFullLocked() error {
	if err := a.registerSelf(); err != nil {
		return err
	}
	_, catSvcs, catChecks, err := a.catalogNode()
	if err != nil {
		return err
	}
	a.mu.Lock()
	var svcSync, checkSync []string
	catSvcByID := make(map[string]*structs.NodeService)
	for _, s := range catSvcs {
		catSvcByID[s.ID] = s
		if s.ID == serverServiceID && a.cfg.Server {
			continue // registered by registerSelf, not a local service
		}
		if _, ok := a.services[s.ID]; !ok {
			svcSync = append(svcSync, s.ID)
		}
	}
	for id, ls := range a.services {
		c, ok := catSvcByID[id]
		if ok && ls.svc.EnableTagOverride && !slices.Equal(c.Tags, ls.svc.Tags) {
			// With enable_tag_override the catalog owns the tags: adopt
			// them rather than write ours back.
			s := ls.svc.Clone()
			s.Tags = append([]string{}, c.Tags...)
			ls.svc = s
			a.servicesChangedLocked()
		}
		if !ok || !sameService(c, ls.svc) {
			svcSync = append(svcSync, id)
		}
	}
	catCheckByID := make(map[string]*structs.HealthCheck)
	for _, c := range catChecks {
		catCheckByID[c.CheckID] = c
		if c.CheckID == structs.SerfCheckID {
			continue
		}
		if _, ok := a.checks[c.CheckID]; !ok {
			checkSync = append(checkSync, c.CheckID)
		}
	}
	for id, lc := range a.checks {
		if c, ok := catCheckByID[id]; !ok || !sameCheck(c, lc.check) {
			checkSync = append(checkSync, id)
		}
	}
	a.mu.Unlock()
	var errs error
	for _, id := range svcSync {
		errs = errors.Join(errs, a.syncServiceLocked(id))
	}
	for _, id := range checkSync {
		errs = errors.Join(errs, a.syncCheckLocked(id))
	}
	return errs
}

func sameService(cat, local *structs.NodeService) bool {
	c, l := cat.Clone(), local.Clone()
	c.CreateIndex, c.ModifyIndex, l.CreateIndex, l.ModifyIndex = 0, 0, 0, 0
	c.Datacenter, l.Datacenter = "", ""
	if slices.Equal(c.Tags, l.Tags) { // nil and empty alike
		c.Tags = l.Tags
	}
	nilEmptyProxy(c.Proxy)
	nilEmptyProxy(l.Proxy)
	return reflect.DeepEqual(c, l)
}

// nilEmptyProxy makes p's empty lists and maps nil: they are omitted on
// the way to the catalog (omitempty), so an empty one registered locally
// comes back nil, and must not count as a difference.
func nilEmptyProxy(p *structs.ConnectProxyConfig) {
	if p == nil {
		return
	}
	if len(p.EnvoyExtensions) == 0 {
		p.EnvoyExtensions = nil
	}
	if len(p.Config) == 0 {
		p.Config = nil
	}
	if len(p.Upstreams) == 0 {
		p.Upstreams = nil
	}
	for i := range p.Upstreams {
		if len(p.Upstreams[i].Config) == 0 {
			p.Upstreams[i].Config = nil
		}
	}
	if len(p.Expose.Paths) == 0 {
		p.Expose.Paths = nil
	}
}

func sameCheck(cat, local *structs.HealthCheck) bool {
	c, l := *cat, *local
	c.CreateIndex, c.ModifyIndex, l.CreateIndex, l.ModifyIndex = 0, 0, 0, 0
	c.ServiceTags, l.ServiceTags = nil, nil
	c.ServiceName, l.ServiceName = strings.ToLower(c.ServiceName), strings.ToLower(l.ServiceName)
	return reflect.DeepEqual(&c, &l)
}

// reapCritical deregisters services whose check has been critical for
// longer than its deregister_critical_service_after.
func (a *Agent) reapCritical(now time.Time) {
	a.mu.Lock()
	var doomed []string
	for _, lc := range a.checks {
		if lc.def == nil || lc.check.ServiceID == "" || lc.check.Status != structs.HealthCritical {
			continue
		}
		after := lc.def.DeregisterCriticalServiceAfter.D()
		if after <= 0 {
			continue
		}
		if after < a.opts.MinDeregisterAfter {
			after = a.opts.MinDeregisterAfter
		}
		if !lc.criticalSince.IsZero() && now.Sub(lc.criticalSince) >= after {
			doomed = append(doomed, lc.check.ServiceID)
		}
	}
	a.mu.Unlock()
	for _, id := range doomed {
		a.logger.Info("removing service: its check has been critical too long", "service", id)
		if err := a.RemoveService(id); err != nil && !structs.IsNotFound(err) {
			a.logger.Warn("reaping service", "service", id, "error", err)
		}
	}
}
