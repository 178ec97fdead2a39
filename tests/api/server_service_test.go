package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

// A server registers itself as the "consul" service, as Consul servers do;
// anti-entropy leaves it alone and it is not a local agent service.
func TestServerRegistersConsulService(t *testing.T) {
	a := start(t)
	svcs, _, err := a.c.Catalog().Services(nil)
	must(t, err)
	if _, ok := svcs["consul"]; !ok {
		t.Fatalf("catalog services = %v, want consul", svcs)
	}
	entries, _, err := a.c.Health().Service("consul", "", true, nil)
	must(t, err)
	if len(entries) != 1 || entries[0].Service.ID != "consul" || entries[0].Service.Meta["raft_version"] == "" {
		t.Fatalf("health of consul = %+v", entries)
	}
	local, err := a.c.Agent().Services()
	must(t, err)
	if _, ok := local["consul"]; ok {
		t.Errorf("agent services list consul; Consul keeps it out of the local services")
	}
	must(t, a.SyncFull())
	if svcs, _, _ := a.c.Catalog().Services(nil); svcs["consul"] == nil {
		t.Errorf("anti-entropy removed the consul service: %v", svcs)
	}
}

func TestCatalogFilters(t *testing.T) {
	a := start(t)
	for i, tags := range [][]string{{"v1", "blue"}, {"v2"}} {
		_, err := a.c.Catalog().Register(&api.CatalogRegistration{
			Node: fmt.Sprintf("n%d", i), Address: fmt.Sprintf("127.0.0.%d", i+2),
			Service: &api.AgentService{ID: fmt.Sprintf("web%d", i), Service: "web", Tags: tags, Port: 80 + i},
		}, nil)
		must(t, err)
	}
	_, err := a.c.Catalog().Register(&api.CatalogRegistration{Node: "n0", Address: "127.0.0.2",
		Service: &api.AgentService{ID: "db", Service: "db", Port: 5432}}, nil)
	must(t, err)

	svcs, _, err := a.c.Catalog().Services(&api.QueryOptions{Filter: `ServiceName == "web" and ServicePort == 81`})
	must(t, err)
	if len(svcs) != 1 || fmt.Sprint(svcs["web"]) != "[v2]" {
		t.Errorf("catalog services with a filter = %v, want only web's v2 tag", svcs)
	}
	node, _, err := a.c.Catalog().Node("n0", &api.QueryOptions{Filter: `Service == "db"`})
	must(t, err)
	if node == nil || len(node.Services) != 1 || node.Services["db"] == nil {
		t.Errorf("catalog node with a filter = %+v, want only db", node)
	}
	a.do(t, "GET", "/v1/catalog/services?filter=ServiceName%20%3D%3D", nil).expect(t, "bad filter", 400)
}

// Consul's txn_max_req_len: a transaction body over 512 KiB is a 413 and
// nothing of it is applied.
func TestTxnBodyLimit(t *testing.T) {
	a := start(t)
	var ops api.TxnOps
	for i := range 5 {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("big/%d", i),
			Value: bytes.Repeat([]byte("x"), 120*1024)}})
	}
	body, err := json.Marshal(ops)
	must(t, err)
	a.do(t, "PUT", "/v1/txn", body).expect(t, "oversized txn", 413)
	if keys, _, _ := a.c.KV().Keys("big/", "", nil); len(keys) != 0 {
		t.Errorf("%d keys written by a refused txn", len(keys))
	}
	ok, _, _, err := a.c.Txn().Txn(ops[:3], nil)
	if err != nil || !ok {
		t.Errorf("a txn under the limit: %v %v", ok, err)
	}
}
