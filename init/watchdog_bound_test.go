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

// The watchdog is petted only while no bound has passed and the HA loop
// makes progress; a shutdown never lengthens a lost quorum's bound.
func TestWatchdogShouldPet(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	alive := func(time.Time) bool { return true }
	stuck := func(time.Time) bool { return false }
	tests := []struct {
		name    string
		until   time.Time
		healthy func(time.Time) bool
		shut    bool // a shutdown starts now
		at      time.Time
		want    bool
	}{
		{"booting, no HA loop yet", time.Time{}, nil, false, now, true},
		{"HA loop alive", time.Time{}, alive, false, now, true},
		{"HA loop stuck or dead", time.Time{}, stuck, false, now, false},
		{"quorum lost, within the stop bound", now.Add(5 * time.Second), alive, false, now, true},
		{"quorum lost, the stop bound passed", now.Add(5 * time.Second), alive, false, now.Add(6 * time.Second), false},
		{"shutdown stops the loop: its own budget rules", time.Time{}, stuck, true, now.Add(time.Minute), true},
		{"shutdown after a lost quorum keeps the earlier bound", now.Add(5 * time.Second), alive, true, now.Add(6 * time.Second), false},
	}
	for _, tc := range tests {
		w := &watchdog{until: tc.until, healthy: tc.healthy}
		if tc.shut {
			boundShutdown(w, now)
		}
		if got := w.shouldPet(tc.at); got != tc.want {
			t.Errorf("%s: pet %v, want %v", tc.name, got, tc.want)
		}
	}
}
