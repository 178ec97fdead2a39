package agentctl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestJoinAndForceLeave(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-node", "cli-a"}})
	b := agenttest.Start(t, agenttest.Options{Args: []string{"-node", "cli-b"}})
	cb, err := api.NewClient(&api.Config{Address: b.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	self, err := cb.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("%v:%v", self["Member"]["Addr"], self["Member"]["Port"])

	r := clitest.Run(t, Join, "-http-addr", a.HTTPAddr, addr)
	if r.Code != 0 || r.Stdout != "Successfully joined cluster by contacting 1 nodes.\n" {
		t.Fatalf("join: %+v", r)
	}
	if r := clitest.Run(t, Join, "-http-addr", a.HTTPAddr, "127.0.0.1:1"); r.Code != 1 || !strings.Contains(r.Stderr, "Failed to join any nodes") {
		t.Errorf("join of a dead address: %+v", r)
	}
	if r := clitest.Run(t, Join, "-http-addr", a.HTTPAddr); r.Code != 1 {
		t.Errorf("join without an address: %+v", r)
	}
	// force-leave of a live member is accepted (serf marks it leaving, and
	// it refutes); an unknown one is an error.
	if r := clitest.Run(t, ForceLeave, "-http-addr", a.HTTPAddr, "nobody"); r.Code != 1 || !strings.Contains(r.Stderr, "No node found") {
		t.Errorf("force-leave of an unknown node: %+v", r)
	}
	if r := clitest.Run(t, ForceLeave, "-http-addr", a.HTTPAddr); r.Code != 1 {
		t.Errorf("force-leave without a node: %+v", r)
	}
}
