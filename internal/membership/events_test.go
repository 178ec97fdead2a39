package membership

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
)

// TestSlowSubscriberIsDropped checks the overflow path: a subscriber that
// never reads is dropped (its channel closed after the events it had
// queued) while another keeps receiving every event.
func TestSlowSubscriberIsDropped(t *testing.T) {
	leakCheck(t)
	const queue = 4
	p := newPool(t, "node-1", func(c *Config) { c.SubscriberQueue = queue })
	// Let the pool publish its own join first, so that the slow queue
	// holds exactly the user events below.
	sync, cancelSync := p.Subscribe()
	if err := p.UserEvent("sync", nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, sync, "sync event", func(e Event) bool { return e.Name == "sync" })
	cancelSync()

	slow, cancelSlow := p.Subscribe()
	defer cancelSlow()
	fast, cancelFast := p.Subscribe()
	defer cancelFast()

	const n = 3 * queue
	for i := range n {
		want := strconv.Itoa(i)
		if err := p.UserEvent("e", []byte(want)); err != nil {
			t.Fatal(err)
		}
		// Wait for the fast subscriber so that only the slow one overflows.
		e := waitEvent(t, fast, "event "+want, func(e Event) bool { return e.Type == EventUser })
		if string(e.Payload) != want {
			t.Fatalf("fast subscriber got %q, want %q", e.Payload, want)
		}
	}

	var got []string
	for e := range slow { // ends: the pool closed it
		got = append(got, string(e.Payload))
	}
	if want := []string{"0", "1", "2", "3"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("slow subscriber got %v before close, want %v", got, want)
	}
	if d := p.DroppedSubscribers(); d != 1 {
		t.Errorf("DroppedSubscribers() = %d, want 1", d)
	}
	cancelSlow() // after the drop: no panic, no effect on others

	// Resync: a new subscription works.
	again, cancelAgain := p.Subscribe()
	defer cancelAgain()
	if err := p.UserEvent("after", nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, again, "event after resubscribe", func(e Event) bool { return e.Name == "after" })
	waitEvent(t, fast, "event after drop", func(e Event) bool { return e.Name == "after" })
}

func TestCancelClosesOnlyThatSubscriber(t *testing.T) {
	leakCheck(t)
	p := newPool(t, "node-1", nil)
	a, cancelA := p.Subscribe()
	b, cancelB := p.Subscribe()
	defer cancelB()
	cancelA()
	cancelA()     // idempotent
	for range a { // closed, after any events queued before cancel
	}
	if err := p.UserEvent("x", nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, b, "event on the other subscriber", func(e Event) bool { return e.Type == EventUser })
}

// signalLogger wraps l, sending on ch (without blocking) whenever a record
// with message msg is logged.
func signalLogger(l *slog.Logger, msg string, ch chan<- struct{}) *slog.Logger {
	return slog.New(&signalHandler{Handler: l.Handler(), msg: msg, ch: ch})
}

type signalHandler struct {
	slog.Handler
	msg string
	ch  chan<- struct{}
}

func (h *signalHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn || h.Handler.Enabled(ctx, level)
}

func (h *signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &signalHandler{Handler: h.Handler.WithAttrs(as), msg: h.msg, ch: h.ch}
}

func (h *signalHandler) WithGroup(name string) slog.Handler {
	return &signalHandler{Handler: h.Handler.WithGroup(name), msg: h.msg, ch: h.ch}
}

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }

// recordHandler keeps "LEVEL message" for each record, at every level.
type recordHandler struct {
	records *[]string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	*h.records = append(*h.records, r.Level.String()+" "+r.Message)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }
