// Package decide is the HA supervisor's decision logic: a pure state
// machine with no I/O and no clock of its own, so every rule can be
// tested exhaustively and simulated.
//
//   - Decide is the rule table: a function of Inputs (what the head
//     observes: heartbeat, witness, DRBD, the service supervisor, the
//     operator's mode) and Elapsed.
//   - Machine keeps Elapsed (how long quorum has been lost, how long the
//     takeover wait has run, whether this boot ever had contact) from the
//     times the caller passes to Step.
//   - The caller (PID 1's HA loop) carries out the Decision: promote,
//     fence the peer then promote, demote, self-fence, or only alert.
//
// The rules and the safety argument ("never two writers") are in
// docs/ha.md, "Decisions" and "Safety argument"; sim_test.go checks them.
package decide

import (
	"errors"
	"fmt"
	"time"

	"tandem.dev/tandem/ha"
)

// Defaults for zero Params fields.
const (
	DefaultInterval = 500 * time.Millisecond  // site ha.heartbeat_interval_ms
	DefaultDeadTime = 2500 * time.Millisecond // site ha.dead_time_ms
	// DefaultStopBound is how long the active stack may take to stop
	// (VIP, NFS/SMB, unmount with its sync, LVM, DRBD demote) before the
	// head self-fences.
	DefaultStopBound = 20 * time.Second
	// DefaultWatchdogTimeout is PID 1's hardware watchdog timeout.
	DefaultWatchdogTimeout = 30 * time.Second
	// DefaultMargin covers delivery delay, the Step period and clock drift.
	DefaultMargin = time.Second
	// DefaultBootListen: heads powered on together, by a site's power
	// coming back, finish booting up to tens of seconds apart (firmware,
	// disk checks, a resync); Pacemaker's dc-deadtime waits 20 s too.
	DefaultBootListen = 20 * time.Second
)

// Tiebreaker is what breaks a tie between the heads.
type Tiebreaker int

const (
	// Witness: a `tandem witness` leases its vote to one head at a time.
	Witness Tiebreaker = iota
	// PingTarget: the head that reaches witness.ping_target may take
	// over. It gives no exclusivity (both heads may reach it); see
	// docs/ha.md.
	PingTarget
)

// Params are the pair's timings, the same on both heads.
type Params struct {
	Interval        time.Duration
	DeadTime        time.Duration
	StopBound       time.Duration
	WatchdogTimeout time.Duration
	Margin          time.Duration
	// BootListen is how long a head that has not heard its peer since it
	// booted listens before the peer counts as silent (at least
	// DeadTime). Heads powered on together come up seconds apart; under
	// a dead time alone, the later one found its partner already active
	// and the preferred head standby.
	BootListen time.Duration
	Tiebreaker Tiebreaker
}

// WithDefaults returns p with every zero duration set to its default.
func (p Params) WithDefaults() Params {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&p.Interval, DefaultInterval)
	def(&p.DeadTime, DefaultDeadTime)
	def(&p.StopBound, DefaultStopBound)
	def(&p.WatchdogTimeout, DefaultWatchdogTimeout)
	def(&p.Margin, DefaultMargin)
	def(&p.BootListen, DefaultBootListen)
	p.BootListen = max(p.BootListen, p.DeadTime)
	return p
}

// Validate checks p (after defaults).
func (p Params) Validate() error {
	p = p.WithDefaults()
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"interval", p.Interval}, {"dead time", p.DeadTime}, {"stop bound", p.StopBound}, {"watchdog timeout", p.WatchdogTimeout}, {"margin", p.Margin}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if p.DeadTime <= 2*p.Interval {
		errs = append(errs, fmt.Errorf("dead time %v must exceed twice the interval %v", p.DeadTime, p.Interval))
	}
	if p.Tiebreaker != Witness && p.Tiebreaker != PingTarget {
		errs = append(errs, fmt.Errorf("unknown tiebreaker %d", p.Tiebreaker))
	}
	return errors.Join(errs...)
}

// TakeoverDelay is how long a head must have been without the peer and
// with the vote before it promotes (docs/ha.md, "Safety argument").
// With the witness it is 0: DRBD's fencing keeps the old active from
// writing alone, so the disk may be taken at once; only the service
// address waits (AddressDelay). With a ping target, which cannot record
// that fencing, the old head's stop is the only protection:
// I + Margin + S + W.
func (p Params) TakeoverDelay() time.Duration {
	p = p.WithDefaults()
	if p.Tiebreaker == Witness {
		return 0
	}
	return p.Interval + p.Margin + p.StopBound + p.WatchdogTimeout
}

// AddressDelay is how long after the takeover wait began (the vote held,
// the peer silent) the new head may raise the service address: I +
// Margin, time for an old active that lost its vote no later to notice
// and take its address down. The stack below the address starts
// meanwhile, so on a takeover this costs nothing unless the stack starts
// faster than that.
func (p Params) AddressDelay() time.Duration {
	p = p.WithDefaults()
	if p.Tiebreaker == Witness {
		return p.Interval + p.Margin
	}
	return p.TakeoverDelay()
}

// Mode is the operator's setting for this head.
type Mode int

const (
	Normal Mode = iota
	// Maintenance: monitor only, take no action (the quorum rule stays).
	Maintenance
	// NodeStandby: this head must not be active.
	NodeStandby
)

func (m Mode) String() string {
	switch m {
	case Normal:
		return "normal"
	case Maintenance:
		return "maintenance"
	case NodeStandby:
		return "standby"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Inputs is what the head observes now.
type Inputs struct {
	Mode Mode
	// Switchover: the operator asked the pair to move the service to the
	// other head. Set on the head that is active; keep it set until the
	// peer is active (or give up after a while), so the old head does not
	// take the service back.
	Switchover bool
	// Local is this head's role: Active while the active stack runs (or
	// is starting or stopping), Standby (or None) while it does not.
	Local ha.Role
	// Disk is the local DRBD disk state.
	Disk ha.DiskState
	// Epoch is this head's generation: raised past both heads' epochs at
	// every promotion and kept on the state partition; the higher epoch
	// was active more recently.
	Epoch uint64
	// Escalated: a layer reached its migration threshold (or failed in a
	// way a restart cannot fix).
	Escalated bool
	// Preferred: this head wins a tie between two standby heads (and, as
	// a last resort, between two active ones). Exactly one head of the
	// pair must have it; see Prefer.
	Preferred bool

	// PeerSeen: heartbeat contact in both directions (heartbeat.Seen).
	PeerSeen bool
	// PeerAlive: anything heard from the peer within the dead time
	// (heartbeat Alive); PeerSeen implies it. Only a silent peer is taken
	// over from.
	PeerAlive bool
	// The peer's announced state; meaningful only with PeerSeen.
	PeerRole      ha.Role
	PeerDisk      ha.DiskState
	PeerHoldsVote bool
	PeerEpoch     uint64
	// PeerFenced: this head outdated the peer through DRBD's fence-peer
	// hook and no resync has undone it (drbd.PeerFenced).
	PeerFenced bool

	// Vote: this head holds the witness vote (witness.Client.Held), or
	// with a ping target, the target answers.
	Vote bool
}

// Elapsed is what the decision needs to know about the past; Machine
// keeps it.
type Elapsed struct {
	// Contacted: since boot, this head has seen the peer or held a
	// witness vote at least once.
	Contacted bool
	// QuorumLost: how long this head has been active without quorum (0
	// while it has quorum).
	QuorumLost time.Duration
	// Takeover: how long this head, not active, has without a break heard
	// nothing from the peer and held the vote.
	Takeover time.Duration
	// Listening: how much longer this head, just started, listens before
	// a peer it has not heard counts as silent (DeadTime after the first
	// Step; 0 after that).
	Listening time.Duration
}

// Action is what the caller does.
type Action int

const (
	// None: nothing to do.
	None Action = iota
	// Promote: start the active stack (DRBD primary, LVM, XFS, NFS/SMB,
	// VIP), raising the epoch.
	Promote
	// FencePromote: tell DRBD's fence-peer handler the peer is down
	// (drbd.WriteVerdict), so DRBD outdates it, then promote.
	FencePromote
	// Demote: stop the active stack top-down, leaving DRBD secondary. Arm
	// the hardware watchdog for After + WatchdogTimeout when the reason is
	// lost quorum, so a hung stop ends in a reset even if this loop hangs
	// too.
	Demote
	// SelfFence: stop petting the hardware watchdog now; the board resets
	// within WatchdogTimeout.
	SelfFence
	// Alert: report Reason (status, log); change nothing.
	Alert
)

var actionNames = [...]string{"none", "promote", "fence-peer-then-promote", "demote", "self-fence", "alert"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// MarshalText renders the action's name, for status JSON.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Decision is what to do, and why.
type Decision struct {
	Action Action `json:"action"`
	Reason string `json:"reason"`
	// Vote: hold the witness vote (request it, renew it); false: release
	// it if held, so that it does not block the peer.
	Vote bool `json:"vote"`
	// Announce is the role to put in the heartbeat.
	Announce ha.Role `json:"announce"`
	// After: decide again within this at the latest, even if no input
	// changes: a wait or a bound runs out then (0: no such timer).
	After time.Duration `json:"after_ns,omitempty"`
	// AddressAfter: on a takeover, raise the service address no sooner
	// than this from now (Params.AddressDelay); the layers below start
	// at once.
	AddressAfter time.Duration `json:"address_after_ns,omitempty"`
}

// Prefer says whether the head named local wins a tie against peer: the
// higher epoch (the head active more recently) wins, then the lower name.
func Prefer(local, peer string, localEpoch, peerEpoch uint64) bool {
	if localEpoch != peerEpoch {
		return localEpoch > peerEpoch
	}
	return local < peer
}

// Decide applies the rules to one observation.
func Decide(p Params, in Inputs, el Elapsed) Decision {
	p = p.WithDefaults()
	d := Decision{Announce: announce(in)}
	if in.Local == ha.Active {
		d.Vote = true
		return active(p, in, el, d)
	}
	return standby(p, in, el, d)
}

func announce(in Inputs) ha.Role {
	switch {
	case in.Local == ha.Active:
		return ha.Active
	case in.Mode != Normal || in.Switchover || in.Escalated:
		return ha.None
	}
	return ha.Standby
}

func (d Decision) with(a Action, format string, args ...any) Decision {
	d.Action, d.Reason = a, fmt.Sprintf(format, args...)
	return d
}

// peerReady: the peer can take the service over from us.
func peerReady(in Inputs) bool {
	return in.PeerSeen && in.PeerRole == ha.Standby && in.PeerDisk == ha.UpToDate
}

func peerNotReady(in Inputs) string {
	switch {
	case !in.PeerSeen:
		return "the peer is not seen"
	case in.PeerRole != ha.Standby:
		return fmt.Sprintf("the peer is %s", in.PeerRole)
	}
	return fmt.Sprintf("the peer's disk is %s", in.PeerDisk)
}

func active(p Params, in Inputs, el Elapsed, d Decision) Decision {
	// Safety first, in every mode.
	if !in.PeerSeen && !in.Vote {
		if el.QuorumLost >= p.StopBound {
			return d.with(SelfFence, "quorum lost %v ago and the stack is still up: the stop overran its bound of %v; stop petting the watchdog", el.QuorumLost, p.StopBound)
		}
		d.After = p.StopBound - el.QuorumLost
		return d.with(Demote, "quorum lost (peer not seen, no %s): stop the active stack within %v", voteName(p), d.After)
	}
	if in.PeerSeen && in.PeerRole == ha.Active {
		why := ""
		switch {
		case in.PeerEpoch != in.Epoch:
			why = fmt.Sprintf("epoch %d against the peer's %d", in.Epoch, in.PeerEpoch)
		case in.PeerHoldsVote != in.Vote:
			why = fmt.Sprintf("the witness vote is %s", map[bool]string{true: "ours", false: "the peer's"}[in.Vote])
		default:
			why = fmt.Sprintf("tie, preferred: %v", in.Preferred)
		}
		if in.PeerEpoch > in.Epoch || (in.PeerEpoch == in.Epoch && (in.PeerHoldsVote && !in.Vote || in.PeerHoldsVote == in.Vote && !in.Preferred)) {
			return d.with(Demote, "both heads are active: this head steps down (%s); check DRBD for a split brain", why)
		}
		return d.with(Alert, "both heads are active: the peer must step down (%s); check DRBD for a split brain", why)
	}

	switch {
	case in.Mode == Maintenance:
		return d.with(None, "maintenance: monitoring only")
	case in.Mode == NodeStandby:
		if !peerReady(in) {
			return d.with(Demote, "node standby: stop the active stack; %s, so the service stops", peerNotReady(in))
		}
		return d.with(Demote, "node standby: hand the service to the peer")
	case in.Switchover:
		if !peerReady(in) {
			return d.with(Alert, "switchover refused: %s", peerNotReady(in))
		}
		return d.with(Demote, "switchover: hand the service to the peer")
	case in.Escalated:
		if !peerReady(in) {
			return d.with(Alert, "a local layer failed past its migration threshold, but %s: staying active", peerNotReady(in))
		}
		return d.with(Demote, "a local layer failed past its migration threshold: fail over to the peer")
	case in.Disk != ha.UpToDate:
		if !peerReady(in) {
			return d.with(Alert, "local disk is %s, but %s: staying active", in.Disk, peerNotReady(in))
		}
		return d.with(Demote, "local disk is %s and the peer's is UpToDate: fail over to the peer", in.Disk)
	}
	if in.PeerSeen {
		return d.with(None, "active; peer seen")
	}
	return d.with(None, "active; peer not seen, %s held", voteName(p))
}

func voteName(p Params) string {
	if p.Tiebreaker == PingTarget {
		return "ping target"
	}
	return "witness vote"
}

// degraded says whether a standby's disk state means the pair has lost
// its redundancy (alert), rather than a resync or attach in progress.
func degraded(s ha.DiskState) bool {
	switch s {
	case ha.UpToDate, ha.Inconsistent, ha.Consistent, ha.Attaching, ha.Negotiating:
		return false
	}
	return true
}

func standby(p Params, in Inputs, el Elapsed, d Decision) Decision {
	switch {
	case in.Mode == Maintenance:
		return d.with(None, "maintenance: monitoring only")
	case in.Mode == NodeStandby:
		return d.with(None, "node standby: this head does not take over")
	case in.Switchover:
		return d.with(None, "switchover: waiting for the peer to take over")
	}

	if in.PeerSeen {
		if in.PeerRole == ha.Active {
			switch {
			case in.Escalated:
				return d.with(Alert, "a local layer failed past its migration threshold on the standby")
			case degraded(in.Disk):
				return d.with(Alert, "standby disk is %s: the pair has no redundancy", in.Disk)
			}
			return d.with(None, "standby; the peer is active")
		}
		// Neither head is active: one of them starts the service.
		peerCould := in.PeerRole == ha.Standby && in.PeerDisk == ha.UpToDate
		switch {
		case in.Escalated && peerCould:
			// This head yields (it announces none): starting here too
			// would race the peer, and would run the failed layer again.
			return d.with(None, "no head is active; a local layer failed past its migration threshold, so the peer starts the service")
		case in.Escalated:
			return d.with(Alert, "no head is active and none can start: a local layer failed past its migration threshold, peer %s with disk %s", in.PeerRole, in.PeerDisk)
		case in.Disk != ha.UpToDate && peerCould:
			return d.with(None, "no head is active; local disk is %s, the peer starts the service", in.Disk)
		case in.Disk != ha.UpToDate:
			return d.with(Alert, "no head is active and none can start: local disk %s, peer %s with disk %s", in.Disk, in.PeerRole, in.PeerDisk)
		case peerCould && !in.Preferred:
			return d.with(None, "no head is active; the peer is preferred and starts the service")
		}
		return d.with(Promote, "no head is active; peer seen (%s, disk %s): start the service here", in.PeerRole, in.PeerDisk)
	}

	// The peer is not seen.
	if in.PeerAlive {
		// One-way contact: the peer may be active on its vote; leave the
		// vote to it and do not take over.
		return d.with(Alert, "peer heard but it does not hear this head (one-way contact): not taking over")
	}
	if el.Listening > 0 {
		// Not hearing the peer yet is not silence: it may be booting
		// beside us, and the preferred head should start the service.
		d.After = el.Listening
		return d.with(None, "just started: listening for the peer %v more before it counts as silent", d.After)
	}
	if in.Disk != ha.UpToDate {
		return d.with(Alert, "peer not seen and local disk is %s: cannot take over", in.Disk)
	}
	d.Vote = true
	if !el.Contacted && !in.Vote || !el.Contacted && p.Tiebreaker == PingTarget {
		return d.with(None, "booted alone: waiting for the peer or the witness")
	}
	if !in.Vote {
		return d.with(Alert, "peer not seen and no %s: not taking over", voteName(p))
	}
	if wait := p.TakeoverDelay(); el.Takeover < wait {
		d.After = wait - el.Takeover
		return d.with(None, "peer silent, %s held: waiting %v more for the old active to stop or be reset", voteName(p), d.After)
	}
	d.AddressAfter = max(0, p.AddressDelay()-el.Takeover)
	if !in.PeerFenced {
		return d.with(FencePromote, "peer silent for %v with the %s held: outdate the peer, then take over", el.Takeover, voteName(p))
	}
	return d.with(Promote, "peer silent for %v with the %s held, peer already fenced: take over", el.Takeover, voteName(p))
}

// Machine keeps Elapsed between observations. Call Step at least every
// heartbeat interval and whenever an input changes; Margin must cover the
// Step period. Not safe for concurrent use.
type Machine struct {
	p            Params
	started      time.Time
	contacted    bool
	heardPeer    bool // the peer was heard since boot
	quorumLostAt time.Time
	takeoverAt   time.Time
}

// NewMachine checks p and returns a machine for one boot of the head.
func NewMachine(p Params) (*Machine, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("decide: %w", err)
	}
	return &Machine{p: p.WithDefaults()}, nil
}

// Params returns the machine's parameters, defaults applied.
func (m *Machine) Params() Params { return m.p }

// Step records the observation in at now and decides.
func (m *Machine) Step(now time.Time, in Inputs) Decision {
	if m.started.IsZero() {
		m.started = now
	}
	if in.PeerSeen || in.Vote && m.p.Tiebreaker == Witness {
		m.contacted = true
	}
	if in.PeerSeen || in.PeerAlive {
		m.heardPeer = true
	}
	if in.Local == ha.Active && !in.PeerSeen && !in.Vote {
		if m.quorumLostAt.IsZero() {
			m.quorumLostAt = now
		}
	} else {
		m.quorumLostAt = time.Time{}
	}
	if in.Local != ha.Active && !in.PeerSeen && !in.PeerAlive && in.Vote {
		if m.takeoverAt.IsZero() {
			m.takeoverAt = now
		}
	} else {
		m.takeoverAt = time.Time{}
	}
	return Decide(m.p, in, m.Elapsed(now))
}

// Elapsed returns the machine's view of the past as of now.
func (m *Machine) Elapsed(now time.Time) Elapsed {
	since := func(t time.Time) time.Duration {
		if t.IsZero() || now.Before(t) {
			return 0
		}
		return now.Sub(t)
	}
	el := Elapsed{Contacted: m.contacted, QuorumLost: since(m.quorumLostAt), Takeover: since(m.takeoverAt)}
	if !m.started.IsZero() {
		listen := m.p.DeadTime
		if !m.heardPeer {
			listen = m.p.BootListen
		}
		el.Listening = max(0, listen-since(m.started))
	}
	return el
}
