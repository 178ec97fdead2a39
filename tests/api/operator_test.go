package api_test

import (
	"strings"
	"testing"
)

// On a lone server the operator endpoints refuse what cannot be done,
// with a clear status and message.
func TestOperatorRaftOnLoneServer(t *testing.T) {
	t.Parallel()
	a := start(t)
	if _, err := a.c.Operator().RaftLeaderTransfer("", nil); err == nil {
		t.Error("leadership transfer on a lone server succeeded")
	}
	a.do(t, "DELETE", "/v1/operator/raft/peer", nil).expect(t, "neither id nor address", 400)
	r := a.do(t, "DELETE", "/v1/operator/raft/peer?id=nope", nil).expect(t, "unknown id", 404)
	if !strings.Contains(r.body, "was not found") {
		t.Errorf("unknown id: body %q", r.body)
	}
	a.do(t, "GET", "/v1/operator/raft/peer", nil).expect(t, "GET peer", 405)
	if cfg, err := a.c.Operator().RaftGetConfiguration(nil); err != nil || len(cfg.Servers) != 1 {
		t.Errorf("refused operations changed the configuration: %+v, %v", cfg, err)
	}
}
