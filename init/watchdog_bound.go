package pid1

import "time"

// The HA supervisor bounds the petting when an active head loses quorum:
// the stack must be down by the stop bound, or the board resets. A
// shutdown bounds it too (events.go); the earlier bound wins, and the HA
// supervisor lifts only its own.

// BoundBy makes sure the petting stops by t, keeping an earlier bound.
func (w *watchdog) BoundBy(t time.Time) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.until.IsZero() || t.Before(w.until) {
		w.until = t
	}
}

// Lift removes the bound t if it is still the one in force (a shutdown
// may have set its own since).
func (w *watchdog) Lift(t time.Time) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.until.Equal(t) {
		w.until = time.Time{}
	}
}

// bound returns the bound in force (zero: none).
func (w *watchdog) bound() time.Time {
	if w == nil {
		return time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.until
}
