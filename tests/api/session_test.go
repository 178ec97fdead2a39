package api_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestSessionCreateLowercaseKeys(t *testing.T) {
	t.Parallel()
	a := start(t)
	r := a.do(t, "PUT", "/v1/session/create",
		`{"name":"lower","ttl":"10.0s","lock_delay":"1s","behavior":"delete"}`).expect(t, "create", 200)
	var out struct{ ID string }
	must(t, json.Unmarshal([]byte(r.body), &out))
	if out.ID == "" {
		t.Fatalf("create answered %q, want an ID", r.body)
	}
	s, _, err := a.c.Session().Info(out.ID, nil)
	must(t, err)
	if s == nil {
		t.Fatalf("Info(%s) = nil", out.ID)
	}
	if ttl, err := time.ParseDuration(s.TTL); err != nil || ttl != 10*time.Second {
		t.Errorf("TTL = %q, want 10s", s.TTL)
	}
	if s.Name != "lower" || s.LockDelay != time.Second || s.Behavior != api.SessionBehaviorDelete || s.Node != nodeName {
		t.Errorf("session = %+v, want lower, TTL 10s, lock delay 1s, behavior delete on %s", s, nodeName)
	}
	if !contains(s.NodeChecks, "serfHealth") {
		t.Errorf("NodeChecks = %v, want the default serfHealth", s.NodeChecks)
	}
}

func TestSessionInvalid(t *testing.T) {
	t.Parallel()
	a := start(t)
	for _, tc := range []struct {
		name, body string
		code       int
		contains   string
	}{
		{"ttl too short", `{"TTL":"5s"}`, 500, "Invalid Session TTL"},
		{"ttl too long", `{"TTL":"25h"}`, 500, "Invalid Session TTL"},
		{"ttl garbage", `{"TTL":"soon"}`, 500, "soon"},
		{"bad behavior", `{"Behavior":"explode"}`, 500, "Behavior"},
		{"unknown node", `{"Node":"ghost"}`, 500, "node"},
		{"unknown check", `{"Checks":["nope"]}`, 500, "nope"},
		{"malformed", `{"Name":`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.do(t, "PUT", "/v1/session/create", tc.body).expect(t, tc.name, tc.code)
			if !strings.Contains(r.body, tc.contains) {
				t.Errorf("body %q does not contain %q", r.body, tc.contains)
			}
		})
	}
	list, _, err := a.c.Session().List(nil)
	must(t, err)
	if len(list) != 0 {
		t.Errorf("sessions after refused creates: %+v", list)
	}
	// The client's entry point reports the same error.
	_, _, err = a.c.Session().Create(&api.SessionEntry{TTL: "1s"}, nil)
	if err == nil || !strings.Contains(err.Error(), "Invalid Session TTL") {
		t.Errorf("Create(TTL 1s): err = %v", err)
	}
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	a := start(t)
	sess := a.c.Session()
	id1, _, err := sess.Create(&api.SessionEntry{Name: "one", TTL: "30s"}, nil)
	must(t, err)
	id2, _, err := sess.CreateNoChecks(&api.SessionEntry{Name: "two"}, nil)
	must(t, err)

	info, meta, err := sess.Info(id1, nil)
	must(t, err)
	if info == nil || info.ID != id1 || info.Name != "one" || info.TTL != "30s" || info.Behavior != api.SessionBehaviorRelease || info.LockDelay != 15*time.Second {
		t.Errorf("Info(one) = %+v, want TTL 30s, release, the default 15s lock delay", info)
	}
	if meta.LastIndex == 0 {
		t.Errorf("Info LastIndex = 0")
	}
	info, _, err = sess.Info(id2, nil)
	must(t, err)
	if len(info.NodeChecks) != 0 {
		t.Errorf("CreateNoChecks: NodeChecks = %v, want none", info.NodeChecks)
	}
	missing, _, err := sess.Info("00000000-0000-0000-0000-000000000000", nil)
	if err != nil || missing != nil {
		t.Errorf("Info(unknown) = %+v, %v; want nil, nil", missing, err)
	}

	list, _, err := sess.List(nil)
	must(t, err)
	if len(list) != 2 {
		t.Errorf("List = %d sessions, want 2", len(list))
	}
	list, _, err = sess.Node(nodeName, nil)
	must(t, err)
	if len(list) != 2 {
		t.Errorf("Node(%s) = %d sessions, want 2", nodeName, len(list))
	}
	list, _, err = sess.Node("ghost", nil)
	must(t, err)
	if len(list) != 0 {
		t.Errorf("Node(ghost) = %d sessions, want 0", len(list))
	}

	renewed, _, err := sess.Renew(id1, nil)
	must(t, err)
	if renewed == nil || renewed.ID != id1 || renewed.TTL != "30s" {
		t.Errorf("Renew = %+v", renewed)
	}
	a.do(t, "PUT", "/v1/session/renew/00000000-0000-0000-0000-000000000000", nil).expect(t, "renew unknown", 404)

	_, err = sess.Destroy(id1, nil)
	must(t, err)
	if info, _, _ := sess.Info(id1, nil); info != nil {
		t.Errorf("session one still there after destroy")
	}
	// A renewal of a destroyed session tells the client it expired.
	renewed, _, err = sess.Renew(id1, nil)
	if err != nil || renewed != nil {
		t.Errorf("Renew(destroyed) = %+v, %v; want nil, nil", renewed, err)
	}
}

func TestSessionAcquireRelease(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	sess := a.c.Session()
	s1, _, err := sess.Create(&api.SessionEntry{Name: "s1"}, nil)
	must(t, err)
	s2, _, err := sess.Create(&api.SessionEntry{Name: "s2"}, nil)
	must(t, err)

	acquire := func(key, s, v string) bool {
		t.Helper()
		ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: []byte(v), Session: s}, nil)
		must(t, err)
		return ok
	}
	if !acquire("lock", s1, "one") {
		t.Fatalf("s1 could not acquire a free key")
	}
	p := mustGet(t, kv, "lock")
	if p.Session != s1 || p.LockIndex != 1 || string(p.Value) != "one" {
		t.Errorf("after acquire = %+v", p)
	}
	if acquire("lock", s2, "two") {
		t.Errorf("s2 acquired a key held by s1")
	}
	// The holder may acquire again (updating the value) without a new lock.
	if !acquire("lock", s1, "again") {
		t.Errorf("s1 could not re-acquire its own key")
	}
	if p := mustGet(t, kv, "lock"); p.LockIndex != 1 || string(p.Value) != "again" {
		t.Errorf("after re-acquire = %+v, want LockIndex 1 and the new value", p)
	}
	// A plain put does not change the holder.
	_, err = kv.Put(&api.KVPair{Key: "lock", Value: []byte("put")}, nil)
	must(t, err)
	if p := mustGet(t, kv, "lock"); p.Session != s1 {
		t.Errorf("a put dropped the lock: %+v", p)
	}
	ok, _, err := kv.Release(&api.KVPair{Key: "lock", Session: s2}, nil)
	must(t, err)
	if ok {
		t.Errorf("s2 released s1's lock")
	}
	ok, _, err = kv.Release(&api.KVPair{Key: "lock", Session: s1}, nil)
	must(t, err)
	if !ok {
		t.Errorf("s1 could not release its lock")
	}
	if p := mustGet(t, kv, "lock"); p.Session != "" || p.LockIndex != 1 {
		t.Errorf("after release = %+v", p)
	}
	// Release does not start a lock-delay: s2 gets it at once.
	if !acquire("lock", s2, "two") {
		t.Errorf("s2 could not acquire a released key")
	}
	if p := mustGet(t, kv, "lock"); p.LockIndex != 2 {
		t.Errorf("LockIndex = %d after a second holder, want 2", p.LockIndex)
	}
	// An unknown session cannot acquire.
	_, _, err = kv.Acquire(&api.KVPair{Key: "other", Session: "00000000-0000-0000-0000-000000000000"}, nil)
	if err == nil {
		t.Errorf("acquire with an unknown session succeeded")
	}
	if p, _, _ := kv.Get("other", nil); p != nil {
		t.Errorf("acquire with an unknown session wrote the key")
	}
}

func TestSessionBehaviorDelete(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	sess := a.c.Session()
	del, _, err := sess.Create(&api.SessionEntry{Behavior: api.SessionBehaviorDelete}, nil)
	must(t, err)
	rel, _, err := sess.Create(&api.SessionEntry{Behavior: api.SessionBehaviorRelease}, nil)
	must(t, err)
	for key, s := range map[string]string{"d/1": del, "d/2": del, "r/1": rel} {
		ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: []byte("v"), Session: s}, nil)
		must(t, err)
		if !ok {
			t.Fatalf("acquire %s failed", key)
		}
	}
	_, err = kv.Put(&api.KVPair{Key: "d/unheld", Value: []byte("v")}, nil)
	must(t, err)

	_, err = sess.Destroy(del, nil)
	must(t, err)
	_, err = sess.Destroy(rel, nil)
	must(t, err)
	keys, _, err := kv.Keys("", "", nil)
	must(t, err)
	if want := []string{"d/unheld", "r/1"}; strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("keys after destroy = %v, want %v", keys, want)
	}
	if p := mustGet(t, kv, "r/1"); p.Session != "" {
		t.Errorf("r/1 still held after its session was destroyed: %+v", p)
	}
}

func TestSessionLockDelay(t *testing.T) {
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	sess := a.c.Session()
	s1, _, err := sess.Create(&api.SessionEntry{LockDelay: time.Second}, nil)
	must(t, err)
	s2, _, err := sess.Create(&api.SessionEntry{}, nil)
	must(t, err)
	ok, _, err := kv.Acquire(&api.KVPair{Key: "ld", Session: s1}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("first acquire failed")
	}

	destroyed := time.Now()
	_, err = sess.Destroy(s1, nil)
	must(t, err)
	ok, _, err = kv.Acquire(&api.KVPair{Key: "ld", Session: s2}, nil)
	must(t, err)
	// The delay starts when the server invalidates s1, after destroyed:
	// a success this soon means it was not honoured.
	if ok && time.Since(destroyed) < time.Second {
		t.Fatalf("acquire right after invalidation succeeded inside the 1s lock-delay")
	}
	waitFor(t, 10*time.Second, func() error {
		ok, _, err := kv.Acquire(&api.KVPair{Key: "ld", Session: s2}, nil)
		if err != nil {
			return err
		}
		if !ok {
			return errorf("still refused")
		}
		return nil
	})

	// Invalidation by a check going critical starts the delay too.
	must(t, a.c.Agent().CheckRegister(&api.AgentCheckRegistration{
		ID: "guard", AgentServiceCheck: api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}))
	s3, _, err := sess.Create(&api.SessionEntry{Checks: []string{"serfHealth", "guard"}, LockDelay: time.Second}, nil)
	must(t, err)
	ok, _, err = kv.Acquire(&api.KVPair{Key: "guarded", Session: s3}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("acquire of guarded failed")
	}
	failed := time.Now()
	must(t, a.c.Agent().FailTTL("guard", "gone"))
	if info, _, _ := sess.Info(s3, nil); info != nil {
		t.Errorf("session survived its check going critical")
	}
	if p := mustGet(t, kv, "guarded"); p.Session != "" {
		t.Errorf("guarded still held after its session was invalidated")
	}
	ok, _, err = kv.Acquire(&api.KVPair{Key: "guarded", Session: s2}, nil)
	must(t, err)
	if ok && time.Since(failed) < time.Second {
		t.Errorf("acquire right after check invalidation succeeded inside the lock-delay")
	}
	// A session cannot be created on a critical check.
	if _, _, err := sess.Create(&api.SessionEntry{Checks: []string{"guard"}}, nil); err == nil {
		t.Errorf("session created on a critical check")
	}
}

// TestSessionTTLExpiry waits out a real TTL: Consul's minimum is 10s and a
// session is invalidated between TTL and 2×TTL after its last renewal.
func TestSessionTTLExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 10s session TTL to expire")
	}
	t.Parallel()
	a := start(t)
	kv := a.c.KV()
	sess := a.c.Session()
	created := time.Now()
	id, _, err := sess.Create(&api.SessionEntry{TTL: "10s", Behavior: api.SessionBehaviorDelete, LockDelay: time.Millisecond}, nil)
	must(t, err)
	// A twin renewed every TTL/2 outlives it.
	renewed, _, err := sess.Create(&api.SessionEntry{TTL: "10s"}, nil)
	must(t, err)
	stopRenew := make(chan struct{})
	renewErr := make(chan error, 1)
	go func() { renewErr <- sess.RenewPeriodic("10s", renewed, nil, stopRenew) }()
	defer func() {
		close(stopRenew)
		if err := <-renewErr; err != nil {
			t.Errorf("RenewPeriodic: %v", err)
		}
	}()
	ok, _, err := kv.Acquire(&api.KVPair{Key: "ephemeral", Session: id}, nil)
	must(t, err)
	if !ok {
		t.Fatalf("acquire failed")
	}
	// Block on the session's info until it is gone, rather than polling.
	var idx uint64
	deadline := created.Add(2*10*time.Second + 5*time.Second)
	for {
		info, meta, err := sess.Info(id, &api.QueryOptions{WaitIndex: idx, WaitTime: time.Until(deadline)})
		must(t, err)
		if info == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still alive %v after creation with a 10s TTL", time.Since(created).Round(time.Second))
		}
		idx = meta.LastIndex
	}
	if p, _, _ := kv.Get("ephemeral", nil); p != nil {
		t.Errorf("key of an expired delete-session still there")
	}
	if _, _, err := sess.Renew(id, nil); err != nil {
		t.Errorf("Renew after expiry: %v", err)
	}
	if info, _, err := sess.Info(renewed, nil); err != nil || info == nil {
		t.Errorf("the renewed session expired with its twin: %v", err)
	}
}

func TestSessionRenewPeriodic(t *testing.T) {
	t.Parallel()
	a := start(t)
	sess := a.c.Session()
	id, _, err := sess.Create(&api.SessionEntry{TTL: "10s"}, nil)
	must(t, err)
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- sess.RenewPeriodic("10s", id, nil, done) }()
	// Closing done makes RenewPeriodic destroy the session.
	close(done)
	if err := <-errc; err != nil {
		t.Fatalf("RenewPeriodic: %v", err)
	}
	if info, _, _ := sess.Info(id, nil); info != nil {
		t.Errorf("session still there after RenewPeriodic stopped")
	}
}
