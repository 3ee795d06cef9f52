package pid1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/decide"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/status"
)

// The HA supervisor (docs/ha.md). Every heartbeat interval it gathers
// what this head observes (heartbeat, witness or ping target, DRBD, the
// service supervisor's escalations, the operator's switchover) into
// ha/decide's inputs, steps the decision machine, announces the outcome
// in its heartbeats, asks for or gives back the vote, and carries out
// promote, fence-then-promote, demote and self-fence. Role changes run
// in the background so that the loop keeps announcing, renewing the vote
// and guarding the stop bound while a stack starts or stops.

// epochFile keeps this head's epoch across boots (the state partition).
const epochFile = "/var/lib/tandem/ha/epoch"

// Limits of the loop's own role changes.
const (
	// retryAfter: after a failed promote or demote the loop waits this
	// long before it tries again (a start rolls back; DRBD may refuse).
	retryAfter = 10 * time.Second
	// handoverFor bounds a switchover's "hand over" flag on the head
	// giving the service away, should the peer never become active.
	handoverFor = acquireBudget + releaseBudget
	// keepFailovers is how many role changes status keeps.
	keepFailovers = 8
)

// haSup is one boot's HA supervisor.
type haSup struct {
	b      *Boot
	log    *slog.Logger
	params decide.Params
	m      *decide.Machine // the loop's goroutine only
	hb     *heartbeat.Endpoint
	wc     *witness.Client // nil with a ping target, or if it could not be set up
	ping   *pinger         // ping target mode
	peer   string
	tbAddr string // the witness or ping target address
	kick   chan struct{}
	epochs string // epochFile, replaced in tests
	modes  string // modeFile, replaced in tests

	wantVote atomic.Bool
	voteKick chan struct{}
	fencing  fenceWork
	outdated atomic.Bool // the witness's last answer: the peer's data is the only current copy

	mu          sync.Mutex
	epoch       uint64
	peerEpoch   uint64 // the peer's, as last announced
	mode        operatorMode
	replica     replicaWatch
	handover    time.Time // a switchover hands the service over until then
	manual      int       // operator role changes under way (switchover)
	acting      string    // the loop's role change under way: promote or demote
	retryAt     time.Time
	escalatedAt map[string]time.Time
	inputs      decide.Inputs
	last        decide.Decision
	lastKey     string
	lastSince   time.Time
	alert       string
	drbdState   drbd.State
	stale       bool      // replicaWatch: this disk may lack the active peer's writes
	holdSince   time.Time // holding back for the preferred peer since
	armed       time.Time // the watchdog bound this loop set
	peerLostAt  time.Time // when the loop first found the peer silent
	voteAt      time.Time // when the vote was last found held after not being held
	voteErr     string
	failovers   []status.Failover
}

func (b *Boot) haSup() *haSup {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ha
}

// haParams derives the decision timing from the site config.
func haParams(sc siteHA) decide.Params {
	p := decide.Params{
		Interval:        time.Duration(sc.intervalMS) * time.Millisecond,
		DeadTime:        time.Duration(sc.deadMS) * time.Millisecond,
		StopBound:       time.Duration(sc.stopBoundMS) * time.Millisecond,
		WatchdogTimeout: sc.watchdog,
		Tiebreaker:      decide.Witness,
	}
	if sc.pingTarget != "" {
		p.Tiebreaker = decide.PingTarget
	}
	return p.WithDefaults()
}

// siteHA is what the HA loop reads from the site config.
type siteHA struct {
	intervalMS, deadMS, stopBoundMS int
	pingTarget                      string
	watchdog                        time.Duration
}

// startHA opens the heartbeat, the witness client or ping target, and
// runs the loop until ctx ends. It fails only on what would leave the
// head unable to take part in the pair (no heartbeat path, no key).
func (b *Boot) startHA(ctx context.Context) error {
	sc := b.Site
	peer := sc.Peer(b.Node)
	if peer == nil {
		return errors.New("HA: the site config names no peer")
	}
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	wdTimeout := time.Duration(sc.HA.WatchdogTimeoutSeconds) * time.Second
	if wd == nil {
		b.Log.Warn("HA: no hardware watchdog: a hung PID 1 cannot be reset; a stop that overruns its bound still restarts the kernel")
	} else {
		wdTimeout = wd.setTimeout(wdTimeout, b.Log)
	}
	p := haParams(siteHA{sc.HA.HeartbeatIntervalMS, sc.HA.DeadTimeMS, sc.HA.StopBoundMS, sc.Witness.PingTarget, wdTimeout})
	m, err := decide.NewMachine(p)
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	key, err := pairKey(sc)
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	paths, err := heartbeat.PathsFromSite(sc, b.Node)
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	hb, err := heartbeat.Open(heartbeat.Config{Pair: sc.Pair.Name, Node: b.Node, Peer: peer.Name, Key: key,
		Paths: paths, Interval: p.Interval, DeadTime: p.DeadTime, Log: b.Log})
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	h := &haSup{b: b, log: b.Log, params: p, m: m, hb: hb, peer: peer.Name, kick: make(chan struct{}, 1),
		voteKick: make(chan struct{}, 1), epochs: epochFile, modes: modeFile, escalatedAt: map[string]time.Time{}}
	h.loadMode()
	h.epoch, err = readEpoch(h.epochs)
	if err != nil {
		// A lost epoch only makes this head yield in a tie: the safe side.
		b.Log.Warn("HA: cannot read the epoch; counting from 0", "err", err)
	}
	switch {
	case sc.Witness.Address != "":
		h.tbAddr = sc.Witness.Address
		wc, err := witness.NewClient(witness.ClientConfig{Pair: sc.Pair.Name, Node: b.Node, Key: key, Addr: sc.Witness.Address, Log: b.Log})
		if err != nil {
			// Without the witness this head never takes over from a
			// silent peer: safe, and loud.
			b.Log.Error("HA: no witness client; this head will not take over from a silent peer", "err", err)
		}
		h.wc = wc
	default:
		h.tbAddr = sc.Witness.PingTarget
		pg, err := newPinger(sc.Witness.PingTarget, p.Interval, p.DeadTime, b.Log)
		if err != nil {
			return fmt.Errorf("HA: %w", err)
		}
		h.ping = pg
	}
	b.mu.Lock()
	b.ha = h
	b.mu.Unlock()
	b.Log.Info("HA: running", "peer", peer.Name, "paths", len(paths), "interval", p.Interval, "dead_time", p.DeadTime,
		"stop_bound", p.StopBound, "watchdog", p.WatchdogTimeout, "takeover_delay", p.TakeoverDelay(), "address_delay", p.AddressDelay(),
		"tiebreaker", h.tiebreaker()+" "+h.tbAddr, "epoch", h.epoch)
	// Decide once before the first heartbeat goes out: until then the
	// endpoint announces "none", which a peer reads as yielding, and a
	// peer that is not preferred would start the service.
	h.step(ctx, time.Now())
	goSafe(b, "heartbeat", func() { hb.Run(ctx) })
	if h.ping != nil {
		goSafe(b, "ping target", func() { h.ping.run(ctx) })
	}
	goSafe(b, "HA vote", func() { h.voter(ctx) })
	goSafe(b, "HA loop", func() { h.loop(ctx) })
	return nil
}

// goSafe runs fn in a goroutine; a panic is logged, never PID 1's end.
func goSafe(b *Boot, what string, fn func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.Log.Error(what+" panic", "panic", fmt.Sprint(r))
			}
		}()
		fn()
	}()
}

func (h *haSup) tiebreaker() string {
	if h.params.Tiebreaker == decide.PingTarget {
		return "ping target"
	}
	return "witness"
}

// poke makes the loop decide again now.
func (h *haSup) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *haSup) loop(ctx context.Context) {
	t := time.NewTicker(h.params.Interval)
	defer t.Stop()
	silent := time.NewTimer(time.Hour)
	defer silent.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.kick:
		case <-silent.C:
		}
		h.step(ctx, time.Now())
		silent.Reset(untilSilent(h.hb.Snapshot()))
	}
}

// untilSilent is how long until the peer has been silent (or deaf to
// us) for a whole dead time, if no packet comes meanwhile: the loop
// decides again then, not up to an interval later.
func untilSilent(s heartbeat.Snapshot) time.Duration {
	next := time.Hour
	if s.Peer == nil {
		return next
	}
	for _, at := range []time.Time{s.Peer.LastHeard, s.Peer.HeardUs} {
		if d := at.Add(time.Duration(s.DeadTime)).Sub(s.At); d >= 0 && d < next {
			next = d + time.Millisecond
		}
	}
	return next
}

// step is one round: observe, decide, announce, act.
func (h *haSup) step(ctx context.Context, now time.Time) {
	snap := h.hb.Snapshot()
	in := h.observe(now, snap)
	d := h.m.Step(now, in)
	h.mu.Lock()
	st, stale := h.drbdState, h.stale
	h.mu.Unlock()
	h.hb.SetState(heartbeat.State{Role: d.Announce, Disk: in.Disk, HoldsVote: in.Vote, Epoch: in.Epoch, Outdated: st.Disk == "Outdated"})
	if h.wantVote.Swap(d.Vote) != d.Vote {
		select {
		case h.voteKick <- struct{}{}:
		default:
		}
	}
	h.record(now, in, d)
	h.guard(now, in, d)
	h.act(ctx, now, in, d, snap)
	h.b.mu.Lock()
	stk := h.b.stack
	h.b.mu.Unlock()
	if stk != nil && stk.drbd != nil {
		f := fencingState(in.Local, in.Vote, st, stk.drbd)
		f.stale = stale
		f.peerOutdated = peerOutdated(snap)
		h.watchFencing(ctx, now, f)
	}
	if h.wc != nil {
		if o := h.wc.Vote().Outdated; h.outdated.Swap(o) != o {
			if o {
				h.log.Warn("HA: the witness records " + h.peer + "'s data as the only current copy (it wrote while DRBD was disconnected): " +
					"this head is not granted the vote, and does not take over, until " + h.peer + " has resynced it")
			} else {
				h.log.Info("HA: the witness no longer records this head's data as outdated")
			}
		}
	}
}

// observe gathers the decision's inputs.
func (h *haSup) observe(now time.Time, snap heartbeat.Snapshot) decide.Inputs {
	b := h.b
	b.mu.Lock()
	sup, stk := b.sup, b.stack
	b.mu.Unlock()
	var st drbd.State
	var fenced bool
	if stk != nil && stk.drbd != nil {
		st = stk.drbd.State()
		cfg := stk.drbd.Config()
		_, fenced = drbd.PeerFenced(cfg.StateDir, cfg.Resource)
	}
	vote := h.voteHeld()

	h.mu.Lock()
	defer h.mu.Unlock()
	in := decide.Inputs{
		Local:      ha.Standby,
		Disk:       diskState(st.Disk),
		PeerSeen:   snap.Seen,
		PeerAlive:  snap.Alive,
		PeerFenced: fenced,
		Vote:       vote,
	}
	if h.mode.Standby {
		in.Mode = decide.NodeStandby
	}
	if h.mode.Maintenance || sup != nil && sup.InMaintenance() {
		in.Mode = decide.Maintenance
	}
	if b.role() == roleActive || h.acting != "" {
		in.Local = ha.Active // starting or stopping counts as active
	}
	if b.stopping.Load() && in.Local != ha.Active {
		in.Mode = decide.NodeStandby // going down: never take the service now
	}
	if snap.Peer != nil {
		ps := snap.Peer.State
		in.PeerRole, in.PeerDisk, in.PeerHoldsVote, in.PeerEpoch = ps.Role, ps.Disk, ps.HoldsVote, ps.Epoch
		if snap.Seen {
			h.peerEpoch = ps.Epoch
		}
	}
	if st.Connection == "Connected" {
		// DRBD's own view of the peer changes in step with ours; the
		// heartbeat's lags by up to an interval, long enough for two
		// heads that just connected to each see the other as not yet
		// UpToDate, and both start the service.
		in.PeerDisk = diskState(st.PeerDisk)
		switch {
		case st.PeerRole == "Primary":
			in.PeerRole = ha.Active // it holds the data device
		case st.Role == "Primary" && in.PeerRole == ha.Active:
			// It announces active but cannot be Primary beside us: it is
			// starting, and DRBD will refuse it. Not a second active
			// head to step down for.
			in.PeerRole = ha.None
		}
	}
	h.drbdState = st
	var lastHeard time.Time
	if snap.Peer != nil {
		lastHeard = snap.Peer.LastHeard
	}
	stale, changed := h.replica.update(now, st.Connection == "Connected", st.Disk == "UpToDate", in.Local == ha.Active,
		in.PeerRole == ha.Active, lastHeard, h.params.Interval)
	switch {
	case changed && stale:
		h.log.Warn("HA: DRBD lost " + h.peer + " while it went on serving: this head's data may lack its writes; " +
			"it counts as Outdated, and this head does not take over, until DRBD has reconnected and resynced")
	case changed:
		h.log.Info("HA: DRBD reconnected and resynced: this head's data is current again")
	}
	h.stale = stale
	if stale && in.Local != ha.Active && in.Disk == ha.UpToDate {
		in.Disk = ha.Outdated
	}
	if !h.handover.IsZero() && (now.After(h.handover) || snap.Seen && in.PeerRole == ha.Active) {
		h.handover = time.Time{} // the peer has the service (or never took it)
	}
	in.Switchover = !h.handover.IsZero()
	in.Escalated = len(h.escalatedLocked(now, sup, in.Local == ha.Active)) > 0
	// With the disks in sync both heads hold the same data: take the
	// peer's generation, so that neither is preferred for stale reasons.
	if snap.Seen && h.peerEpoch > h.epoch && st.Connection == "Connected" && st.Disk == "UpToDate" && st.PeerDisk == "UpToDate" {
		h.setEpochLocked(h.peerEpoch, "in sync with the peer")
	}
	in.Epoch = h.epoch
	in.Preferred = decide.Prefer(b.Node, h.peer, h.epoch, h.peerEpoch)

	// For the takeover timeline: when the peer fell silent, when the
	// vote came.
	switch {
	case snap.Alive:
		h.peerLostAt = time.Time{}
	case h.peerLostAt.IsZero():
		h.peerLostAt = now
	}
	if !vote {
		h.voteAt = time.Time{}
	} else if h.voteAt.IsZero() {
		h.voteAt = now
	}
	h.inputs = in
	return in
}

// diskState maps DRBD's disk state; unknown or not yet reported is
// DUnknown.
func diskState[T ~string](s T) ha.DiskState {
	if d := ha.DiskState(s); d.Known() {
		return d
	}
	return ha.DUnknown
}

func (h *haSup) voteHeld() bool {
	switch {
	case h.ping != nil:
		return h.ping.held()
	case h.wc != nil:
		return h.wc.Held()
	}
	return false
}

// escalatedLocked names the layers whose escalation keeps this head from
// serving: a layer both heads run (the head cannot serve at all), an
// active layer while this head is active, and, after failing over for
// one, that layer for the failure timeout (Pacemaker's ban), so the
// head does not take the service straight back.
func (h *haSup) escalatedLocked(now time.Time, sup *supervise.Supervisor, active bool) []string {
	if sup == nil {
		return nil
	}
	ban := time.Duration(h.b.Site.HA.FailureTimeoutSeconds) * time.Second // 0: for good
	var out []string
	for _, r := range sup.Status() {
		if !r.Escalated {
			continue
		}
		at, ok := h.escalatedAt[r.Name]
		banned := ok && (ban == 0 || now.Sub(at) < ban)
		if r.Role == graph.Both || active || banned {
			out = append(out, r.Name)
		}
	}
	return out
}

// record keeps the decision for status and logs it when it changes
// (reasons that only count down are the same decision).
func (h *haSup) record(now time.Time, in decide.Inputs, d decide.Decision) {
	key := d.Action.String() + ": " + countdown.ReplaceAllString(d.Reason, "…")
	h.mu.Lock()
	h.last = d
	changed := key != h.lastKey
	if changed {
		h.lastKey, h.lastSince = key, now
	}
	if d.Action == decide.Alert {
		h.alert = d.Reason
	} else {
		h.alert = ""
	}
	h.mu.Unlock()
	if !changed {
		return
	}
	level := slog.LevelInfo
	switch d.Action {
	case decide.Alert:
		level = slog.LevelWarn
	case decide.SelfFence:
		level = slog.LevelError
	}
	h.log.Log(context.Background(), level, "HA: "+d.Action.String()+": "+d.Reason,
		"announce", string(d.Announce), "vote", d.Vote, "peer_seen", in.PeerSeen, "peer_alive", in.PeerAlive,
		"held", in.Vote, "disk", string(in.Disk), "epoch", in.Epoch)
}

// countdown matches the durations in a reason ("waiting 12.5s more").
var countdown = regexp.MustCompile(`([0-9][0-9.]*(ns|µs|ms|s|m|h)?)+`)

// guard arms the watchdog while this head is active without quorum: the
// stack must be down by the stop bound, or the board resets, even if
// this loop hangs too.
func (h *haSup) guard(now time.Time, in decide.Inputs, d decide.Decision) {
	lost := in.Local == ha.Active && !in.PeerSeen && !in.Vote
	h.mu.Lock()
	armed := h.armed
	h.mu.Unlock()
	b := h.b
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	switch {
	case lost && armed.IsZero():
		bound := now.Add(max(d.After, 0))
		wd.boundBy(bound)
		h.mu.Lock()
		h.armed = bound
		h.mu.Unlock()
		h.log.Warn("HA: quorum lost while active: the stack must be down within " + max(d.After, 0).Round(time.Millisecond).String() +
			", or the watchdog resets this head")
	case !lost && !armed.IsZero():
		wd.lift(armed)
		h.mu.Lock()
		h.armed = time.Time{}
		h.mu.Unlock()
		h.log.Info("HA: stop bound lifted")
	}
}

// act carries out the decision. Promote and demote run in the
// background, one at a time, never during a shutdown or an operator's
// switchover (a demote for lost quorum excepted: safety first).
func (h *haSup) act(ctx context.Context, now time.Time, in decide.Inputs, d decide.Decision, snap heartbeat.Snapshot) {
	if d.Action == decide.SelfFence {
		h.selfFence(d.Reason)
		return
	}
	if d.Action != decide.Promote && d.Action != decide.FencePromote && d.Action != decide.Demote {
		return
	}
	if d.Action == decide.Promote && h.holdForPreferred(now, in) {
		return
	}
	quorumLost := d.Action == decide.Demote && in.Local == ha.Active && !in.PeerSeen && !in.Vote
	h.mu.Lock()
	busy := h.acting != "" || h.b.stopping.Load() || (h.manual > 0 || now.Before(h.retryAt)) && !quorumLost
	if !busy {
		h.acting = "promote"
		if d.Action == decide.Demote {
			h.acting = "demote"
		}
	}
	h.mu.Unlock()
	if busy {
		return
	}
	if d.Action == decide.Demote {
		goSafe(h.b, "HA demote", func() { h.demote(ctx, in, d) })
		return
	}
	// Announce now, not at the next round: a peer deciding in between
	// would start the service too (DRBD would refuse it, noisily).
	h.hb.SetState(heartbeat.State{Role: ha.Active, Disk: in.Disk, HoldsVote: in.Vote, Epoch: in.Epoch})
	goSafe(h.b, "HA promote", func() { h.promote(ctx, now, in, d, snap) })
}

// preferredHold bounds how long a head that is not preferred holds back
// from starting the service beside a seen standby peer that is preferred
// but not yet UpToDate: both heads restarted, and the preferred one
// missed the last writes and needs DRBD's resync first. A short resync
// keeps the service on the preferred head, as an operator expects after
// restarting the pair; a peer that cannot catch up (a broken link, a
// long resync) does not keep the pair down longer than this.
const preferredHold = time.Minute

func (h *haSup) holdForPreferred(now time.Time, in decide.Inputs) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	catchingUp := false
	switch in.PeerDisk {
	case ha.Outdated, ha.Inconsistent, ha.Consistent, ha.Negotiating, ha.Attaching, ha.DUnknown:
		catchingUp = h.drbdState.Connection != "StandAlone" // not a split brain
	}
	if !catchingUp || !in.PeerSeen || in.PeerRole != ha.Standby || in.Preferred {
		h.holdSince = time.Time{}
		return false
	}
	if h.holdSince.IsZero() {
		h.holdSince = now
		h.log.Info("HA: " + h.peer + " is preferred and its disk is " + string(in.PeerDisk) +
			": waiting up to " + preferredHold.String() + " for it to catch up and start the service")
	}
	return now.Sub(h.holdSince) < preferredHold
}

func (h *haSup) finished(err error) {
	h.mu.Lock()
	h.acting = ""
	if err != nil {
		h.retryAt = time.Now().Add(retryAfter)
	}
	h.mu.Unlock()
	h.poke()
}

// promote starts the active stack: after fencing the peer if the
// decision says so, and with the epoch raised when the peer is not seen
// (this head's data becomes the newer line).
func (h *haSup) promote(ctx context.Context, decided time.Time, in decide.Inputs, d decide.Decision, snap heartbeat.Snapshot) {
	rc := roleChange{kind: "start", why: d.Reason}
	switch {
	case !in.PeerSeen:
		rc.kind = "takeover"
		rc.start, rc.steps = h.detectSteps(decided, snap)
	case in.PeerRole == ha.None:
		rc.kind = "failover" // the peer yields: it failed, or hands over
	}
	if rc.start.IsZero() {
		rc.start = decided
	}
	b := h.b
	var err error
	defer func() { h.finished(err) }()
	t0 := time.Now()
	if d.Action == decide.FencePromote {
		// Once the service is up (or failed to come up), DRBD listens
		// for the peer again after fence dropped it.
		defer func() {
			if b.stack == nil || b.stack.drbd == nil {
				return
			}
			if rerr := b.stack.drbd.Reconnect(ctx); rerr != nil {
				h.log.Warn("HA: DRBD does not listen for the peer again; its monitor reconnects later", "err", rerr)
			}
		}()
		if err = h.fence(ctx); err != nil {
			rc.steps = append(rc.steps, status.FailoverStep{Name: "fence", StartMS: t0.Sub(rc.start).Milliseconds(), MS: time.Since(t0).Milliseconds(), Error: err.Error()})
			h.addFailover(rc, "active", time.Now(), err)
			return
		}
	}
	h.mu.Lock()
	next := max(h.epoch, h.peerEpoch)
	if !in.PeerSeen {
		next++
	}
	err = h.setEpochLocked(next, rc.kind)
	h.mu.Unlock()
	if d.Action == decide.FencePromote {
		rc.steps = append(rc.steps, status.FailoverStep{Name: "fence", StartMS: t0.Sub(rc.start).Milliseconds(), MS: time.Since(t0).Milliseconds(), Error: errString(err)})
	}
	if err != nil {
		err = fmt.Errorf("cannot record the epoch, so no promotion: %w", err)
		h.addFailover(rc, "active", time.Now(), err)
		return
	}
	if d.AddressAfter > 0 && b.stack != nil && b.stack.vip != nil {
		b.stack.vip.HoldUntil(decided.Add(d.AddressAfter))
	}
	actx, cancel := context.WithTimeout(ctx, acquireBudget)
	defer cancel()
	err = b.acquire(actx, rc)
	if d.Action == decide.FencePromote && b.stack != nil {
		// A verdict is about one takeover, not a standing licence.
		cfg := b.stack.drbd.Config()
		os.Remove(drbd.VerdictFile(cfg.ConfDir, cfg.Resource))
	}
}

// detectSteps are a takeover's first steps: the peer's silence up to the
// dead time, the wait for the vote, and the takeover delay (0 with the
// witness; with a ping target, until the old active is certainly
// stopped). The failover starts at the peer's last heartbeat.
func (h *haSup) detectSteps(decided time.Time, snap heartbeat.Snapshot) (time.Time, []status.FailoverStep) {
	last := time.Time{}
	if snap.Peer != nil {
		last = snap.Peer.LastHeard
	}
	h.mu.Lock()
	lost, voted := h.peerLostAt, h.voteAt
	h.mu.Unlock()
	if last.IsZero() || lost.IsZero() {
		return decided, []status.FailoverStep{{Name: "detect", MS: 0}}
	}
	return last, detectTimeline(last, lost, voted, decided)
}

// detectTimeline splits last heard → decision into detect (silence),
// vote (waiting for the tiebreaker) and wait (the takeover delay).
func detectTimeline(last, lost, voted, decided time.Time) []status.FailoverStep {
	clamp := func(t time.Time) time.Time {
		if t.Before(last) {
			return last
		}
		if t.After(decided) {
			return decided
		}
		return t
	}
	lost = clamp(lost)
	voted = clamp(voted)
	if voted.Before(lost) {
		voted = lost // the vote was already held (ping target, or renewed)
	}
	ms := func(a, b time.Time) int64 { return b.Sub(a).Milliseconds() }
	return []status.FailoverStep{
		{Name: "detect", StartMS: 0, MS: ms(last, lost)},
		{Name: "vote", StartMS: ms(last, lost), MS: ms(lost, voted)},
		{Name: "wait", StartMS: ms(last, voted), MS: ms(voted, decided)},
	}
}

// fence records the peer as outdated at the witness (this head is about
// to write alone: the peer must never serve without those writes), then
// tells DRBD's fence-peer handler that the peer is down, so that DRBD
// outdates it as it promotes this head.
func (h *haSup) fence(ctx context.Context) error {
	b := h.b
	if b.stack == nil || b.stack.drbd == nil {
		return errors.New("no DRBD resource")
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := h.outdatePeer(fctx, "taking over from a silent "+h.peer, time.Now())
	cancel()
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	cfg := b.stack.drbd.Config()
	v := drbd.Verdict{Peer: h.peer, Says: "down", At: time.Now().UTC()}
	if err := drbd.WriteVerdict(cfg.ConfDir, cfg.Resource, v); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	h.log.Warn("HA: fencing " + h.peer + ": verdict \"down\" for DRBD's fence-peer handler")
	if err := b.stack.drbd.DropPeer(ctx); err != nil {
		// The promotion still works once DRBD notices by itself.
		h.log.Warn("HA: DRBD did not drop the silent peer at once", "err", err)
	}
	return nil
}

// demote stops the active stack. Past a lost quorum a stop that fails
// leaves the stack in an unknown state: the head resets itself.
func (h *haSup) demote(ctx context.Context, in decide.Inputs, d decide.Decision) {
	rc := roleChange{kind: "stop", why: d.Reason}
	quorumLost := !in.PeerSeen && !in.Vote
	switch {
	case quorumLost:
		rc.kind = "quorum lost"
	case in.PeerSeen && in.PeerRole == ha.Active:
		rc.kind = "two primaries"
	case in.Switchover:
		rc.kind = "switchover"
	case in.Escalated || in.Disk != ha.UpToDate:
		rc.kind = "failover"
	}
	var err error
	defer func() { h.finished(err) }()
	h.mu.Lock()
	frozen := frozenByFencing(h.drbdState)
	h.mu.Unlock()
	if frozen && quorumLost {
		// Nothing can be written or unmounted, and no frozen write was
		// acknowledged: restarting is the quickest clean stop, and takes
		// the service address down with it.
		h.selfFence("DRBD froze this head's I/O when it lost the peer, and the vote is gone too")
		return
	}
	bound := releaseBudget
	if quorumLost {
		bound = max(d.After, time.Second)
	}
	rctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	err = h.b.release(rctx, rc)
	if err != nil && (quorumLost || frozen) {
		h.selfFence("the stack did not stop (" + err.Error() + ")")
	}
}

// selfFence resets this head at once: it is active without quorum and
// its stack did not stop in time. It stops petting the watchdog first,
// which resets the board should the restart below not happen.
func (h *haSup) selfFence(why string) {
	b := h.b
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	wd.boundBy(time.Now())
	h.log.Error("HA: SELF-FENCE: " + why + "; restarting this head now")
	b.drainConsoles()
	// No sync: a hung filesystem is the likely reason to be here, and
	// nothing unsynced was acknowledged to a client.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		h.log.Error("HA: restart failed; waiting for the watchdog", "err", err)
	}
}

// voter asks the witness for the vote every interval while the decision
// wants it, and gives it back once when it no longer does.
func (h *haSup) voter(ctx context.Context) {
	if h.wc == nil {
		return
	}
	t := time.NewTicker(h.params.Interval)
	defer t.Stop()
	released := true
	for {
		select {
		case <-ctx.Done():
			return // never release here: the stack may still run
		case <-t.C:
		case <-h.voteKick:
		}
		rctx, cancel := context.WithTimeout(ctx, h.params.Interval)
		var err error
		if h.wantVote.Load() {
			_, _, _, err = h.wc.Request(rctx)
			released = false
		} else if !released {
			if err = h.wc.Release(rctx); err == nil {
				released = true
			}
		}
		cancel()
		h.noteVote(err)
		if err == nil {
			h.poke() // a grant or a loss changes the decision
		}
	}
}

// noteVote logs a witness that stops or starts answering, once.
func (h *haSup) noteVote(err error) {
	msg := errString(err)
	h.mu.Lock()
	was := h.voteErr
	h.voteErr = msg
	h.mu.Unlock()
	switch {
	case msg != "" && was == "":
		h.log.Warn("HA: the witness does not answer", "witness", h.tbAddr, "err", err)
	case msg == "" && was != "":
		h.log.Info("HA: the witness answers again", "witness", h.tbAddr)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// escalate is the service supervisor's escalation (services.go,
// onEscalate): a layer failed past its migration threshold.
func (h *haSup) escalate(name string, err error) {
	h.mu.Lock()
	h.escalatedAt[name] = time.Now()
	h.mu.Unlock()
	h.log.Error("HA: layer "+name+" failed past its migration threshold", "err", err)
	h.poke()
}

// manualOp marks an operator's role change (a switchover): the loop
// starts no role change of its own meanwhile. It returns the end mark.
func (h *haSup) manualOp() func() {
	if h == nil {
		return func() {}
	}
	h.mu.Lock()
	h.manual++
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.manual--
		h.mu.Unlock()
		h.poke()
	}
}

// handOver sets (or clears) the switchover flag: the head handing its
// service over yields until the peer is active.
func (h *haSup) handOver(on bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	if on {
		h.handover = time.Now().Add(handoverFor)
	} else {
		h.handover = time.Time{}
	}
	h.mu.Unlock()
	h.poke()
}

// setEpochLocked records a new epoch on the state partition first.
func (h *haSup) setEpochLocked(e uint64, why string) error {
	if e == h.epoch {
		return nil
	}
	if err := writeEpoch(h.epochs, e); err != nil {
		h.log.Error("HA: cannot record the epoch", "epoch", e, "err", err)
		return err
	}
	h.log.Info("HA: epoch "+strconv.FormatUint(e, 10)+" ("+why+")", "was", h.epoch)
	h.epoch = e
	return nil
}

func readEpoch(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	e, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

func writeEpoch(path string, e uint64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, []byte(strconv.FormatUint(e, 10)+"\n"), 0o644)
}

// addFailover keeps a role change for status, newest first.
func (h *haSup) addFailover(rc roleChange, role string, end time.Time, err error) {
	if h == nil {
		return
	}
	f := status.Failover{Kind: rc.kind, Role: role, Reason: rc.why, Start: rc.start, TotalMS: end.Sub(rc.start).Milliseconds(),
		OK: err == nil, Error: errString(err), Steps: rc.steps}
	h.mu.Lock()
	h.failovers = slices.Insert(h.failovers, 0, f)
	if len(h.failovers) > keepFailovers {
		h.failovers = h.failovers[:keepFailovers]
	}
	h.mu.Unlock()
	var b strings.Builder
	for _, s := range f.Steps {
		fmt.Fprintf(&b, " %s=%dms", strings.ReplaceAll(s.Name, " ", "_"), s.MS)
	}
	h.log.Info(fmt.Sprintf("HA: %s → %s in %d ms:%s", f.Kind, role, f.TotalMS, b.String()), "ok", f.OK, "reason", f.Reason)
}

// statusView is the HA part of `tandem status`.
func (h *haSup) statusView() *status.HA {
	now := time.Now()
	snap := h.hb.Snapshot()
	h.b.mu.Lock()
	sup := h.b.sup
	h.b.mu.Unlock()
	h.mu.Lock()
	in, d := h.inputs, h.last
	v := &status.HA{
		At: now, Mode: in.Mode.String(), Switchover: in.Switchover, Announce: string(d.Announce), Epoch: h.epoch, Preferred: in.Preferred,
		Decision: status.Decision{Action: d.Action.String(), Reason: d.Reason, Since: h.lastSince},
		Alert:    h.alert,
		Timing: status.Timing{IntervalMS: h.params.Interval.Milliseconds(), DeadTimeMS: h.params.DeadTime.Milliseconds(),
			StopBoundMS: h.params.StopBound.Milliseconds(), WatchdogMS: h.params.WatchdogTimeout.Milliseconds(),
			MarginMS: h.params.Margin.Milliseconds(), TakeoverDelayMS: h.params.TakeoverDelay().Milliseconds(),
			AddressDelayMS: h.params.AddressDelay().Milliseconds()},
		Failovers: slices.Clone(h.failovers),
	}
	voteErr := h.voteErr
	v.Escalated = h.escalatedLocked(now, sup, in.Local == ha.Active)
	h.mu.Unlock()

	held := h.voteHeld()
	switch {
	case snap.Seen && held:
		v.Quorum, v.QuorumBy = true, "peer and "+h.tiebreaker()
	case snap.Seen:
		v.Quorum, v.QuorumBy = true, "peer"
	case held:
		v.Quorum, v.QuorumBy = true, h.tiebreaker()+" vote"
	}
	v.Heartbeat = heartbeatView(snap)
	v.Vote = status.Vote{Tiebreaker: h.tiebreaker(), Address: h.tbAddr, Want: h.wantVote.Load(), Held: held, Error: voteErr}
	switch {
	case h.wc != nil:
		wv := h.wc.Vote()
		v.Vote.Holder, v.Vote.Last, v.Vote.LastAt, v.Vote.Dropped = wv.Holder, wv.Last, wv.LastAt, wv.Dropped
		v.Vote.Writer, v.Vote.Outdated = wv.Writer, wv.Outdated
		if wv.Held {
			v.Vote.ExpiresInMS = time.Until(wv.Expires).Milliseconds()
		}
	case h.ping != nil:
		ok, perr := h.ping.state()
		if !ok.IsZero() {
			v.Vote.Last, v.Vote.LastAt = "echo reply", ok
		}
		v.Vote.Error = perr
	}
	return v
}

func heartbeatView(s heartbeat.Snapshot) status.Heartbeat {
	ms := func(d heartbeat.Duration) float64 { return float64(time.Duration(d).Microseconds()) / 1000 }
	v := status.Heartbeat{Alive: s.Alive, HearsUs: s.HearsUs, Seen: s.Seen, RTTMS: ms(s.RTT),
		Dropped: status.HeartbeatDrops{Forged: s.Dropped.Forged, Replayed: s.Dropped.Replayed, WrongPair: s.Dropped.WrongPair,
			Malformed: s.Dropped.Malformed, Foreign: s.Dropped.Foreign, Unproven: s.Dropped.Unproven}}
	if p := s.Peer; p != nil {
		v.Peer = &status.HeartbeatPeer{Node: s.PeerName, Role: string(p.State.Role), Disk: string(p.State.Disk),
			HoldsVote: p.State.HoldsVote, Epoch: p.State.Epoch, Boots: p.Boots, LastHeard: p.LastHeard, LongestGapMS: ms(p.LongestGap)}
	}
	for _, p := range s.Paths {
		v.Paths = append(v.Paths, status.HeartbeatPath{Name: p.Name, Local: p.Local, Peer: p.Peer, Alive: p.Alive, LastHeard: p.LastHeard,
			Received: p.Received, Sent: p.Sent, SendErrors: p.SendErrs, Loss: p.Loss, RTTMS: ms(p.RTT), LongestGapMS: ms(p.LongestGap)})
	}
	return v
}
