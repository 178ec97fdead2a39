package balance

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// outlierCluster is n hosts with outlier detection o (all hosts ejectable
// unless o says otherwise) and a fake clock.
func outlierCluster(t *testing.T, n int, o *Outlier, opts Options) (*Cluster, *fakeClock) {
	t.Helper()
	clk := newClock()
	opts.Now = clk.Now
	cfg := DefaultConfig()
	cfg.Outlier = o
	return newCluster(t, cfg, endpoints(n), opts), clk
}

func TestConsecutive5xx(t *testing.T) {
	c, _ := outlierCluster(t, 10, DefaultOutlier(), Options{})
	h := host(t, c, addr(0))
	for range 4 {
		c.Result(h, Status(500))
	}
	c.Result(h, Status(404)) // not an error: starts over
	for range 4 {
		c.Result(h, Status(503))
	}
	if h.Ejected() {
		t.Fatal("ejected after 4 consecutive 5xx")
	}
	c.Result(h, ConnectFailure) // local errors count as 5xx
	if !h.Ejected() {
		t.Fatal("not ejected after 5 consecutive 5xx")
	}
	if s := c.Stats(); s.EjectionsTotal != 1 || s.EjectionsActive != 1 {
		t.Errorf("stats %+v, want 1 ejection, 1 active", s)
	}
	if got := counts(100, func() *Host { return c.Pick(nil) }); got[addr(0)] != 0 {
		t.Errorf("ejected host picked %d times", got[addr(0)])
	}
}

func TestConsecutiveGatewayFailure(t *testing.T) {
	o := DefaultOutlier()
	o.Consecutive5xx = 0 // only the gateway detector
	o.ConsecutiveGatewayFailure = 3
	o.EnforcingGatewayFailure = 100
	c, _ := outlierCluster(t, 10, o, Options{})
	h := host(t, c, addr(0))
	c.Result(h, Status(502))
	c.Result(h, Timeout)
	c.Result(h, Status(500)) // a 5xx, not a gateway error: starts over
	c.Result(h, Reset)
	c.Result(h, GatewayFailure)
	if h.Ejected() {
		t.Fatal("ejected after 2 consecutive gateway failures")
	}
	c.Result(h, Status(504))
	if !h.Ejected() {
		t.Fatal("not ejected after 3 consecutive gateway failures")
	}

	// Envoy's default enforcing_consecutive_gateway_failure is 0: the
	// threshold is reached, nobody is ejected.
	o.EnforcingGatewayFailure = 0
	c, _ = outlierCluster(t, 10, o, Options{})
	h = host(t, c, addr(0))
	for range 30 {
		c.Result(h, Status(503))
	}
	if h.Ejected() {
		t.Fatal("ejected with enforcing 0")
	}
}

func TestEnforcingPercent(t *testing.T) {
	o := DefaultOutlier()
	o.Consecutive5xx = 1
	o.Enforcing5xx = 30
	var draw uint64
	c, _ := outlierCluster(t, 2, o, Options{Rand: func() uint64 { return draw }})
	h := host(t, c, addr(0))
	draw = 130 // 30 mod 100: not below 30
	c.Result(h, Status(500))
	if h.Ejected() {
		t.Fatal("ejected on a draw of 30 with enforcing 30")
	}
	draw = 229 // 29
	c.Result(h, Status(500))
	if !h.Ejected() {
		t.Fatal("not ejected on a draw of 29 with enforcing 30")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		name         string
		hosts, pct   int
		failing      int
		wantEjected  int
		wantOverflow uint64
	}{
		{"10% of 10", 10, 10, 3, 1, 2},
		{"20% of 10", 10, 20, 3, 2, 1},
		{"at least one (10% of 3)", 3, 10, 2, 1, 1},
		{"at least one (0%)", 4, 0, 1, 1, 0},
		{"100%", 3, 100, 3, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOutlier()
			o.MaxEjectionPercent = uint32(tc.pct)
			c, _ := outlierCluster(t, tc.hosts, o, Options{})
			for i := range tc.failing {
				for range 5 {
					c.Result(host(t, c, addr(i)), Status(500))
				}
			}
			s := c.Stats()
			if s.EjectionsActive != int64(tc.wantEjected) || s.EjectionsOverflow != tc.wantOverflow {
				t.Errorf("active %d overflow %d, want %d and %d", s.EjectionsActive, s.EjectionsOverflow, tc.wantEjected, tc.wantOverflow)
			}
		})
	}
}

func TestUnejectionAndBackoff(t *testing.T) {
	o := DefaultOutlier()
	o.Consecutive5xx = 1
	o.Interval = time.Second
	o.BaseEjectionTime = 10 * time.Second
	o.MaxEjectionTime = 25 * time.Second
	var mu sync.Mutex
	var events []string
	opts := Options{
		OnEject: func(a string, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, "eject "+a+" "+d.String())
		},
		OnUneject: func(a string) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, "back "+a)
		},
	}
	c, clk := outlierCluster(t, 2, o, opts)
	h := host(t, c, addr(0))

	// ejectFor ejects h now and checks it is back after exactly d.
	ejectFor := func(d time.Duration) {
		t.Helper()
		c.Result(h, Status(500))
		if !h.Ejected() {
			t.Fatal("not ejected")
		}
		c.Tick(clk.Advance(d - time.Millisecond))
		if !h.Ejected() {
			t.Fatalf("back before %v", d)
		}
		c.Tick(clk.Advance(time.Millisecond))
		if h.Ejected() {
			t.Fatalf("still ejected after %v", d)
		}
		if n := c.Stats().EjectionsActive; n != 0 {
			t.Fatalf("%d active ejections after un-ejection", n)
		}
	}
	ejectFor(10 * time.Second) // 1 × base
	ejectFor(20 * time.Second) // ejected again at once: 2 × base
	ejectFor(25 * time.Second) // 3 × base, capped at max_ejection_time
	ejectFor(25 * time.Second) // the multiplier is 4 and stops there

	// Each sweep that finds h not ejected lowers the multiplier by one:
	// after 2 of them it is 2, so the next ejection is 3 × base (capped).
	c.Tick(clk.Advance(time.Second))
	c.Tick(clk.Advance(time.Second))
	ejectFor(25 * time.Second)
	// After 3 more (3 → 0) the next ejection is 1 × base again.
	for range 3 {
		c.Tick(clk.Advance(time.Second))
	}
	ejectFor(10 * time.Second)

	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"eject " + addr(0) + " 10s", "back " + addr(0),
		"eject " + addr(0) + " 20s", "back " + addr(0),
		"eject " + addr(0) + " 25s", "back " + addr(0),
		"eject " + addr(0) + " 25s", "back " + addr(0),
		"eject " + addr(0) + " 25s", "back " + addr(0),
		"eject " + addr(0) + " 10s", "back " + addr(0),
	}
	if !slices.Equal(events, want) {
		t.Errorf("events\n%q\nwant\n%q", events, want)
	}
	if n := c.Stats().EjectionsTotal; n != 6 {
		t.Errorf("%d ejections counted, want 6", n)
	}
}

func TestUnejectedHostStartsAfresh(t *testing.T) {
	o := DefaultOutlier() // 5 consecutive
	c, clk := outlierCluster(t, 2, o, Options{})
	h := host(t, c, addr(0))
	for range 5 {
		c.Result(h, Status(500))
	}
	for range 4 { // answers of requests in flight when it was ejected
		c.Result(h, Status(500))
	}
	c.Tick(clk.Advance(o.BaseEjectionTime))
	if h.Ejected() {
		t.Fatal("still ejected")
	}
	c.Result(h, Status(500))
	if h.Ejected() {
		t.Fatal("ejected again by one 5xx after un-ejection")
	}
}

func TestOutlierStateSurvivesUpdate(t *testing.T) {
	o := DefaultOutlier()
	o.MaxEjectionPercent = 100
	c, clk := outlierCluster(t, 3, o, Options{})
	cfg := DefaultConfig()
	cfg.Outlier = o
	a, b := host(t, c, addr(0)), host(t, c, addr(1))
	for range 5 {
		c.Result(a, Status(500))
	}
	for range 4 {
		c.Result(b, Status(500))
	}
	a.Begin()

	// a and b remain, 2 goes, 3 comes.
	eps := []Endpoint{{addr(0), 1}, {addr(1), 1}, {addr(3), 1}}
	if err := c.Update(cfg, eps); err != nil {
		t.Fatal(err)
	}
	if host(t, c, addr(0)) != a || !a.Ejected() || a.Active() != 1 {
		t.Fatal("a lost its state")
	}
	if n := c.Stats().EjectionsActive; n != 1 {
		t.Errorf("%d active ejections, want 1", n)
	}
	c.Result(b, Status(500)) // its 5th
	if !b.Ejected() {
		t.Error("b's count of 4 was lost")
	}
	a.End()

	// Removing an ejected host ends its ejection; results for it no
	// longer count.
	if err := c.Update(cfg, eps[1:]); err != nil {
		t.Fatal(err)
	}
	if n := c.Stats().EjectionsActive; n != 1 {
		t.Errorf("%d active ejections after removing a, want 1 (b)", n)
	}
	c.Tick(clk.Advance(o.BaseEjectionTime))
	for range 5 {
		c.Result(a, Status(500))
	}
	if n := c.Stats().EjectionsTotal; n != 2 {
		t.Errorf("%d ejections, want 2: a removed host was ejected", n)
	}

	// Turning outlier detection off un-ejects everyone.
	for range 5 {
		c.Result(b, Status(500))
	}
	cfg.Outlier = nil
	if err := c.Update(cfg, eps[1:]); err != nil {
		t.Fatal(err)
	}
	if b.Ejected() || c.Stats().EjectionsActive != 0 {
		t.Error("outlier detection off: b still ejected")
	}
	for range 10 {
		c.Result(b, Status(500))
	}
	if b.Ejected() {
		t.Error("outlier detection off: b ejected")
	}
}

func TestStatusOutcome(t *testing.T) {
	for _, tc := range []struct {
		o          Outcome
		err, gwErr bool
	}{
		{Success, false, false},
		{Status(200), false, false},
		{Status(404), false, false},
		{Status(500), true, false},
		{Status(501), true, false},
		{Status(502), true, true},
		{Status(503), true, true},
		{Status(504), true, true},
		{Status(599), true, false},
		{Status(0), false, false},
		{ConnectFailure, true, true},
		{Reset, true, true},
		{Timeout, true, true},
		{GatewayFailure, true, true},
	} {
		code := tc.o.code()
		if err := code >= 500 && code <= 599; err != tc.err {
			t.Errorf("%d: error %v, want %v", tc.o, err, tc.err)
		}
		if gw := code >= 502 && code <= 504; gw != tc.gwErr {
			t.Errorf("%d: gateway error %v, want %v", tc.o, gw, tc.gwErr)
		}
	}
}
