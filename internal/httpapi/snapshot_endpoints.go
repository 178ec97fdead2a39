package httpapi

import (
	"net/http"
	"strconv"

	"github.com/trellis-mesh/trellis/internal/snapshot"
)

// snapshotSave streams an archive of the whole state (GET /v1/snapshot).
// X-Consul-Index is the raft index the snapshot was taken at.
func (a *API) snapshotSave(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	open := a.deps.Server.OpenSnapshot
	if r.URL.Query().Has("stale") && !a.deps.Server.IsLeader() {
		// Any server may answer, from what it has applied.
		open = a.deps.Server.OpenLocalSnapshot
	}
	meta, rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(meta.Index, 10))
	w.Header().Set("Content-Type", "application/x-gzip")
	a.setMeta(w, nil)
	// Once the body has started, an error can only cut it short; the
	// archive's checksums make a cut archive fail to restore.
	if err := snapshot.Write(w, meta, rc); err != nil {
		a.log.Warn("writing snapshot", "error", err)
	}
	return nil, nil
}

// snapshotRestore replaces the whole state with an archive (PUT
// /v1/snapshot). A damaged archive is a 400 and changes nothing.
func (a *API) snapshotRestore(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	return nil, a.deps.Server.SnapshotRestore(r.Body)
}

func (a *API) operatorRaftConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	a.setMeta(w, nil)
	return a.deps.Server.Configuration()
}

func (a *API) operatorRaftRemovePeer(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	return nil, a.deps.Server.RemovePeer(q.Get("id"), q.Get("address"))
}

func (a *API) operatorRaftTransferLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.dcParam(r); err != nil {
		return nil, err
	}
	if err := a.deps.Server.TransferLeader(r.URL.Query().Get("id")); err != nil {
		return nil, err
	}
	return map[string]bool{"Success": true}, nil
}
