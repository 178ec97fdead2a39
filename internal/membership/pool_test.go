package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestJoinMembersAlive(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	for _, p := range pools {
		ms := p.Members()
		for i, m := range ms {
			wantName := pools[i].Name() // both sorted node-1..node-3
			if m.Name != wantName {
				t.Errorf("%s: member %d is %q, want %q", p.Name(), i, m.Name, wantName)
			}
			if m.Status != StatusAlive || int(m.Status) != 1 {
				t.Errorf("%s: %s status = %d, want 1 (alive)", p.Name(), m.Name, m.Status)
			}
			for k, want := range map[string]string{"role": "node", TagDatacenter: "dc1", TagNodeID: "id-" + m.Name} {
				if got := m.Tags[k]; got != want {
					t.Errorf("%s: %s tag %q = %q, want %q", p.Name(), m.Name, k, got, want)
				}
			}
			_, port, _ := net.SplitHostPort(pools[i].Addr())
			if m.Addr != "127.0.0.1" || strconv.Itoa(int(m.Port)) != port {
				t.Errorf("%s: %s at %s:%d, want %s", p.Name(), m.Name, m.Addr, m.Port, pools[i].Addr())
			}
			if m.ProtocolCur == 0 || m.DelegateCur == 0 {
				t.Errorf("%s: %s protocol versions not set: %+v", p.Name(), m.Name, m)
			}
		}
		local := p.LocalMember()
		if local.Name != p.Name() || local.Status != StatusAlive {
			t.Errorf("LocalMember() = %s %s, want %s alive", local.Name, local.Status, p.Name())
		}
	}
}

func TestAddrReportsRealPort(t *testing.T) {
	leakCheck(t)
	p := newPool(t, "node-1", nil)
	host, port, err := net.SplitHostPort(p.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q (%v), want 127.0.0.1 and a real port", p.Addr(), err)
	}
}

func TestShutdownWithoutLeaveIsFailed(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	a, b, c := pools[0], pools[1], pools[2]
	events, cancel := a.Subscribe()
	defer cancel()

	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, events, "member-failed for node-3", memberEvent(EventMemberFailed, c.Name()))
	if got := e.Members[0].Status; got != StatusFailed {
		t.Errorf("event status = %s, want failed", got)
	}
	for _, p := range []*Pool{a, b} {
		waitStatus(t, p, c.Name(), StatusFailed)
		if m, _ := member(p, c.Name()); int(m.Status) != 4 {
			t.Errorf("%s: status code = %d, want 4", p.Name(), m.Status)
		}
	}
}

func TestGracefulLeaveIsLeft(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	a, b, c := pools[0], pools[1], pools[2]
	events, cancel := a.Subscribe()
	defer cancel()

	if err := c.Leave(); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	e := waitEvent(t, events, "member-leave for node-3", memberEvent(EventMemberLeave, c.Name()))
	if got := e.Members[0].Status; got != StatusLeft {
		t.Errorf("event status = %s, want left", got)
	}
	for _, p := range []*Pool{a, b} {
		waitStatus(t, p, c.Name(), StatusLeft)
		if m, _ := member(p, c.Name()); int(m.Status) != 3 {
			t.Errorf("%s: status code = %d, want 3", p.Name(), m.Status)
		}
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func TestForceLeave(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	a, b, c := pools[0], pools[1], pools[2]
	bEvents, cancel := b.Subscribe()
	defer cancel()

	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, c.Name(), StatusFailed)
	waitStatus(t, b, c.Name(), StatusFailed)

	if err := a.ForceLeave(c.Name(), false); err != nil {
		t.Fatalf("ForceLeave: %v", err)
	}
	waitStatus(t, a, c.Name(), StatusLeft)
	waitStatus(t, b, c.Name(), StatusLeft) // gossiped
	waitEvent(t, bEvents, "member-leave for node-3 at node-2", memberEvent(EventMemberLeave, c.Name()))

	if err := a.ForceLeave(c.Name(), true); err != nil {
		t.Fatalf("ForceLeave prune: %v", err)
	}
	waitGone(t, a, c.Name())
	waitGone(t, b, c.Name())
	waitEvent(t, bEvents, "member-reap for node-3 at node-2", memberEvent(EventMemberReap, c.Name()))
	waitMembers(t, a, 2, StatusAlive)

	err := a.ForceLeave("no-such-node", false)
	if !errors.Is(err, ErrUnknownMember) {
		t.Errorf("ForceLeave(unknown) = %v, want ErrUnknownMember", err)
	}
}

func TestForceLeavePruneFailed(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	a, b, c := pools[0], pools[1], pools[2]
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, c.Name(), StatusFailed)
	if err := a.ForceLeave(c.Name(), true); err != nil {
		t.Fatalf("ForceLeave prune: %v", err)
	}
	waitGone(t, a, c.Name())
	waitGone(t, b, c.Name())
}

func TestReconnectTimeoutReaps(t *testing.T) {
	leakCheck(t)
	a := newPool(t, "node-1", func(c *Config) { c.ReconnectTimeout = 200 * time.Millisecond })
	b := newPool(t, "node-2", nil)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, 2, StatusAlive)
	events, cancel := a.Subscribe()
	defer cancel()

	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "member-failed", memberEvent(EventMemberFailed, b.Name()))
	waitEvent(t, events, "member-reap", memberEvent(EventMemberReap, b.Name()))
	waitGone(t, a, b.Name())
}

func TestSetTagsPropagates(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	a, b := pools[0], pools[1]
	events, cancel := b.Subscribe()
	defer cancel()

	if err := a.SetTags(map[string]string{"role": "server", "port": "8300"}); err != nil {
		t.Fatalf("SetTags: %v", err)
	}
	e := waitEvent(t, events, "member-update for node-1", memberEvent(EventMemberUpdate, a.Name()))
	want := map[string]string{"role": "server", "port": "8300", TagDatacenter: "dc1", TagNodeID: "id-node-1"}
	if got := e.Members[0].Tags; !equalTags(got, want) {
		t.Errorf("update tags = %v, want %v", got, want)
	}
	for _, p := range pools {
		waitFor(t, p.Name()+" to see node-1's new tags", func() error {
			m, _ := member(p, a.Name())
			if !equalTags(m.Tags, want) {
				return errors.New("tags " + describeTags(m.Tags))
			}
			return nil
		})
	}

	if err := a.SetTags(map[string]string{TagDatacenter: "dc9"}); err == nil {
		t.Errorf("SetTags overriding dc: want an error")
	}
}

func equalTags(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func describeTags(m map[string]string) string {
	s := ""
	for k, v := range m {
		s += k + "=" + v + " "
	}
	return s
}

func TestUserEventReachesAllSubscribers(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 3)
	var subs []<-chan Event
	for _, p := range pools {
		for range 2 { // two subscribers per pool
			ch, cancel := p.Subscribe()
			defer cancel()
			subs = append(subs, ch)
		}
	}
	if err := pools[0].UserEvent("deploy", []byte("v2")); err != nil {
		t.Fatalf("UserEvent: %v", err)
	}
	for i, ch := range subs {
		e := waitEvent(t, ch, "user event", func(e Event) bool { return e.Type == EventUser })
		if e.Name != "deploy" || string(e.Payload) != "v2" || e.LTime == 0 {
			t.Errorf("subscriber %d (pool %s): got %q %q ltime %d, want \"deploy\" \"v2\"",
				i, pools[i/2].Name(), e.Name, e.Payload, e.LTime)
		}
	}
	if err := pools[0].UserEvent("", nil); err == nil {
		t.Errorf("UserEvent with no name: want an error")
	}
}

func TestWANNames(t *testing.T) {
	leakCheck(t)
	wan := func(c *Config) { c.WAN = true }
	s1 := newPool(t, "s1", wan)
	s2 := newPool(t, "s2", func(c *Config) { c.WAN = true; c.Datacenter = "dc2" })
	if s1.Name() != "s1.dc1" || s2.Name() != "s2.dc2" {
		t.Fatalf("Name() = %q, %q; want s1.dc1, s2.dc2", s1.Name(), s2.Name())
	}
	if _, err := s2.Join([]string{s1.Addr()}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pool{s1, s2} {
		waitMembers(t, p, 2, StatusAlive)
		ms := p.Members()
		if ms[0].Name != "s1.dc1" || ms[1].Name != "s2.dc2" {
			t.Errorf("%s: members %v, want [s1.dc1 s2.dc2]", p.Name(), describe(ms))
		}
		if ms[0].Tags[TagDatacenter] != "dc1" || ms[1].Tags[TagDatacenter] != "dc2" {
			t.Errorf("%s: dc tags %v", p.Name(), []map[string]string{ms[0].Tags, ms[1].Tags})
		}
	}
}

func TestCoordinates(t *testing.T) {
	leakCheck(t)
	pools := cluster(t, 2)
	a, b := pools[0], pools[1]
	c, err := a.Coordinate()
	if err != nil || c == nil {
		t.Fatalf("Coordinate() = %v, %v", c, err)
	}
	// Coordinates ride on probe acks, so they arrive within a few probes.
	waitFor(t, "node-1 to cache node-2's coordinate", func() error {
		if c, ok := a.GetCachedCoordinate(b.Name()); !ok || c == nil {
			return errors.New("no coordinate yet")
		}
		return nil
	})
	if _, ok := a.GetCachedCoordinate("no-such-node"); ok {
		t.Errorf("GetCachedCoordinate(unknown) ok, want !ok")
	}
}

func TestEncryptKey(t *testing.T) {
	leakCheck(t)
	key := []byte("0123456789abcdef")
	other := []byte("fedcba9876543210")
	a := newPool(t, "node-1", func(c *Config) { c.EncryptKey = key })
	b := newPool(t, "node-2", func(c *Config) { c.EncryptKey = key })
	if n, err := b.Join([]string{a.Addr()}); n != 1 || err != nil {
		t.Fatalf("same key: Join = %d, %v; want 1, nil", n, err)
	}
	waitMembers(t, a, 2, StatusAlive)

	for name, k := range map[string][]byte{"node-plain": nil, "node-other": other} {
		p := newPool(t, name, func(c *Config) { c.EncryptKey = k })
		if n, err := p.Join([]string{a.Addr()}); n != 0 || err == nil {
			t.Errorf("%s: Join = %d, %v; want 0 and an error", name, n, err)
		}
	}
}

func TestRetryJoin(t *testing.T) {
	leakCheck(t)
	a := newPool(t, "node-1", nil)

	t.Run("succeeds after failures", func(t *testing.T) {
		// Reserve a port, free it, retry-join it, then start a pool on it
		// once a failed attempt has been logged.
		x := newPool(t, "node-x", nil)
		target := x.Addr()
		_, portStr, _ := net.SplitHostPort(target)
		port, _ := strconv.Atoi(portStr)
		if err := x.Shutdown(); err != nil {
			t.Fatal(err)
		}
		failed := make(chan struct{}, 1)
		b := newPool(t, "node-2", func(c *Config) { c.Logger = signalLogger(c.Logger, "membership: retry join failed", failed) })
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := b.RetryJoin(context.Background(), []string{target}, 20*time.Millisecond)
			done <- result{n, err}
		}()
		<-failed
		y := newPool(t, "node-y", func(c *Config) { c.BindPort = port })
		if _, err := y.Join([]string{a.Addr()}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.n != 1 || r.err != nil {
				t.Fatalf("RetryJoin = %d, %v; want 1, nil", r.n, r.err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("RetryJoin did not return")
		}
		waitMembers(t, a, 3, StatusAlive)
	})

	t.Run("gives up when ctx ends", func(t *testing.T) {
		dead := deadAddr(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		n, err := a.RetryJoin(ctx, []string{dead}, 20*time.Millisecond)
		if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RetryJoin = %d, %v; want 0 and context.DeadlineExceeded", n, err)
		}
	})

	t.Run("gives up on shutdown", func(t *testing.T) {
		p := newPool(t, "node-z", nil)
		dead := deadAddr(t)
		done := make(chan error, 1)
		go func() {
			_, err := p.RetryJoin(context.Background(), []string{dead}, time.Hour)
			done <- err
		}()
		if err := p.Shutdown(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrShutdown) {
				t.Errorf("RetryJoin after Shutdown = %v, want ErrShutdown", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("RetryJoin did not return after Shutdown")
		}
	})
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSnapshotRejoin(t *testing.T) {
	leakCheck(t)
	a := newPool(t, "node-1", nil)
	snap := filepath.Join(t.TempDir(), "local.snapshot")
	b := newPool(t, "node-2", func(c *Config) { c.SnapshotPath = snap })
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, 2, StatusAlive)
	_, portStr, _ := net.SplitHostPort(b.Addr())
	port, _ := strconv.Atoi(portStr)
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "node-2", StatusFailed)

	// Restarted on its address with its snapshot, node-2 rejoins node-1
	// without being told to.
	events, cancel := a.Subscribe()
	defer cancel()
	newPool(t, "node-2", func(c *Config) { c.SnapshotPath = snap; c.BindPort = port })
	waitEvent(t, events, "member-join for node-2", memberEvent(EventMemberJoin, "node-2"))
	waitMembers(t, a, 2, StatusAlive)
}

// Serf's snapshot may lose its last lines in a crash: the peers file is
// enough to rejoin, and a graceful leave removes it.
func TestPeersFileRejoin(t *testing.T) {
	leakCheck(t)
	a := newPool(t, "node-1", nil)
	snap := filepath.Join(t.TempDir(), "local.snapshot")
	b := newPool(t, "node-2", func(c *Config) { c.SnapshotPath = snap })
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peers file to list node-1", func() error {
		peers, err := readPeers(peersPath(snap))
		if err != nil || len(peers) != 1 || peers[0] != a.LocalMember().Addr+":"+strconv.Itoa(int(a.LocalMember().Port)) {
			return fmt.Errorf("peers = %v, %v", peers, err)
		}
		return nil
	})
	_, portStr, _ := net.SplitHostPort(b.Addr())
	port, _ := strconv.Atoi(portStr)
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "node-2", StatusFailed)
	// What a crash can do to serf's own snapshot: lose the members.
	if err := os.WriteFile(snap, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	events, cancel := a.Subscribe()
	defer cancel()
	b = newPool(t, "node-2", func(c *Config) { c.SnapshotPath = snap; c.BindPort = port })
	waitEvent(t, events, "member-join for node-2", memberEvent(EventMemberJoin, "node-2"))
	waitMembers(t, a, 2, StatusAlive)

	if err := b.Leave(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(peersPath(snap)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("peers file after a leave: %v, want it removed", err)
	}
}

func TestShutdown(t *testing.T) {
	leakCheck(t)
	p := newPool(t, "node-1", nil)
	events, cancel := p.Subscribe()
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done() not closed after Shutdown")
	}
	for range events { // closed, possibly after queued events
	}
	cancel() // after close: no panic
	if err := p.Shutdown(); err != nil {
		t.Errorf("second Shutdown = %v, want nil", err)
	}
	late, lateCancel := p.Subscribe()
	if _, ok := <-late; ok {
		t.Error("Subscribe after Shutdown: channel open")
	}
	lateCancel()
	for name, err := range map[string]error{
		"Join":       func() error { _, err := p.Join([]string{"127.0.0.1:1"}); return err }(),
		"Leave":      p.Leave(),
		"ForceLeave": p.ForceLeave("x", false),
		"SetTags":    p.SetTags(nil),
		"UserEvent":  p.UserEvent("x", nil),
	} {
		if !errors.Is(err, ErrShutdown) {
			t.Errorf("%s after Shutdown = %v, want ErrShutdown", name, err)
		}
	}
}

func TestNewFailsCleanly(t *testing.T) {
	leakCheck(t)
	a := newPool(t, "node-1", nil)
	_, portStr, _ := net.SplitHostPort(a.Addr())
	port, _ := strconv.Atoi(portStr)
	for name, mutate := range map[string]func(*Config){
		"port in use":         func(c *Config) { c.BindPort = port },
		"snapshot dir absent": func(c *Config) { c.SnapshotPath = filepath.Join(t.TempDir(), "no", "such", "dir", "snap") },
	} {
		cfg := Config{NodeName: "node-2", Datacenter: "dc1", BindAddr: "127.0.0.1", Logger: testLogger(t), Timing: FastTiming()}
		mutate(&cfg)
		if p, err := New(cfg); err == nil {
			p.Shutdown()
			t.Errorf("%s: New succeeded, want an error", name)
		} else if !strings.Contains(err.Error(), `membership: start lan pool for "node-2"`) {
			t.Errorf("%s: error %q does not name the pool", name, err)
		}
	}
}
