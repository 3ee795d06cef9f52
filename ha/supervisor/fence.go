package supervisor

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/services/drbd"
)

// Fencing with DRBD's resource-and-stonith (docs/ha.md, "Fencing"): a
// primary that loses the peer freezes its I/O in the kernel, and DRBD's
// fence-peer handler asks this supervisor (status.OpFencePeer). Writes
// may land on one disk alone only once the peer cannot serve without
// them: either the peer, still heard over another path, has marked its
// own disk Outdated in DRBD's metadata (it does so when it hears the
// active head after DRBD lost it), or the witness records this head's
// data as the only current copy, and never grants the peer the vote.

// fenceRetry spaces the loop's own attempts to outdate the peer and thaw
// I/O (the handler's attempt may have met a witness that did not answer),
// and to lift the witness's record after a resync.
const fenceRetry = 2 * time.Second

// fenceWork is the state of those attempts.
type fenceWork struct {
	busy     atomic.Bool
	next     atomic.Int64 // unix ns: no attempt before then
	frozenAt atomic.Int64 // unix ns: when the loop first saw DRBD frozen (0: not frozen)
	// The thaw's two steps have a budget each: a slow witness exchange
	// must not leave drbdadm resume-io no time, or every retry fails the
	// same way and the primary stays frozen (issue 14, R3).
	outdateBudget, resumeBudget time.Duration
}

// Thaw budgets: one witness exchange with its retries, and one drbdadm
// call on a loaded head.
const (
	outdateBudget = 5 * time.Second
	resumeBudget  = 10 * time.Second
)

// try runs fn in the background unless one runs or the last was too recent.
func (f *fenceWork) try(s *Supervisor, what string, now time.Time, fn func()) {
	if now.UnixNano() < f.next.Load() || !f.busy.CompareAndSwap(false, true) {
		return
	}
	f.next.Store(now.Add(fenceRetry).UnixNano())
	s.goSafe(what, func() {
		defer f.busy.Store(false)
		fn()
	})
}

// FencePeerForDRBD answers DRBD's fence-peer handler on a primary that
// lost the peer: "outdated" once the witness records this head as the
// only current one, else an error, and the I/O stays frozen.
func (s *Supervisor) FencePeerForDRBD(ctx context.Context) (string, error) {
	return s.outdatePeer(ctx, "DRBD lost "+s.peer+" while this head is primary", s.clock.Now())
}

// outdatePeer makes sure the peer can no longer serve without this head's
// writes, and returns the verdict word for DRBD's handler. lost is when
// this head's DRBD lost the peer, or later: the peer's mark counts only
// if the peer announced it after that.
func (s *Supervisor) outdatePeer(ctx context.Context, why string, lost time.Time) (string, error) {
	switch {
	case s.peerMarkedSince(ctx, lost):
		s.log.Warn(why + ": " + s.peer + " has marked its own disk Outdated in DRBD's metadata " +
			"(it hears this head over another path): it cannot serve before it has resynced; writing on alone")
		return "outdated", nil
	case s.wc != nil:
		if !s.wc.Held() {
			return "", errors.New("this head does not hold the witness vote: its I/O stays frozen")
		}
		at := s.clock.Now() // before asking: a stale view read meanwhile predates it
		s.mu.Lock()
		s.recordedAt = at
		s.mu.Unlock()
		if err := s.wc.OutdatePeer(ctx); err != nil {
			s.log.Error("cannot record "+s.peer+" as outdated at the witness: I/O stays frozen", "why", why, "err", err)
			return "", err
		}
		s.mu.Lock()
		s.recordedOK = at
		s.mu.Unlock()
		s.log.Warn(why + ": the witness now records this head's data as the only current copy; " +
			s.peer + " is not granted the vote until it has resynced")
		return "outdated", nil
	case s.ping != nil && s.ping.held():
		// A ping target cannot record anything: both heads may reach it
		// (docs/ha.md, "Ping target").
		s.log.Warn(why + ": the ping target answers; writing on alone (a ping target cannot outdate " + s.peer + ")")
		return "down", nil
	}
	return "", errors.New("no tiebreaker vote held: I/O stays frozen")
}

// watchFencing is the loop's part: thaw a primary that fencing froze
// once the peer is outdated or this head holds the vote (the handler's
// own attempt failed); on a standby whose disk may lack the active
// peer's writes, mark it Outdated in DRBD's metadata, which lets that
// peer thaw without the witness; and lift the witness's record once
// DRBD has resynced the peer.
func (s *Supervisor) watchFencing(ctx context.Context, now time.Time, in stateForFencing) {
	if !in.frozen {
		s.fencing.frozenAt.Store(0)
	} else if s.fencing.frozenAt.CompareAndSwap(0, now.UnixNano()) {
		return // DRBD's handler is likely at it: give it time
	}
	switch {
	case in.active && in.frozen && (in.vote || in.peerOutdated) && now.Sub(time.Unix(0, s.fencing.frozenAt.Load())) >= fenceRetry:
		s.fencing.try(s, "HA thaw", now, func() { s.thaw(ctx) })
	case !in.active && in.stale && in.secondary && in.upToDate && !in.connected:
		s.fencing.try(s, "HA outdate self", now, func() {
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := s.cfg.DRBD.Outdate(octx); err != nil {
				s.log.Error("cannot mark this head's disk Outdated; "+s.peer+" stays frozen unless the witness answers it", "err", err)
				return
			}
			s.log.Warn("DRBD lost " + s.peer + " while it went on serving: this head's disk is now marked Outdated in DRBD's metadata, " +
				"so " + s.peer + " may write on alone; this head does not take over until it has resynced")
		})
	case s.wc != nil && in.synced && s.wc.Vote().Writer:
		s.fencing.try(s, "HA unfence", now, func() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := s.wc.ClearWriter(cctx); err != nil {
				s.log.Warn("cannot lift the witness's record of "+s.peer+" as outdated; retrying", "err", err)
				return
			}
			s.log.Info(s.peer + " has resynced: the witness no longer records it as outdated")
		})
	}
}

// thaw resumes a primary's I/O that fencing froze, once the peer is
// outdated. Each step has its own budget; a record the witness already
// made since the freeze is not asked for again, so a retry after a
// failed resume goes straight to it.
func (s *Supervisor) thaw(ctx context.Context) {
	frozenAt := time.Unix(0, s.fencing.frozenAt.Load())
	if !s.recordedSince(frozenAt) {
		octx, cancel := context.WithTimeout(ctx, s.fencing.outdateBudget)
		_, err := s.outdatePeer(octx, "DRBD froze this primary's I/O", frozenAt)
		cancel()
		if err != nil {
			return
		}
	}
	if !s.cfg.DRBD.State().FrozenByFencing() {
		return // DRBD's handler got its answer meanwhile
	}
	rctx, cancel := context.WithTimeout(ctx, s.fencing.resumeBudget)
	defer cancel()
	t0 := time.Now()
	if err := s.cfg.DRBD.ResumeIO(rctx); err != nil {
		s.log.Error("cannot resume DRBD's frozen I/O; retrying", "err", err, "took", time.Since(t0).Round(time.Millisecond))
	}
}

// recordedSince: the witness records this head as the only current copy
// on a request made after t.
func (s *Supervisor) recordedSince(t time.Time) bool {
	if s.wc == nil || !s.wc.Vote().Writer {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.recordedOK.IsZero() && !s.recordedOK.Before(t)
}

// peerOutdated: the peer, seen now, announces that DRBD's metadata marks
// its disk Outdated.
func peerOutdated(s heartbeat.Snapshot) bool {
	return s.Seen && s.Peer != nil && s.Peer.State.Outdated
}

// markFresh bounds how long outdatePeer waits for the peer's mark to be
// announced after the loss: one or two heartbeat rounds.
const markFresh = 2 * time.Second

// peerMarkedSince reports whether the peer announces its disk marked
// Outdated in a heartbeat it sent after lost. A mark announced before
// could predate a resync that cleared it; the heartbeat's echo orders
// the two with no clock and no delay bound (heartbeat.PeerStatus.HeardUs).
// It waits up to markFresh for such a heartbeat, and not at all when the
// peer announces no mark.
func (s *Supervisor) peerMarkedSince(ctx context.Context, lost time.Time) bool {
	if s.hb == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, markFresh)
	defer cancel()
	for {
		snap := s.hb.Snapshot()
		if !peerOutdated(snap) {
			return false
		}
		if snap.Peer.HeardUs.After(lost) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stateForFencing is what watchFencing needs from one observation.
type stateForFencing struct {
	active, frozen, vote bool
	// synced: DRBD resynced the peer in a connection made after this
	// head last recorded itself as the writer (Step narrows it).
	synced bool
	// The standby's side: its disk may lack the active peer's writes
	// (replicaWatch), and DRBD's view of it.
	stale, secondary, upToDate, connected bool
	peerOutdated                          bool
}

func fencingState(in ha.Role, vote bool, st drbd.State) stateForFencing {
	connected := st.Connection == drbd.Connected
	return stateForFencing{
		active:    in == ha.Active,
		frozen:    st.FrozenByFencing(),
		vote:      vote,
		synced:    connected && st.Disk == drbd.UpToDate && st.PeerDisk == drbd.UpToDate,
		secondary: st.Role == drbd.Secondary,
		upToDate:  st.Disk == drbd.UpToDate,
		connected: connected,
	}
}
