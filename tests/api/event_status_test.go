package api_test

import (
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/consul/api/watch"
	"github.com/hashicorp/go-hclog"
)

func TestEvents(t *testing.T) {
	t.Parallel()
	a := start(t)
	ev := a.c.Event()

	list, meta, err := ev.List("", nil)
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("List before any event = %d events", len(list))
	}

	id, _, err := ev.Fire(&api.UserEvent{Name: "deploy", Payload: []byte("v1.2"), ServiceFilter: "web", TagFilter: "canary"}, nil)
	must(t, err)
	if id == "" {
		t.Fatalf("Fire returned no ID")
	}
	_, _, err = ev.Fire(&api.UserEvent{Name: "restart"}, nil)
	must(t, err)

	list, meta2, err := ev.List("", nil)
	must(t, err)
	if len(list) != 2 || list[0].ID != id || list[0].Name != "deploy" || string(list[0].Payload) != "v1.2" ||
		list[0].ServiceFilter != "web" || list[0].TagFilter != "canary" || list[1].Name != "restart" {
		t.Errorf("List = %+v", list)
	}
	// As in Consul, the index is derived from the newest event's ID (not
	// monotonic): clients match it against IDToIndex. (Fixed bug: it was
	// the event's LTime, so watches delivered old events again.)
	if meta.LastIndex == 0 {
		t.Errorf("index of an empty event list = 0; watchers would spin")
	}
	if want := ev.IDToIndex(list[1].ID); meta2.LastIndex != want {
		t.Errorf("event list index = %d, want IDToIndex of the newest event, %d", meta2.LastIndex, want)
	}
	list, _, err = ev.List("deploy", nil)
	must(t, err)
	if len(list) != 1 || list[0].Name != "deploy" {
		t.Errorf("List(deploy) = %+v", list)
	}
	// With a name filter, the index is that of the newest matching event.
	_, meta3, err := ev.List("deploy", nil)
	must(t, err)
	if want := ev.IDToIndex(id); meta3.LastIndex != want {
		t.Errorf("List(deploy) index = %d, want %d", meta3.LastIndex, want)
	}

	// A blocking list wakes at the next event.
	type res struct {
		list []*api.UserEvent
		took time.Duration
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		start := time.Now()
		l, _, err := ev.List("", &api.QueryOptions{WaitIndex: meta2.LastIndex, WaitTime: longWait})
		ch <- res{l, time.Since(start), err}
	}()
	_, _, err = ev.Fire(&api.UserEvent{Name: "third"}, nil)
	must(t, err)
	r := <-ch
	must(t, r.err)
	if len(r.list) != 3 || r.took >= longWait/2 {
		t.Errorf("blocking list: %d events after %v, want 3 at once", len(r.list), r.took)
	}
	a.do(t, "PUT", "/v1/event/fire/", nil).expect(t, "fire without a name", 400)
}

func TestStatus(t *testing.T) {
	t.Parallel()
	a := start(t)
	leader, err := a.c.Status().Leader()
	must(t, err)
	// Fixed bug: in dev mode the leader was reported as the node's UUID.
	if _, _, err := net.SplitHostPort(leader); err != nil {
		t.Errorf("Leader = %q, want host:port: %v", leader, err)
	}
	peers, err := a.c.Status().Peers()
	must(t, err)
	if len(peers) != 1 || peers[0] != leader {
		t.Errorf("Peers = %v, want [%s]", peers, leader)
	}
}

// TestEventWatch runs the client's own event watch, which prunes the events
// it has seen by comparing IDToIndex with the list's index: each event
// must be delivered once.
func TestEventWatch(t *testing.T) {
	t.Parallel()
	a := start(t)
	ev := a.c.Event()
	_, _, err := ev.Fire(&api.UserEvent{Name: "deploy", Payload: []byte("0")}, nil)
	must(t, err)

	plan, err := watch.Parse(map[string]any{"type": "event", "name": "deploy"})
	must(t, err)
	got := make(chan []string, 16)
	plan.Handler = func(_ uint64, data any) {
		var payloads []string
		for _, e := range data.([]*api.UserEvent) {
			payloads = append(payloads, string(e.Payload))
		}
		got <- payloads
	}
	done := make(chan error, 1)
	go func() { done <- plan.RunWithClientAndHclog(a.c, hclog.NewNullLogger()) }()
	defer func() {
		plan.Stop()
		must(t, <-done)
	}()

	expect := func(want ...string) {
		t.Helper()
		select {
		case p := <-got:
			if !reflect.DeepEqual(p, want) {
				t.Fatalf("watch delivered %v, want %v", p, want)
			}
		case <-time.After(longWait):
			t.Fatalf("watch delivered nothing, want %v", want)
		}
	}
	expect("0")
	for _, p := range []string{"1", "2"} {
		// Other events do not reach a watch on deploy.
		_, _, err = ev.Fire(&api.UserEvent{Name: "other", Payload: []byte("x")}, nil)
		must(t, err)
		_, _, err = ev.Fire(&api.UserEvent{Name: "deploy", Payload: []byte(p)}, nil)
		must(t, err)
		expect(p)
	}
}
