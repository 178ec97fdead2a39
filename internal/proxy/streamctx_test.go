package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

type streamTestKey struct{}

// A streamCtx ends once, with the first cause; it closes its Done
// channel whether that was asked for before or after the end, and it
// takes its values and deadline from its parent.
func TestStreamCtxEnds(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	parent, cancelParent := context.WithDeadline(context.WithValue(context.Background(), streamTestKey{}, "v"), deadline)
	defer cancelParent()

	for _, early := range []bool{true, false} {
		c := newStreamCtx(parent)
		if c.Err() != nil || c.Cause() != nil {
			t.Fatalf("a new context says Err %v, Cause %v", c.Err(), c.Cause())
		}
		if v := c.Value(streamTestKey{}); v != "v" {
			t.Errorf("Value = %v, want the parent's", v)
		}
		if d, ok := c.Deadline(); !ok || !d.Equal(deadline) {
			t.Errorf("Deadline = %v, %v, want the parent's", d, ok)
		}
		var done <-chan struct{}
		if early {
			done = c.Done()
			select {
			case <-done:
				t.Fatal("Done is closed before the end")
			default:
			}
		}
		c.cancel(errRouteTimeout)
		c.cancel(errIdleTimeout)
		if !early {
			done = c.Done()
		}
		select {
		case <-done:
		default:
			t.Fatalf("Done is open after the end (asked for early: %v)", early)
		}
		if !errors.Is(c.Err(), context.Canceled) || c.Cause() != errRouteTimeout || causeOf(c) != errRouteTimeout {
			t.Errorf("after the end: Err %v, Cause %v, causeOf %v; want Canceled and the first cause", c.Err(), c.Cause(), causeOf(c))
		}
	}

	c := newStreamCtx(context.Background())
	c.cancel(nil)
	if c.Cause() != context.Canceled {
		t.Errorf("ended without a cause: Cause %v, want context.Canceled", c.Cause())
	}
	if parent.Err() != nil {
		t.Error("ending a streamCtx ended its parent")
	}
}

// onEnd runs its function once, when the context ends, unless stopped
// first; on a context that has ended it runs it at once, and stop says
// it could not stop it.
func TestStreamCtxOnEnd(t *testing.T) {
	noLeaks(t)
	c := newStreamCtx(context.Background())
	var ran [4]int
	hooks := make([]endHook, len(ran))
	for i := range hooks {
		hooks[i] = onEnd(c, func() { ran[i]++ })
	}
	if !hooks[1].stop() {
		t.Fatal("stop before the end said the function had run")
	}
	if hooks[1].stop() {
		t.Error("a second stop said it stopped the function again")
	}
	c.cancel(nil)
	c.cancel(nil)
	if ran != [4]int{1, 0, 1, 1} {
		t.Fatalf("runs per function %v, want [1 0 1 1]: each once but the stopped one", ran)
	}
	if hooks[0].stop() {
		t.Error("stop after the end said it stopped a function that ran")
	}

	late := make(chan struct{})
	h := onEnd(c, func() { close(late) })
	<-late // ran at once, though the context ended before
	if h.stop() {
		t.Error("stop of a function registered after the end said it stopped it")
	}

	// Another context gets context.AfterFunc's behaviour.
	other, cancel := context.WithCancel(context.Background())
	ranOther := make(chan struct{})
	h = onEnd(other, func() { close(ranOther) })
	cancel()
	<-ranOther
	if h.stop() {
		t.Error("stop after the end of a plain context said it stopped the function")
	}
}

// Contexts made under a streamCtx end with it: those of the context
// package (a retried attempt's, a dial's) follow it through its
// AfterFunc method, and context.AfterFunc works on it.
func TestStreamCtxChildren(t *testing.T) {
	noLeaks(t)
	c := newStreamCtx(context.Background())
	child, cancelChild := context.WithCancelCause(c)
	defer cancelChild(nil)
	timed, cancelTimed := context.WithTimeout(c, time.Hour)
	defer cancelTimed()
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })

	stopped, cancelStopped := context.WithCancel(c)
	cancelStopped() // ends it and takes it off c
	if n := len(c.hooks); n != 3 {
		t.Errorf("%d functions registered, want 3: the canceled child's went", n)
	}

	c.cancel(errRouteTimeout)
	for name, ctx := range map[string]context.Context{"WithCancelCause": child, "WithTimeout": timed, "canceled first": stopped} {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s child did not end with its parent", name)
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("the %s child says %v, want context.Canceled", name, ctx.Err())
		}
	}
	<-ran
}

// watchParent ends a streamCtx with its parent, and the parent's cause,
// until stopped.
func TestStreamCtxWatchParent(t *testing.T) {
	noLeaks(t)
	parent, cancel := context.WithCancelCause(context.Background())
	c := newStreamCtx(parent)
	c.watchParent()
	cancel(errIdleTimeout)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end with its parent")
	}
	if c.Cause() != errIdleTimeout {
		t.Errorf("Cause %v, want the parent's", c.Cause())
	}

	parent, cancel = context.WithCancelCause(context.Background())
	c = newStreamCtx(parent)
	if !c.watchParent()() {
		t.Fatal("the watch could not be stopped before the parent ended")
	}
	cancel(errIdleTimeout)
	<-parent.Done()
	if c.Err() != nil {
		t.Errorf("a stopped watch ended the context: %v", c.Err())
	}
}
