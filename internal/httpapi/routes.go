package httpapi

import (
	"net/http"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// Agent is the local agent as the API sees it: its own services and
// checks, membership and lifecycle. *agent.Agent implements it.
type Agent interface {
	Self() map[string]any
	// Members lists the LAN pool's members, or with wan the WAN pool's.
	Members(wan bool) []structs.AgentMember
	// Datacenters lists the datacenters the WAN pool knows, this one
	// first, then nearest first by estimated round-trip time.
	Datacenters() []string
	// DatacenterCoordinates returns, per datacenter, the WAN coordinates
	// of its servers as this server's gossip knows them.
	DatacenterCoordinates() []structs.CoordinateDatacenterMap
	Services() map[string]*structs.NodeService
	Service(id string) *structs.NodeService
	// ServicesChanged returns a channel closed at the next change to the
	// local services.
	ServicesChanged() <-chan struct{}
	AddService(def *structs.ServiceDefinition, replaceExistingChecks bool) error
	RemoveService(id string) error
	ServiceMaintenance(id string, enable bool, reason string) error
	Checks() map[string]*structs.HealthCheck
	AddCheck(def *structs.CheckType) error
	RemoveCheck(id string) error
	UpdateTTLCheck(id, status, output string) error
	NodeMaintenance(enable bool, reason string) error
	Reload() error
	Leave() error
	// Join asks the agent to join the pool through addrs; it returns how
	// many it reached.
	Join(addrs []string, wan bool) (int, error)
	// ForceLeave marks a failed member as left; prune also forgets it.
	ForceLeave(node string, prune bool) error
	FireEvent(ev *structs.UserEvent) error
	// Events returns the events the agent has seen, oldest first, and a
	// channel closed at the next event.
	Events() ([]*structs.UserEvent, <-chan struct{})
	Metrics(prometheus bool) (contentType string, body []byte, err error)
}

func (a *API) routes() {
	// agent
	a.handle("GET", "/v1/agent/self", a.agentSelf)
	a.handle("GET", "/v1/agent/members", a.agentMembers)
	a.handle("GET", "/v1/agent/services", a.agentServices)
	a.handle("GET", "/v1/agent/service/{id...}", a.agentService)
	// Without these, GET of the PUT-only paths below would be read as a
	// service ID and answer 404 instead of 405.
	for _, p := range []string{"/v1/agent/service/register", "/v1/agent/service/deregister/{id...}",
		"/v1/agent/service/maintenance/{id...}"} {
		a.mux.Handle("GET "+p, methodNotAllowed("PUT"))
	}
	a.handle("PUT", "/v1/agent/service/register", a.agentServiceRegister)
	a.handle("PUT", "/v1/agent/service/deregister/{id...}", a.agentServiceDeregister)
	a.handle("PUT", "/v1/agent/service/maintenance/{id...}", a.agentServiceMaintenance)
	a.handle("GET", "/v1/agent/checks", a.agentChecks)
	a.handle("PUT", "/v1/agent/check/register", a.agentCheckRegister)
	a.handle("PUT", "/v1/agent/check/deregister/{id...}", a.agentCheckDeregister)
	a.handle("PUT", "/v1/agent/check/pass/{id...}", a.agentCheckTTL(structs.HealthPassing))
	a.handle("PUT", "/v1/agent/check/warn/{id...}", a.agentCheckTTL(structs.HealthWarning))
	a.handle("PUT", "/v1/agent/check/fail/{id...}", a.agentCheckTTL(structs.HealthCritical))
	a.handle("PUT", "/v1/agent/check/update/{id...}", a.agentCheckUpdate)
	a.handle("GET", "/v1/agent/health/service/name/{name...}", a.agentHealthByName)
	a.handle("GET", "/v1/agent/health/service/id/{id...}", a.agentHealthByID)
	a.handle("PUT", "/v1/agent/maintenance", a.agentMaintenance)
	a.handle("PUT", "/v1/agent/reload", a.agentReload)
	a.handle("PUT", "/v1/agent/leave", a.agentLeave)
	a.handle("PUT", "/v1/agent/join/{addr...}", a.agentJoin)
	a.handle("PUT", "/v1/agent/force-leave/{node...}", a.agentForceLeave)
	a.handle("GET", "/v1/agent/version", a.agentVersion)
	a.handle("GET", "/v1/agent/metrics", a.agentMetrics)

	// catalog
	a.handle("PUT", "/v1/catalog/register", a.catalogRegister)
	a.handle("PUT", "/v1/catalog/deregister", a.catalogDeregister)
	a.handle("GET", "/v1/catalog/datacenters", a.catalogDatacenters)
	a.handle("GET", "/v1/catalog/nodes", a.catalogNodes)
	a.handle("GET", "/v1/catalog/services", a.catalogServices)
	a.handle("GET", "/v1/catalog/service/{name...}", a.catalogService)
	a.handle("GET", "/v1/catalog/node/{node...}", a.catalogNode)
	a.handle("GET", "/v1/catalog/node-services/{node...}", a.catalogNodeServices)
	a.handle("GET", "/v1/catalog/connect/{name...}", a.catalogConnect) // connect_endpoints.go

	// health
	a.handle("GET", "/v1/health/node/{node...}", a.healthNode)
	a.handle("GET", "/v1/health/checks/{name...}", a.healthChecks)
	a.handle("GET", "/v1/health/service/{name...}", a.healthService)
	a.handle("GET", "/v1/health/connect/{name...}", a.healthConnect) // connect_endpoints.go
	a.handle("GET", "/v1/health/state/{state...}", a.healthState)

	// coordinate
	a.handle("GET", "/v1/coordinate/datacenters", a.coordinateDatacenters)
	a.handle("GET", "/v1/coordinate/nodes", a.coordinateNodes)
	a.handle("GET", "/v1/coordinate/node/{node...}", a.coordinateNode)
	a.handle("PUT", "/v1/coordinate/update", a.coordinateUpdate)

	// kv: routed by hand in ServeHTTP, as ServeMux would clean keys such
	// as "a//b" and redirect.
	a.kv = map[string]http.Handler{
		http.MethodGet:    a.wrap(a.kvGet),
		http.MethodPut:    a.wrap(a.kvPut),
		http.MethodDelete: a.wrap(a.kvDelete),
	}

	// session
	a.handle("PUT", "/v1/session/create", a.sessionCreate)
	a.handle("PUT", "/v1/session/destroy/{id...}", a.sessionDestroy)
	a.handle("PUT", "/v1/session/renew/{id...}", a.sessionRenew)
	a.handle("GET", "/v1/session/info/{id...}", a.sessionInfo)
	a.handle("GET", "/v1/session/node/{node...}", a.sessionNode)
	a.handle("GET", "/v1/session/list", a.sessionList)

	// txn, status, event
	a.handle("PUT", "/v1/txn", a.txn)
	a.handle("GET", "/v1/snapshot", a.snapshotSave)
	a.handle("PUT", "/v1/snapshot", a.snapshotRestore)
	a.handle("GET", "/v1/operator/raft/configuration", a.operatorRaftConfiguration)
	a.handle("DELETE", "/v1/operator/raft/peer", a.operatorRaftRemovePeer)
	a.handle("POST PUT", "/v1/operator/raft/transfer-leader", a.operatorRaftTransferLeader)
	a.autopilotRoutes() // operator_autopilot_endpoints.go
	a.configRoutes()    // config_endpoints.go, intention_endpoints.go
	a.connectCARoutes() // connect_ca_endpoints.go
	a.handle("GET", "/v1/status/leader", a.statusLeader)
	a.handle("GET", "/v1/status/peers", a.statusPeers)
	a.handle("PUT", "/v1/event/fire/{name...}", a.eventFire)
	a.handle("GET", "/v1/event/list", a.eventList)

}
