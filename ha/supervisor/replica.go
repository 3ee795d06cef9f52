package supervisor

import "time"

// replicaWatch notices when this head's copy of the data may lack
// acknowledged writes: its DRBD lost the connection while the peer went
// on serving. DRBD's resource-only fencing lets a disconnected primary
// write alone, and nothing outdates this disk then; were the peer to die
// afterwards, this head would take over with stale data. So from the
// moment the peer is heard after DRBD lost it, until DRBD is Connected
// again and this disk UpToDate (resynced), the disk counts as Outdated.
//
// A power pull or a cut of every link is not this: the peer falls
// silent with the connection, and nothing is heard from it after DRBD
// loses it.
//
// A head that was active at any time since DRBD lost the peer is never
// stale: it may have written alone, and the stale mark leads to
// `drbdadm outdate`, after which DRBD would resync the peer's older data
// over those writes.
type replicaWatch struct {
	lostAt     time.Time // when DRBD was first seen not Connected
	staleSince time.Time
	wasActive  bool // active at some time since lostAt
}

// update takes one observation and says whether the copy may be stale,
// and whether that just changed. interval is the heartbeat interval: a
// packet heard later than that after the loss left the peer after it.
func (w *replicaWatch) update(now time.Time, connected, upToDate, active, peerActive bool, lastHeard time.Time, interval time.Duration) (stale, changed bool) {
	was := !w.staleSince.IsZero()
	switch {
	case connected:
		w.lostAt, w.wasActive = time.Time{}, false
		if upToDate {
			w.staleSince = time.Time{}
		}
	case w.lostAt.IsZero():
		w.lostAt, w.wasActive = now, active
	case active:
		w.wasActive = true
	case peerActive && !was && !w.wasActive && lastHeard.After(w.lostAt.Add(interval)):
		w.staleSince = now
	}
	stale = !w.staleSince.IsZero()
	return stale, stale != was
}
