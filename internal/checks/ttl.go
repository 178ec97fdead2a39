package checks

import (
	"context"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// ttlRunner expects SetStatus at least once per ttl and reports the check
// critical, once, when a ttl passes without one.
type ttlRunner struct {
	checkID string
	ttl     time.Duration
	notify  Notifier

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	kick   chan struct{} // capacity 1; SetStatus moved the deadline

	// mu serialises notifications, so an expiry can never be reported after
	// (and so on top of) a SetStatus that beat it.
	mu         sync.Mutex
	deadline   time.Time // guarded by mu
	expired    bool      // guarded by mu; expiry reported since last SetStatus
	lastOutput string    // guarded by mu
	stopped    bool      // guarded by mu
}

func startTTL(checkID string, ttl time.Duration, notify Notifier) *ttlRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &ttlRunner{
		checkID:  checkID,
		ttl:      ttl,
		notify:   notify,
		cancel:   cancel,
		kick:     make(chan struct{}, 1),
		deadline: time.Now().Add(ttl),
	}
	r.wg.Go(func() { r.run(ctx) })
	return r
}

func (r *ttlRunner) run(ctx context.Context) {
	t := time.NewTimer(r.ttl)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return
		}
		if wait := time.Until(r.deadline); wait > 0 {
			t.Reset(wait)
		} else if !r.expired {
			r.expired = true
			r.notify.UpdateCheck(r.checkID, structs.HealthCritical, r.expiredOutputLocked())
		}
		r.mu.Unlock()
	}
}

// expiredOutputLocked keeps the last reported output visible, since it often
// says why the reporter went quiet.
func (r *ttlRunner) expiredOutputLocked() string {
	if r.lastOutput == "" {
		return "TTL expired"
	}
	return "TTL expired (last output before timeout follows): " + r.lastOutput
}

func (r *ttlRunner) SetStatus(status, output string) {
	output = truncateHead(output)
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.deadline = time.Now().Add(r.ttl)
	r.expired = false
	r.lastOutput = output
	r.notify.UpdateCheck(r.checkID, status, output)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default: // a kick is already pending; it will read the new deadline
	}
}

func (r *ttlRunner) Stop() {
	r.once.Do(func() {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		r.cancel()
		r.wg.Wait()
	})
}
