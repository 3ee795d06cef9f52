package pid1

import (
	"testing"
	"time"
)

// The HA supervisor's stop bound and a shutdown's share the watchdog:
// the earlier wins, and each lifts only its own.
func TestWatchdogBounds(t *testing.T) {
	w := &watchdog{}
	now := time.Now()
	ha, shut := now.Add(20*time.Second), now.Add(90*time.Second)
	w.BoundBy(ha)
	w.BoundBy(shut) // later: the HA bound stays
	if !w.bound().Equal(ha) {
		t.Fatalf("bound %v, want the HA bound %v", w.bound(), ha)
	}
	w.Lift(ha)
	if !w.bound().IsZero() {
		t.Fatalf("bound %v after lifting it", w.bound())
	}
	w.BoundBy(shut)
	w.Lift(ha) // not ours any more: the shutdown's stays
	if !w.bound().Equal(shut) {
		t.Errorf("lifting a stale bound removed the shutdown's: %v", w.bound())
	}
	var none *watchdog // a board without a watchdog
	none.BoundBy(now)
	none.Lift(now)
}
