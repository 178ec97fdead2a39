package checks

import (
	"context"
	"fmt"
	"sync"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// AliasSource is the agent's local state as an alias check follows it.
type AliasSource interface {
	// AliasState returns the statuses of the checks of local service
	// serviceID, leaving out check self; whether that service is
	// registered; and a channel closed at the next change to the local
	// services or checks. It must not block on anything that a Runner's
	// Stop may wait for.
	AliasState(serviceID, self string) (statuses []string, exists bool, changed <-chan struct{})
}

// aliasRunner reports the health of another local service: the worst
// status of its checks, passing when it has none. It wakes on changes to
// the local state rather than polling.
type aliasRunner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func startAlias(checkID, serviceID string, src AliasSource, notify Notifier) *aliasRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &aliasRunner{cancel: cancel}
	r.wg.Go(func() {
		last := ""
		for {
			statuses, exists, changed := src.AliasState(serviceID, checkID)
			status, output := AliasStatus(serviceID, statuses, exists)
			if status+output != last {
				last = status + output
				notify.UpdateCheck(checkID, status, output)
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	})
	return r
}

func (r *aliasRunner) Stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

// AliasStatus is the status and output of an alias check of serviceID
// whose checks have statuses: critical (maintenance included) if any is,
// else warning if any is, else passing. A service that is not registered
// is critical.
func AliasStatus(serviceID string, statuses []string, exists bool) (status, output string) {
	if !exists {
		return structs.HealthCritical, fmt.Sprintf("Service %q is not registered on this agent", serviceID)
	}
	worst := structs.HealthPassing
	for _, s := range statuses {
		switch s {
		case structs.HealthPassing:
		case structs.HealthWarning:
			if worst == structs.HealthPassing {
				worst = structs.HealthWarning
			}
		default:
			worst = structs.HealthCritical
		}
	}
	switch {
	case len(statuses) == 0:
		return worst, fmt.Sprintf("Service %q has no checks: passing", serviceID)
	case worst == structs.HealthPassing:
		return worst, "All checks passing."
	}
	return worst, fmt.Sprintf("Service %q has a %s check", serviceID, worst)
}
