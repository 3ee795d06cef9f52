package pid1

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/services/drbd"
)

// Fencing with DRBD's resource-and-stonith (docs/ha.md, "Fencing"): a
// primary that loses the peer freezes its I/O in the kernel, and DRBD's
// fence-peer handler asks this supervisor (status.OpFencePeer). Writes
// may land on one disk alone only once the witness records that this
// head's data is the only current copy: the peer is then never granted
// the vote, so it cannot take over without them.

// fenceRetry spaces the loop's own attempts to outdate the peer and thaw
// I/O (the handler's attempt may have met a witness that did not answer),
// and to lift the witness's record after a resync.
const fenceRetry = 2 * time.Second

// fenceWork is the state of those attempts.
type fenceWork struct {
	busy     atomic.Bool
	next     atomic.Int64 // unix ns: no attempt before then
	frozenAt atomic.Int64 // unix ns: when the loop first saw DRBD frozen (0: not frozen)
}

// try runs fn in the background unless one runs or the last was too recent.
func (f *fenceWork) try(b *Boot, what string, now time.Time, fn func()) {
	if now.UnixNano() < f.next.Load() || !f.busy.CompareAndSwap(false, true) {
		return
	}
	f.next.Store(now.Add(fenceRetry).UnixNano())
	goSafe(b, what, func() {
		defer f.busy.Store(false)
		fn()
	})
}

// fencePeerForDRBD answers DRBD's fence-peer handler on a primary that
// lost the peer: "outdated" once the witness records this head as the
// only current one, else an error, and the I/O stays frozen.
func (b *Boot) fencePeerForDRBD(ctx context.Context) (string, error) {
	h := b.haSup()
	if h == nil {
		return "", errors.New("the HA supervisor does not run")
	}
	return h.outdatePeer(ctx, "DRBD lost "+h.peer+" while this head is primary")
}

// outdatePeer makes sure the peer can no longer serve without this head's
// writes, and returns the verdict word for DRBD's handler.
func (h *haSup) outdatePeer(ctx context.Context, why string) (string, error) {
	switch {
	case h.wc != nil:
		if !h.wc.Held() {
			return "", errors.New("this head does not hold the witness vote: its I/O stays frozen")
		}
		if err := h.wc.OutdatePeer(ctx); err != nil {
			h.log.Error("HA: cannot record "+h.peer+" as outdated at the witness: I/O stays frozen", "why", why, "err", err)
			return "", err
		}
		h.log.Warn("HA: " + why + ": the witness now records this head's data as the only current copy; " +
			h.peer + " is not granted the vote until it has resynced")
		return "outdated", nil
	case h.ping != nil && h.ping.held():
		// A ping target cannot record anything: both heads may reach it
		// (docs/ha.md, "Ping target").
		h.log.Warn("HA: " + why + ": the ping target answers; writing on alone (a ping target cannot outdate " + h.peer + ")")
		return "down", nil
	}
	return "", errors.New("no tiebreaker vote held: I/O stays frozen")
}

// watchFencing is the loop's part: thaw a primary that fencing froze
// while this head holds the vote (the handler's own attempt failed), and
// lift the witness's record once DRBD has resynced the peer.
func (h *haSup) watchFencing(ctx context.Context, now time.Time, in stateForFencing) {
	b := h.b
	if !in.frozen {
		h.fencing.frozenAt.Store(0)
	} else if h.fencing.frozenAt.CompareAndSwap(0, now.UnixNano()) {
		return // DRBD's handler is likely at it: give it time
	}
	switch {
	case in.active && in.frozen && in.vote && now.Sub(time.Unix(0, h.fencing.frozenAt.Load())) >= fenceRetry:
		h.fencing.try(b, "HA thaw", now, func() {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := h.outdatePeer(actx, "DRBD froze this primary's I/O"); err != nil {
				return
			}
			if err := in.drbd.ResumeIO(actx); err != nil {
				h.log.Error("HA: cannot resume DRBD's frozen I/O", "err", err)
			}
		})
	case h.wc != nil && in.synced && h.wc.Vote().Writer:
		h.fencing.try(b, "HA unfence", now, func() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := h.wc.ClearWriter(cctx); err != nil {
				h.log.Warn("HA: cannot lift the witness's record of "+h.peer+" as outdated; retrying", "err", err)
				return
			}
			h.log.Info("HA: " + h.peer + " has resynced: the witness no longer records it as outdated")
		})
	}
}

// frozenByFencing: DRBD holds this head's I/O (fencing froze it).
func frozenByFencing(st drbd.State) bool { return st.Suspended != "" && st.Suspended != "no" }

// stateForFencing is what watchFencing needs from one observation.
type stateForFencing struct {
	active, frozen, vote, synced bool
	drbd                         *drbd.Resource
}

func fencingState(in ha.Role, vote bool, st drbd.State, r *drbd.Resource) stateForFencing {
	return stateForFencing{
		active: in == ha.Active,
		frozen: frozenByFencing(st),
		vote:   vote,
		synced: st.Connection == "Connected" && st.Disk == "UpToDate" && st.PeerDisk == "UpToDate",
		drbd:   r,
	}
}
