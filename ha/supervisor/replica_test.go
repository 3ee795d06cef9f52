package supervisor

import (
	"testing"
	"time"
)

func TestReplicaWatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const I = 500 * time.Millisecond
	type obs struct {
		at                    float64
		connected, upToDate   bool
		active, peerActive    bool
		lastHeard             float64
		wantStale, wantChange bool
	}
	tests := []struct {
		name string
		seq  []obs
	}{
		{"replication cut, the peer serves on: stale until resynced", []obs{
			{0, true, true, false, true, 0, false, false},
			{1, false, true, false, true, 1, false, false}, // DRBD lost it now
			{1.5, false, true, false, true, 1.4, false, false},
			{2, false, true, false, true, 2, true, true}, // heard 1 s after the loss
			{30, false, true, false, true, 30, true, false},
			{31, true, false, false, true, 31, true, false}, // reconnected, resyncing
			{40, true, true, false, true, 40, false, true},  // resynced
		}},
		{"power pull: silent with the connection, never stale", []obs{
			{0, true, true, false, true, 0, false, false},
			{10, false, true, false, true, 0, false, false},
			{11, false, true, false, true, 0, false, false},
		}},
		{"cut of every link: the last packet predates the loss", []obs{
			{0, true, true, false, true, 0, false, false},
			{4, false, true, false, true, 3.9, false, false},
			{6, false, true, false, true, 4.2, false, false}, // within an interval of the loss
		}},
		{"the active head itself is never stale", []obs{
			{0, false, true, true, false, 0, false, false},
			{5, false, true, true, false, 5, false, false},
		}},
		// It took over while DRBD was disconnected and wrote alone, then
		// stopped; the old active, hung in its stop, still announces
		// active. Marking this disk stale (and outdating it) would have
		// DRBD resync the old data over the new writes.
		{"active since the loss: never stale", []obs{
			{0, true, true, false, true, 0, false, false},
			{1, false, true, false, true, 1, false, false},
			{5, false, true, true, false, 4, false, false}, // took over
			{60, false, true, false, true, 60, false, false},
			{61, false, true, false, true, 61, false, false},
			{70, true, true, false, true, 70, false, false}, // reconnected: a new watch
			{71, false, true, false, true, 71, false, false},
			{72, false, true, false, true, 72, true, true},
		}},
		{"no peer serving (both restarting): not stale", []obs{
			{0, false, true, false, false, 0, false, false},
			{5, false, true, false, false, 5, false, false},
		}},
	}
	for _, tc := range tests {
		var w replicaWatch
		for i, o := range tc.seq {
			stale, changed := w.update(at(o.at), o.connected, o.upToDate, o.active, o.peerActive, at(o.lastHeard), I)
			if stale != o.wantStale || changed != o.wantChange {
				t.Errorf("%s, step %d (t=%v): stale %v changed %v, want %v %v", tc.name, i, o.at, stale, changed, o.wantStale, o.wantChange)
			}
		}
	}
}
