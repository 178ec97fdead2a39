package state

import (
	"bytes"
	"reflect"
	"sort"
	"testing"

	"github.com/hashicorp/go-memdb"
	"github.com/trellis-mesh/trellis/internal/structs"
)

func proxyFor(id, dest string, port int) *structs.NodeService {
	return &structs.NodeService{Kind: structs.ServiceKindConnectProxy, ID: id, Service: id, Port: port,
		Weights: structs.Weights{Passing: 1, Warning: 1},
		Proxy: &structs.ConnectProxyConfig{DestinationServiceName: dest, DestinationServiceID: dest,
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080,
			Upstreams: []structs.Upstream{{DestinationName: "db", LocalBindPort: 9191, Config: map[string]any{"a": "b"}}}}}
}

func mustRegister(t *testing.T, s *Store, idx uint64, node string, svc *structs.NodeService, checks ...*structs.HealthCheck) {
	t.Helper()
	req := &structs.RegisterRequest{Node: node, Address: "10.0.0.1", Service: svc, Checks: checks}
	if err := s.EnsureRegistration(idx, req); err != nil {
		t.Fatal(err)
	}
}

func connectIDs(t *testing.T, s *Store, name string) (uint64, []string, memdb.WatchSet) {
	t.Helper()
	r := s.Read()
	defer r.Abort()
	ws := memdb.NewWatchSet()
	idx, rows, err := r.ConnectServiceNodes(ws, name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sn := range rows {
		ids = append(ids, sn.Node+"/"+sn.ServiceID)
	}
	sort.Strings(ids)
	return idx, ids, ws
}

// fired reports whether any channel of ws is closed, without waiting.
func fired(ws memdb.WatchSet) bool {
	for ch := range ws {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

func TestConnectServiceNodes(t *testing.T) {
	s := New()
	mustRegister(t, s, 1, "n1", &structs.NodeService{ID: "web", Service: "web", Port: 8080})
	mustRegister(t, s, 2, "n1", proxyFor("web-sidecar-proxy", "web", 21000))
	mustRegister(t, s, 3, "n2", proxyFor("web-proxy-2", "Web", 21001))
	mustRegister(t, s, 4, "n2", &structs.NodeService{ID: "api", Service: "api", Port: 9000,
		Connect: &structs.ServiceConnect{Native: true}})
	mustRegister(t, s, 5, "n2", proxyFor("db-sidecar-proxy", "db", 21002))

	idx, ids, ws := connectIDs(t, s, "WEB")
	if want := []string{"n1/web-sidecar-proxy", "n2/web-proxy-2"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("connect web = %v, want %v", ids, want)
	}
	if idx != 3 {
		t.Errorf("index = %d, want 3", idx)
	}
	if _, ids, _ := connectIDs(t, s, "api"); !reflect.DeepEqual(ids, []string{"n2/api"}) {
		t.Errorf("connect api = %v, want the native instance", ids)
	}
	if idx, ids, _ := connectIDs(t, s, "nope"); len(ids) != 0 || idx == 0 {
		t.Errorf("connect nope = %v at %d, want none at a non-zero index", ids, idx)
	}

	// Writes that do not touch web's proxies leave its watch alone.
	mustRegister(t, s, 6, "n3", &structs.NodeService{ID: "other", Service: "other"})
	mustRegister(t, s, 7, "n2", proxyFor("db-sidecar-proxy", "db", 21003))
	if fired(ws) {
		t.Error("unrelated writes woke the connect watch of web")
	}

	// A check on one of web's proxies wakes it and raises the index.
	mustRegister(t, s, 8, "n1", proxyFor("web-sidecar-proxy", "web", 21000),
		&structs.HealthCheck{CheckID: "c", Name: "c", ServiceID: "web-sidecar-proxy", Status: structs.HealthPassing})
	if !fired(ws) {
		t.Error("a check on web's proxy did not wake the connect watch")
	}
	idx, _, ws = connectIDs(t, s, "web")
	if idx != 8 {
		t.Errorf("index after the check = %d, want 8", idx)
	}

	// Retargeting a proxy moves it and wakes both services' watches.
	_, _, dbWS := connectIDs(t, s, "db")
	mustRegister(t, s, 9, "n2", proxyFor("web-proxy-2", "db", 21001))
	if !fired(ws) || !fired(dbWS) {
		t.Error("retargeting a proxy must wake the watches of its old and new destinations")
	}
	if _, ids, _ := connectIDs(t, s, "db"); !reflect.DeepEqual(ids, []string{"n2/db-sidecar-proxy", "n2/web-proxy-2"}) {
		t.Errorf("connect db = %v", ids)
	}

	// Deleting a proxy, and its node, wake the watch too.
	_, _, ws = connectIDs(t, s, "web")
	if err := s.DeleteService(10, "n1", "web-sidecar-proxy"); err != nil {
		t.Fatal(err)
	}
	if !fired(ws) {
		t.Error("deleting web's proxy did not wake the connect watch")
	}
	if idx, ids, _ := connectIDs(t, s, "web"); len(ids) != 0 || idx != 10 {
		t.Errorf("after delete: %v at %d, want none at 10", ids, idx)
	}
}

func TestCheckConnectServiceNodes(t *testing.T) {
	s := New()
	mustRegister(t, s, 1, "n1", &structs.NodeService{ID: "web", Service: "web", Port: 8080},
		&structs.HealthCheck{CheckID: "web-c", Name: "w", ServiceID: "web", Status: structs.HealthCritical})
	mustRegister(t, s, 2, "n1", proxyFor("web-sidecar-proxy", "web", 21000),
		&structs.HealthCheck{CheckID: "proxy-c", Name: "p", ServiceID: "web-sidecar-proxy", Status: structs.HealthPassing})
	r := s.Read()
	defer r.Abort()
	_, entries, err := r.CheckConnectServiceNodes(nil, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.ID != "web-sidecar-proxy" || entries[0].Node.Node != "n1" {
		t.Fatalf("entries = %+v, want the proxy", entries)
	}
	var ids []string
	for _, c := range entries[0].Checks {
		ids = append(ids, c.CheckID)
	}
	if !reflect.DeepEqual(ids, []string{"proxy-c"}) {
		t.Errorf("checks = %v, want only the proxy's own", ids)
	}
}

// The typed proxy config survives the snapshot's msgpack encoding, and the
// connect index is rebuilt on restore.
func TestConnectSnapshotRoundTrip(t *testing.T) {
	s := New()
	mustRegister(t, s, 1, "n1", proxyFor("web-sidecar-proxy", "web", 21000))
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	s2 := New()
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	r := s2.Read()
	defer r.Abort()
	got, err := r.NodeService("n1", "web-sidecar-proxy")
	if err != nil || got == nil {
		t.Fatalf("restored service: %v, %v", got, err)
	}
	want := proxyFor("web-sidecar-proxy", "web", 21000)
	want.CreateIndex, want.ModifyIndex = 1, 1
	if !reflect.DeepEqual(got, want) {
		t.Errorf("restored %+v\nwant     %+v", got.Proxy, want.Proxy)
	}
	if _, ids, _ := connectIDs(t, s2, "web"); !reflect.DeepEqual(ids, []string{"n1/web-sidecar-proxy"}) {
		t.Errorf("connect web after restore = %v", ids)
	}
}
