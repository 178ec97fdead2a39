package httpapi

import (
	"net/http"

	"github.com/trellis-mesh/trellis/internal/state"
	"github.com/trellis-mesh/trellis/internal/structs"
)

// catalogConnect answers GET /v1/catalog/connect/:service: the instances
// that accept Connect traffic for :service (its proxies and its native
// instances), as /v1/catalog/service rows, with the same parameters and
// blocking.
func (a *API) catalogConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.serviceNodesQuery(w, r, (*state.ReadTxn).ConnectServiceNodes)
}

// healthConnect answers GET /v1/health/connect/:service: the
// connect-capable instances for :service with their checks, as
// /v1/health/service entries, with the same parameters and blocking.
func (a *API) healthConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.checkServiceNodesQuery(w, r, (*state.ReadTxn).CheckConnectServiceNodes)
}

// validateCatalogConnect checks the Connect parts of a catalog
// registration. sidecar_service is an agent shorthand: the catalog stores
// instances, so it is refused here rather than silently kept.
func validateCatalogConnect(s *structs.NodeService) error {
	if err := s.ValidateConnect(); err != nil {
		return badRequest("%v", err)
	}
	if s.Connect != nil && s.Connect.SidecarService != nil {
		return badRequest("Connect.SidecarService is only valid in agent service registrations; register the proxy as its own service")
	}
	return nil
}
