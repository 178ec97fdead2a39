package checks

import (
	"log/slog"
	"sync"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// statusHandler applies a check's consecutive-result thresholds before
// passing results on. A passing result is reported only once it is the
// successBeforePassing-th pass in a row; a failing (warning or critical)
// result is reported as-is once it is the failuresBeforeCritical-th failure in
// a row, and as warning once it is the failuresBeforeWarning-th. A result of
// the opposite kind resets the count. Suppressed results leave the previously
// reported status in place.
type statusHandler struct {
	inner  Notifier
	logger *slog.Logger

	successBeforePassing   int
	failuresBeforeWarning  int
	failuresBeforeCritical int

	mu        sync.Mutex
	successes int // guarded by mu; consecutive passing results
	failures  int // guarded by mu; consecutive failing results
}

func newStatusHandler(inner Notifier, logger *slog.Logger, successBeforePassing, failuresBeforeWarning, failuresBeforeCritical int) *statusHandler {
	successBeforePassing = max(successBeforePassing, 0)
	failuresBeforeCritical = max(failuresBeforeCritical, 0)
	if failuresBeforeWarning <= 0 {
		// Unset means "same as critical": a check that tolerates N failures
		// before going critical should not go to warning on the first one.
		failuresBeforeWarning = failuresBeforeCritical
	}
	return &statusHandler{
		inner:                  inner,
		logger:                 logger,
		successBeforePassing:   successBeforePassing,
		failuresBeforeWarning:  failuresBeforeWarning,
		failuresBeforeCritical: failuresBeforeCritical,
	}
}

func (h *statusHandler) UpdateCheck(checkID, status, output string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if status == structs.HealthPassing {
		h.successes++
		h.failures = 0
		if h.successes >= h.successBeforePassing {
			h.inner.UpdateCheck(checkID, status, output)
			return
		}
		h.logger.Debug("check passed; holding status until threshold", "successes", h.successes, "success_before_passing", h.successBeforePassing)
		return
	}
	h.failures++
	h.successes = 0
	switch {
	case h.failures >= h.failuresBeforeCritical:
		h.inner.UpdateCheck(checkID, status, output)
	case h.failures >= h.failuresBeforeWarning:
		h.inner.UpdateCheck(checkID, structs.HealthWarning, output)
	default:
		h.logger.Debug("check failed; holding status until threshold", "status", status, "failures", h.failures, "failures_before_critical", h.failuresBeforeCritical)
	}
}
