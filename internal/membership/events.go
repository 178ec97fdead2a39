package membership

import (
	"strconv"

	"github.com/hashicorp/serf/serf"
)

// EventType says what an Event reports.
type EventType int

// Event types. Member events carry the members concerned, with their new
// status; user events carry a name and a payload.
const (
	EventMemberJoin   EventType = iota + 1 // members became alive (or rejoined)
	EventMemberLeave                       // members left gracefully or were force-left: StatusLeft
	EventMemberFailed                      // members stopped answering probes: StatusFailed
	EventMemberUpdate                      // members changed their tags
	EventMemberReap                        // members were removed from the list (reconnect timeout, tombstone expiry, prune)
	EventUser                              // a user event (Pool.UserEvent), from any member including this one
)

// String returns serf's name for the event type.
func (t EventType) String() string {
	switch t {
	case EventMemberJoin:
		return "member-join"
	case EventMemberLeave:
		return "member-leave"
	case EventMemberFailed:
		return "member-failed"
	case EventMemberUpdate:
		return "member-update"
	case EventMemberReap:
		return "member-reap"
	case EventUser:
		return "user"
	}
	return "event(" + strconv.Itoa(int(t)) + ")"
}

// Event is one membership or user event. Subscribers share Event values:
// treat Members, their Tags and Payload as read-only.
type Event struct {
	Type EventType

	// Members is set for member events; serf may report several members
	// in one event.
	Members []Member

	// Name, Payload and LTime (the event's Lamport time) are set for
	// EventUser.
	Name    string
	Payload []byte
	LTime   uint64
}

// fromSerfEvent converts e; ok is false for events the pool does not
// expose (queries).
func fromSerfEvent(e serf.Event) (Event, bool) {
	switch e := e.(type) {
	case serf.MemberEvent:
		var t EventType
		switch e.Type {
		case serf.EventMemberJoin:
			t = EventMemberJoin
		case serf.EventMemberLeave:
			t = EventMemberLeave
		case serf.EventMemberFailed:
			t = EventMemberFailed
		case serf.EventMemberUpdate:
			t = EventMemberUpdate
		case serf.EventMemberReap:
			t = EventMemberReap
		default:
			return Event{}, false
		}
		return Event{Type: t, Members: fromSerfAll(e.Members)}, true
	case serf.UserEvent:
		return Event{
			Type:    EventUser,
			Name:    e.Name,
			Payload: append([]byte(nil), e.Payload...),
			LTime:   uint64(e.LTime),
		}, true
	}
	// Serf answers its internal queries itself; the pool issues no
	// others, so any that arrive go unanswered.
	return Event{}, false
}

// subscriber is one Subscribe call. Its channel is the queue.
type subscriber struct {
	ch chan Event
}

// Subscribe returns a channel of the pool's events from now on, and a
// cancel func that ends the subscription and closes the channel (safe to
// call more than once, and after the channel was closed).
//
// Each subscriber has its own queue of Config.SubscriberQueue events. A
// subscriber never slows serf or other subscribers: when its queue is
// full, the pool drops it — the events already queued can still be read,
// then the channel is closed. A channel that closes without cancel having
// been called therefore means "events were lost, resync": if Done() is not
// closed, the subscriber should Subscribe again, then reconcile with
// Members(). When the pool shuts down every channel is closed and Done()
// is closed first. DroppedSubscribers counts the drops.
func (p *Pool) Subscribe() (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, p.queueLen)}
	p.subMu.Lock()
	defer p.subMu.Unlock()
	if p.subsClosed {
		close(s.ch)
		return s.ch, func() {}
	}
	p.subs[s] = struct{}{}
	return s.ch, func() {
		p.subMu.Lock()
		defer p.subMu.Unlock()
		if _, ok := p.subs[s]; ok {
			delete(p.subs, s)
			close(s.ch)
		}
	}
}

// DroppedSubscribers returns how many subscribers were dropped because
// their queue was full (for a metric).
func (p *Pool) DroppedSubscribers() uint64 {
	return p.dropped.Load()
}

// eventLoop drains serf's event channel for the life of the pool, so that
// serf, which sends on it while holding its member lock, never blocks.
func (p *Pool) eventLoop() {
	defer p.wg.Done()
	for {
		select {
		case e := <-p.serfCh:
			if _, ok := e.(serf.MemberEvent); ok {
				p.markPeersDirty()
			}
			p.publish(e)
		case <-p.stop:
			// Serf is shut down: take what is left without waiting, so
			// that serf's forwarding goroutine is never left blocked on
			// a full channel (serfCh is larger than serf's own queue).
			for {
				select {
				case e := <-p.serfCh:
					p.publish(e)
				default:
					p.closeSubscribers()
					return
				}
			}
		}
	}
}

func (p *Pool) publish(se serf.Event) {
	e, ok := fromSerfEvent(se)
	if !ok {
		return
	}
	p.subMu.Lock()
	defer p.subMu.Unlock()
	for s := range p.subs {
		select {
		case s.ch <- e:
		default:
			delete(p.subs, s)
			close(s.ch)
			p.dropped.Add(1)
			p.logger.Warn("membership: subscriber dropped: event queue full", "queue", p.queueLen)
		}
	}
}

func (p *Pool) closeSubscribers() {
	p.subMu.Lock()
	defer p.subMu.Unlock()
	p.subsClosed = true
	for s := range p.subs {
		delete(p.subs, s)
		close(s.ch)
	}
}
