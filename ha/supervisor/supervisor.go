// Package supervisor is the HA loop of one head: every heartbeat
// interval it observes (heartbeat, witness or ping target, DRBD, the
// layers' escalations, the operator), steps ha/decide's machine,
// announces the outcome, asks for or gives back the vote, and carries
// out promote, fence-then-promote, demote and self-fence. It also runs
// the operator's role changes (switchover, modes, cleanup) and the
// control channel they use between the heads.
//
// PID 1 drives it through a few narrow interfaces (Layers, DRBD, Host,
// Watchdog); the rules and the safety argument are in docs/ha.md.
package supervisor

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

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/decide"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// Where the loop keeps its state across boots (the state partition).
const (
	EpochFile = "/var/lib/tandem/ha/epoch"
	// ModeFile keeps the operator's modes, as Pacemaker keeps
	// maintenance-mode and node standby: an operator who put a head in
	// standby does not want a reboot to bring the service back there.
	ModeFile = "/var/lib/tandem/ha/mode.json"
	// OutdatedFile remembers that the witness recorded the peer as the
	// only current copy: a witness that later loses its record (a
	// rebuilt host) must not make this head's stale data serve.
	OutdatedFile = "/var/lib/tandem/ha/outdated"
)

// Limits of the loop's own role changes.
const (
	// retryAfter: after a failed promote or demote the loop waits this
	// long before it tries again (a start rolls back; DRBD may refuse).
	retryAfter = 10 * time.Second
	// handoverFor bounds a switchover's "hand over" flag on the head
	// giving the service away, should the peer never become active.
	handoverFor = AcquireBudget + ReleaseBudget
	// keepFailovers is how many role changes status keeps.
	keepFailovers = 8
)

// Layers is this head's service supervisor (*supervise.Supervisor).
type Layers interface {
	StartRoles(ctx context.Context, roles ...graph.Role) error
	StopRoles(ctx context.Context, roles ...graph.Role) error
	Status() []supervise.ResourceStatus
	Maintenance(on bool)
	InMaintenance() bool
	Cleanup(name string) error
}

// DRBD is the replicated device (*drbd.Resource).
type DRBD interface {
	State() drbd.State
	Config() drbd.Config
	DropPeer(ctx context.Context) error
	Reconnect(ctx context.Context) error
	ResumeIO(ctx context.Context) error
	Outdate(ctx context.Context) error
}

// Address is the service address (*vip.Resource): a takeover holds it
// back until the old head can no longer answer on it.
type Address interface {
	HoldUntil(t time.Time)
}

// Watchdog bounds the hardware watchdog's petting (nil-safe in PID 1).
type Watchdog interface {
	// BoundBy makes sure the petting stops by t, keeping an earlier bound.
	BoundBy(t time.Time)
	// Lift removes the bound t if it is still the one in force.
	Lift(t time.Time)
}

// Host is what PID 1 does for the loop.
type Host interface {
	// Stopping: the node is shutting down; no role change starts.
	Stopping() bool
	// Restart resets the node at once, without sync (a self-fence).
	Restart(why string)
	// LocalStatus is this head's status, for the peer's control call.
	LocalStatus() status.Status
}

// Membership is the heartbeat endpoint (*heartbeat.Endpoint).
type Membership interface {
	Snapshot() heartbeat.Snapshot
	SetState(heartbeat.State)
	Run(ctx context.Context) error
}

// Witness is the witness client (*witness.Client).
type Witness interface {
	Held() bool
	Vote() witness.Vote
	Request(ctx context.Context) (granted bool, lease time.Duration, holder string, err error)
	Release(ctx context.Context) error
	OutdatePeer(ctx context.Context) error
	ClearWriter(ctx context.Context) error
}

// Clock is the loop's time source (real in PID 1, fake in tests).
type Clock = supervise.Clock

// Config is one boot's HA supervisor. Site, Node, Key, Layers, DRBD,
// Host and Heartbeat are required; so is Witness or Ping.
type Config struct {
	Site   *site.Config
	Node   string
	Key    []byte // the pair key
	Params decide.Params
	Layers Layers
	DRBD   DRBD
	VIP    Address  // nil: no address to hold back
	Watch  Watchdog // nil: no hardware watchdog
	Host   Host

	Heartbeat Membership
	Witness   Witness // nil with a ping target, or if none could be set up
	Ping      *Pinger // the ping target mode

	EpochFile, ModeFile, OutdatedFile string // defaults: the constants
	Clock                             Clock  // default: the real one
	Log                               *slog.Logger
}

// Supervisor is one boot's HA supervisor.
//
// Lock order: roleMu, then epochMu, then mu. mu is a leaf: nothing
// blocks, does I/O or calls out while holding it. PID 1's own locks are
// never held while calling in.
type Supervisor struct {
	cfg    Config
	log    *slog.Logger
	clock  Clock
	params decide.Params
	m      *decide.Machine // the loop's goroutine only
	hb     Membership
	wc     Witness
	ping   *Pinger
	peer   string
	tbAddr string // the witness or ping target address
	kick   chan struct{}
	tasks  sync.WaitGroup // background role changes and fencing

	wantVote atomic.Bool
	voteKick chan struct{}
	fencing  fenceWork
	outdated atomic.Bool // the witness's last answer: the peer's data is the only current copy
	warmNow  chan struct{}

	// roleMu serialises role changes (acquire, release).
	roleMu sync.Mutex
	// epochMu serialises epoch changes, whose file write is outside mu.
	epochMu sync.Mutex

	mu          sync.Mutex
	role        ha.Role // Active or Standby: the active layers run here
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
	// The witness's writer record may be lifted only once DRBD has
	// resynced the peer in a connection made after this head recorded
	// itself: DRBD's view of a dead peer can still read Connected and
	// UpToDate for seconds after the record (docs/ha.md, "Fencing").
	recordedAt     time.Time // this head last recorded itself as the writer
	recordedOK     time.Time // the last such request the witness confirmed
	connectedSince time.Time // first seen Connected, this connection; zero while not
	lastStep       time.Time // the loop's last finished round (Healthy)
	// markedAt: this head remembers (OutdatedFile) that its data is
	// outdated; zero: not marked. markChanged: when it was last set or
	// cleared; only a witness answer newer than that counts.
	markedAt, markChanged time.Time
}

// Params derives the decision timing from the site config; watchdog is
// the hardware watchdog's timeout in force.
func Params(sc *site.Config, watchdog time.Duration) decide.Params {
	p := decide.Params{
		Interval:        time.Duration(sc.HA.HeartbeatIntervalMS) * time.Millisecond,
		DeadTime:        time.Duration(sc.HA.DeadTimeMS) * time.Millisecond,
		StopBound:       time.Duration(sc.HA.StopBoundMS) * time.Millisecond,
		WatchdogTimeout: watchdog,
		Tiebreaker:      decide.Witness,
	}
	if sc.Witness.PingTarget != "" {
		p.Tiebreaker = decide.PingTarget
	}
	return p.WithDefaults()
}

// Connect opens what the loop talks to the pair with: the heartbeat on
// every path, and the witness client or the ping target. A witness that
// cannot be set up only keeps this head from taking over (logged).
func Connect(cfg *Config) error {
	sc := cfg.Site
	peer := sc.Peer(cfg.Node)
	if peer == nil {
		return errors.New("the site config names no peer")
	}
	paths, err := heartbeat.PathsFromSite(sc, cfg.Node)
	if err != nil {
		return err
	}
	p := cfg.Params
	hb, err := heartbeat.Open(heartbeat.Config{Pair: sc.Pair.Name, Node: cfg.Node, Peer: peer.Name, Key: cfg.Key,
		Paths: paths, Interval: p.Interval, DeadTime: p.DeadTime, Log: cfg.Log})
	if err != nil {
		return err
	}
	cfg.Heartbeat = hb
	if sc.Witness.Address != "" {
		wcfg, err := witness.ClientFromSite(sc, cfg.Node, cfg.Key)
		var wc *witness.Client
		if err == nil {
			wcfg.Log = cfg.Log
			wc, err = witness.NewClient(wcfg)
		}
		if err != nil {
			// Without the witness this head never takes over from a
			// silent peer: safe, and loud.
			cfg.Log.Error("no witness client; this head will not take over from a silent peer", "err", err)
			return nil
		}
		cfg.Witness = wc
		return nil
	}
	pg, err := NewPinger(sc.Witness.PingTarget, p.Interval, p.DeadTime, cfg.Log)
	if err != nil {
		return err
	}
	cfg.Ping = pg
	return nil
}

// New makes the supervisor; the head starts as the standby. Start runs it.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Site == nil || cfg.Layers == nil || cfg.DRBD == nil || cfg.Host == nil || cfg.Heartbeat == nil {
		return nil, errors.New("HA supervisor: site, layers, DRBD, host and heartbeat are required")
	}
	peer := cfg.Site.Peer(cfg.Node)
	if peer == nil {
		return nil, errors.New("the site config names no peer")
	}
	m, err := decide.NewMachine(cfg.Params)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = supervise.RealClock
	}
	if cfg.EpochFile == "" {
		cfg.EpochFile = EpochFile
	}
	if cfg.ModeFile == "" {
		cfg.ModeFile = ModeFile
	}
	if cfg.OutdatedFile == "" {
		cfg.OutdatedFile = OutdatedFile
	}
	s := &Supervisor{cfg: cfg, log: cfg.Log.With("component", "ha"), clock: cfg.Clock, params: cfg.Params, m: m,
		hb: cfg.Heartbeat, wc: cfg.Witness, ping: cfg.Ping, peer: peer.Name, kick: make(chan struct{}, 1),
		voteKick: make(chan struct{}, 1), warmNow: make(chan struct{}, 1), role: ha.Standby, escalatedAt: map[string]time.Time{}}
	s.fencing.outdateBudget, s.fencing.resumeBudget = outdateBudget, resumeBudget
	s.tbAddr = cfg.Site.Witness.Address
	if s.ping != nil {
		s.tbAddr = cfg.Site.Witness.PingTarget
	}
	s.loadMode()
	if _, err := os.Stat(cfg.OutdatedFile); err == nil {
		s.markedAt = s.clock.Now()
		s.markChanged = s.markedAt
		s.log.Warn("this head's data was recorded as outdated before the reboot: it does not take over until it has resynced", "file", cfg.OutdatedFile)
	}
	s.epoch, err = readEpoch(cfg.EpochFile)
	if err != nil {
		// A lost epoch only makes this head yield in a tie: the safe side.
		s.log.Warn("cannot read the epoch; counting from 0", "err", err)
	}
	return s, nil
}

// Start decides once, then runs the heartbeat, the tiebreaker, the vote
// and the loop until ctx ends.
func (s *Supervisor) Start(ctx context.Context) {
	p := s.params
	s.log.Info("HA supervisor running", "peer", s.peer, "interval", p.Interval, "dead_time", p.DeadTime,
		"stop_bound", p.StopBound, "boot_listen", p.BootListen, "watchdog", p.WatchdogTimeout, "takeover_delay", p.TakeoverDelay(), "address_delay", p.AddressDelay(),
		"tiebreaker", s.tiebreaker()+" "+s.tbAddr, "epoch", s.Epoch())
	// Decide once before the first heartbeat goes out: until then the
	// endpoint announces "none", which a peer reads as yielding, and a
	// peer that is not preferred would start the service.
	s.Step(ctx, s.clock.Now())
	s.goSafe("heartbeat", func() { s.hb.Run(ctx) })
	if s.ping != nil {
		s.goSafe("ping target", func() { s.ping.run(ctx) })
	}
	s.goSafe("vote", func() { s.voter(ctx) })
	s.goSafe("loop", func() { s.loop(ctx) })
}

// goSafe runs fn in a goroutine. A panic there leaves the HA state
// unknown, and an active head unsupervised: it ends in a self-fence,
// never in PID 1's end (a standby just restarts as a standby).
func (s *Supervisor) goSafe(what string, fn func()) {
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error(what+" panic", "panic", fmt.Sprint(r))
				s.selfFence("the HA " + what + " panicked")
			}
		}()
		fn()
	}()
}

// staleAfter is how long the loop may go without finishing a round
// before the head counts as unsupervised: the voter stops renewing the
// vote and PID 1 stops petting the watchdog. The loop steps every
// interval; a dead time and two intervals leave room for a loaded host.
func (s *Supervisor) staleAfter() time.Duration { return s.params.DeadTime + 2*s.params.Interval }

// Healthy reports whether the decision loop finished a round recently.
// PID 1 pets the hardware watchdog only while it does.
func (s *Supervisor) Healthy(now time.Time) bool {
	s.mu.Lock()
	last := s.lastStep
	s.mu.Unlock()
	return !last.IsZero() && now.Sub(last) <= s.staleAfter()
}

// Role is this head's role: Active while the active layers run (or are
// being started or stopped by a role change), else Standby.
func (s *Supervisor) Role() ha.Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.role
}

func (s *Supervisor) setRole(r ha.Role) {
	s.mu.Lock()
	s.role = r
	s.mu.Unlock()
}

// Epoch is this head's data generation (docs/ha.md, "Epochs").
func (s *Supervisor) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Released wakes PID 1's standby warming after each release.
func (s *Supervisor) Released() <-chan struct{} { return s.warmNow }

func (s *Supervisor) tiebreaker() string {
	if s.params.Tiebreaker == decide.PingTarget {
		return "ping target"
	}
	return "witness"
}

// poke makes the loop decide again now.
func (s *Supervisor) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Supervisor) loop(ctx context.Context) {
	t := time.NewTicker(s.params.Interval)
	defer t.Stop()
	silent := time.NewTimer(time.Hour)
	defer silent.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-silent.C:
		}
		s.Step(ctx, s.clock.Now())
		silent.Reset(untilSilent(s.hb.Snapshot()))
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

// Step is one round: observe, decide, announce, act. The loop calls it
// every interval and whenever something changes; tests call it with
// their own clock.
func (s *Supervisor) Step(ctx context.Context, now time.Time) {
	snap := s.hb.Snapshot()
	in := s.observe(now, snap)
	d := s.m.Step(now, in)
	s.mu.Lock()
	st, stale := s.drbdState, s.stale
	s.mu.Unlock()
	s.hb.SetState(heartbeat.State{Role: d.Announce, Disk: in.Disk, HoldsVote: in.Vote, Epoch: in.Epoch, Outdated: st.Disk == drbd.Outdated})
	if s.wantVote.Swap(d.Vote) != d.Vote {
		select {
		case s.voteKick <- struct{}{}:
		default:
		}
	}
	s.record(now, in, d)
	s.guard(now, in, d)
	s.act(ctx, now, in, d, snap)
	f := fencingState(in.Local, in.Vote, st)
	s.mu.Lock()
	f.synced = f.synced && s.connectedSince.After(s.recordedAt)
	s.mu.Unlock()
	f.stale = stale
	f.peerOutdated = peerOutdated(snap)
	s.watchFencing(ctx, now, f)
	s.mu.Lock()
	s.lastStep = s.clock.Now()
	s.mu.Unlock()
	if s.wc != nil {
		if o := s.wc.Vote().Outdated; s.outdated.Swap(o) != o {
			if o {
				s.log.Warn("the witness records " + s.peer + "'s data as the only current copy (it wrote while DRBD was disconnected): " +
					"this head is not granted the vote, and does not take over, until " + s.peer + " has resynced it")
			} else {
				s.log.Info("the witness no longer records this head's data as outdated")
			}
		}
	}
}

// observe gathers the decision's inputs. It calls out (DRBD, the
// layers, the witness) before taking mu, and writes an epoch taken from
// the peer after releasing it.
func (s *Supervisor) observe(now time.Time, snap heartbeat.Snapshot) decide.Inputs {
	st := s.cfg.DRBD.State()
	dc := s.cfg.DRBD.Config()
	_, fenced := drbd.PeerFenced(dc.StateDir, dc.Resource)
	vote := s.voteHeld()
	layers := s.cfg.Layers.Status()
	inMaintenance := s.cfg.Layers.InMaintenance()
	stopping := s.cfg.Host.Stopping()
	connected := st.Connection == drbd.Connected
	synced := connected && st.Disk == drbd.UpToDate && st.PeerDisk == drbd.UpToDate
	var wv witness.Vote
	if s.wc != nil {
		wv = s.wc.Vote()
	}

	s.mu.Lock()
	in := decide.Inputs{
		Local:      ha.Standby,
		Disk:       st.Disk.OrUnknown(),
		PeerSeen:   snap.Seen,
		PeerAlive:  snap.Alive,
		PeerFenced: fenced,
		Vote:       vote,
	}
	if s.mode.Standby {
		in.Mode = decide.NodeStandby
	}
	if s.mode.Maintenance || inMaintenance {
		in.Mode = decide.Maintenance
	}
	if s.role == ha.Active || s.acting != "" {
		in.Local = ha.Active // starting or stopping counts as active
	}
	if stopping && in.Local != ha.Active {
		in.Mode = decide.NodeStandby // going down: never take the service now
	}
	if snap.Peer != nil {
		ps := snap.Peer.State
		in.PeerRole, in.PeerDisk, in.PeerHoldsVote, in.PeerEpoch = ps.Role, ps.Disk, ps.HoldsVote, ps.Epoch
		if snap.Seen {
			s.peerEpoch = ps.Epoch
		}
	}
	if connected {
		// DRBD's own view of the peer changes in step with ours; the
		// heartbeat's lags by up to an interval, long enough for two
		// heads that just connected to each see the other as not yet
		// UpToDate, and both start the service.
		in.PeerDisk = st.PeerDisk.OrUnknown()
		switch {
		case st.PeerRole == drbd.Primary:
			in.PeerRole = ha.Active // it holds the data device
		case st.Role == drbd.Primary && in.PeerRole == ha.Active:
			// It announces active but cannot be Primary beside us: it is
			// starting, and DRBD will refuse it. Not a second active
			// head to step down for.
			in.PeerRole = ha.None
		}
	}
	s.drbdState = st
	switch {
	case !connected:
		s.connectedSince = time.Time{}
	case s.connectedSince.IsZero():
		s.connectedSince = now
	}
	var lastHeard time.Time
	if snap.Peer != nil {
		lastHeard = snap.Peer.LastHeard
	}
	stale, changed := s.replica.update(now, connected, st.Disk == drbd.UpToDate, in.Local == ha.Active,
		in.PeerRole == ha.Active, lastHeard, s.params.Interval)
	s.stale = stale
	// Remembered across a reboot and a witness that forgot: marked while
	// the witness says so, cleared by a resync in a connection made after.
	// A standby asks the witness only when it wants the vote, so its last
	// answer may be old: only one newer than the last change counts.
	fresh := s.wc != nil && wv.LastAt.After(s.markChanged)
	mark := fresh && wv.Outdated && s.markedAt.IsZero()
	unmark := !s.markedAt.IsZero() && synced && (s.connectedSince.After(s.markedAt) || fresh && !wv.Outdated)
	if stale || !s.markedAt.IsZero() && !unmark || mark {
		if in.Local != ha.Active && in.Disk == ha.UpToDate {
			in.Disk = ha.Outdated
		}
	}
	if !s.handover.IsZero() && (now.After(s.handover) || snap.Seen && in.PeerRole == ha.Active) {
		s.handover = time.Time{} // the peer has the service (or never took it)
	}
	in.Switchover = !s.handover.IsZero()
	in.Escalated = len(s.escalatedLocked(now, layers, in.Local == ha.Active)) > 0
	// With the disks in sync both heads hold the same data: take the
	// peer's generation, so that neither is preferred for stale reasons.
	adopt := snap.Seen && s.peerEpoch > s.epoch && synced
	// For the takeover timeline: when the peer fell silent, when the
	// vote came.
	switch {
	case snap.Alive:
		s.peerLostAt = time.Time{}
	case s.peerLostAt.IsZero():
		s.peerLostAt = now
	}
	if !vote {
		s.voteAt = time.Time{}
	} else if s.voteAt.IsZero() {
		s.voteAt = now
	}
	s.mu.Unlock()

	switch {
	case changed && stale:
		s.log.Warn("DRBD lost " + s.peer + " while it went on serving: this head's data may lack its writes; " +
			"it counts as Outdated, and this head does not take over, until DRBD has reconnected and resynced")
	case changed:
		s.log.Info("DRBD reconnected and resynced: this head's data is current again")
	}
	if adopt {
		s.setEpoch("in sync with the peer", func(e, peer uint64) uint64 { return max(e, peer) })
	}
	switch {
	case mark:
		s.rememberOutdated(now)
	case unmark:
		s.forgetOutdated()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in.Epoch = s.epoch
	in.Preferred = decide.Prefer(s.cfg.Node, s.peer, s.epoch, s.peerEpoch)
	s.inputs = in
	return in
}

func (s *Supervisor) voteHeld() bool {
	switch {
	case s.ping != nil:
		return s.ping.held()
	case s.wc != nil:
		return s.wc.Held()
	}
	return false
}

// escalatedLocked names the layers whose escalation keeps this head from
// serving: a layer both heads run (the head cannot serve at all), an
// active layer while this head is active, and, after failing over for
// one, that layer for the failure timeout (Pacemaker's ban), so the
// head does not take the service straight back.
func (s *Supervisor) escalatedLocked(now time.Time, layers []supervise.ResourceStatus, active bool) []string {
	ban := time.Duration(s.cfg.Site.HA.FailureTimeoutSeconds) * time.Second // 0: for good
	var out []string
	for _, r := range layers {
		if !r.Escalated {
			continue
		}
		at, ok := s.escalatedAt[r.Name]
		banned := ok && (ban == 0 || now.Sub(at) < ban)
		if r.Role == graph.Both || active || banned {
			out = append(out, r.Name)
		}
	}
	return out
}

// record keeps the decision for status and logs it when it changes
// (reasons that only count down are the same decision).
func (s *Supervisor) record(now time.Time, in decide.Inputs, d decide.Decision) {
	key := d.Action.String() + ": " + countdown.ReplaceAllString(d.Reason, "…")
	s.mu.Lock()
	s.last = d
	changed := key != s.lastKey
	if changed {
		s.lastKey, s.lastSince = key, now
	}
	if d.Action == decide.Alert {
		s.alert = d.Reason
	} else {
		s.alert = ""
	}
	s.mu.Unlock()
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
	s.log.Log(context.Background(), level, d.Action.String()+": "+d.Reason,
		"announce", string(d.Announce), "vote", d.Vote, "peer_seen", in.PeerSeen, "peer_alive", in.PeerAlive,
		"held", in.Vote, "disk", string(in.Disk), "epoch", in.Epoch)
}

// countdown matches the durations in a reason ("waiting 12.5s more").
var countdown = regexp.MustCompile(`([0-9][0-9.]*(ns|µs|ms|s|m|h)?)+`)

// guard arms the watchdog while this head is active without quorum: the
// stack must be down by the stop bound, or the board resets, even if
// this loop hangs too.
func (s *Supervisor) guard(now time.Time, in decide.Inputs, d decide.Decision) {
	lost := in.Local == ha.Active && !in.PeerSeen && !in.Vote
	s.mu.Lock()
	armed := s.armed
	s.mu.Unlock()
	switch {
	case lost && armed.IsZero():
		bound := now.Add(max(d.After, 0))
		s.boundBy(bound)
		s.mu.Lock()
		s.armed = bound
		s.mu.Unlock()
		s.log.Warn("quorum lost while active: the stack must be down within " + max(d.After, 0).Round(time.Millisecond).String() +
			", or the watchdog resets this head")
	case !lost && !armed.IsZero():
		if s.cfg.Watch != nil {
			s.cfg.Watch.Lift(armed)
		}
		s.mu.Lock()
		s.armed = time.Time{}
		s.mu.Unlock()
		s.log.Info("stop bound lifted")
	}
}

// act carries out the decision. Promote and demote run in the
// background, one at a time, never during a shutdown or an operator's
// switchover (a demote for lost quorum excepted: safety first).
func (s *Supervisor) act(ctx context.Context, now time.Time, in decide.Inputs, d decide.Decision, snap heartbeat.Snapshot) {
	if d.Action == decide.SelfFence {
		s.selfFence(d.Reason)
		return
	}
	if d.Action != decide.Promote && d.Action != decide.FencePromote && d.Action != decide.Demote {
		return
	}
	if d.Action == decide.Promote && s.holdForPreferred(now, in) {
		return
	}
	quorumLost := d.Action == decide.Demote && in.Local == ha.Active && !in.PeerSeen && !in.Vote
	s.mu.Lock()
	busy := s.acting != "" || s.cfg.Host.Stopping() || (s.manual > 0 || now.Before(s.retryAt)) && !quorumLost
	if !busy {
		s.acting = "promote"
		if d.Action == decide.Demote {
			s.acting = "demote"
		}
	}
	s.mu.Unlock()
	if busy {
		return
	}
	if d.Action == decide.Demote {
		s.goSafe("demote", func() { s.demote(ctx, in, d) })
		return
	}
	// Announce now, not at the next round: a peer deciding in between
	// would start the service too (DRBD would refuse it, noisily).
	s.hb.SetState(heartbeat.State{Role: ha.Active, Disk: in.Disk, HoldsVote: in.Vote, Epoch: in.Epoch})
	s.goSafe("promote", func() { s.promote(ctx, now, in, d, snap) })
}

// preferredHold bounds how long a head that is not preferred holds back
// from starting the service beside a seen standby peer that is preferred
// but not yet UpToDate: both heads restarted, and the preferred one
// missed the last writes and needs DRBD's resync first. A short resync
// keeps the service on the preferred head, as an operator expects after
// restarting the pair; a peer that cannot catch up (a broken link, a
// long resync) does not keep the pair down longer than this.
const preferredHold = time.Minute

func (s *Supervisor) holdForPreferred(now time.Time, in decide.Inputs) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	catchingUp := false
	switch in.PeerDisk {
	case ha.Outdated, ha.Inconsistent, ha.Consistent, ha.Negotiating, ha.Attaching, ha.DUnknown:
		catchingUp = s.drbdState.Connection != drbd.StandAlone // not a split brain
	}
	if !catchingUp || !in.PeerSeen || in.PeerRole != ha.Standby || in.Preferred {
		s.holdSince = time.Time{}
		return false
	}
	if s.holdSince.IsZero() {
		s.holdSince = now
		s.log.Info(s.peer + " is preferred and its disk is " + string(in.PeerDisk) +
			": waiting up to " + preferredHold.String() + " for it to catch up and start the service")
	}
	return now.Sub(s.holdSince) < preferredHold
}

func (s *Supervisor) finished(err error) {
	s.mu.Lock()
	s.acting = ""
	if err != nil {
		s.retryAt = s.clock.Now().Add(retryAfter)
	}
	s.mu.Unlock()
	s.poke()
}

// promote starts the active stack: after fencing the peer if the
// decision says so, and with the epoch raised when the peer is not seen
// (this head's data becomes the newer line).
func (s *Supervisor) promote(ctx context.Context, decided time.Time, in decide.Inputs, d decide.Decision, snap heartbeat.Snapshot) {
	rc := roleChange{kind: "start", why: d.Reason}
	switch {
	case !in.PeerSeen:
		rc.kind = "takeover"
		rc.start, rc.steps = s.detectSteps(decided, snap)
	case in.PeerRole == ha.None:
		rc.kind = "failover" // the peer yields: it failed, or hands over
	}
	if rc.start.IsZero() {
		rc.start = decided
	}
	var err error
	defer func() { s.finished(err) }()
	t0 := s.clock.Now()
	if d.Action == decide.FencePromote {
		// Once the service is up (or failed to come up), DRBD listens
		// for the peer again after fence dropped it.
		defer func() {
			if rerr := s.cfg.DRBD.Reconnect(ctx); rerr != nil {
				s.log.Warn("DRBD does not listen for the peer again; its monitor reconnects later", "err", rerr)
			}
		}()
		if err = s.fence(ctx); err != nil {
			rc.steps = append(rc.steps, status.FailoverStep{Name: "fence", StartMS: t0.Sub(rc.start).Milliseconds(), MS: s.since(t0), Error: err.Error()})
			s.addFailover(rc, ha.Active, s.clock.Now(), err)
			return
		}
	}
	// A takeover without the peer starts a new line of data (docs/ha.md, "Epochs").
	err = s.setEpoch(rc.kind, func(e, peer uint64) uint64 {
		if !in.PeerSeen {
			return max(e, peer) + 1
		}
		return max(e, peer)
	})
	if d.Action == decide.FencePromote {
		rc.steps = append(rc.steps, status.FailoverStep{Name: "fence", StartMS: t0.Sub(rc.start).Milliseconds(), MS: s.since(t0), Error: errString(err)})
	}
	if err != nil {
		err = fmt.Errorf("cannot record the epoch, so no promotion: %w", err)
		s.addFailover(rc, ha.Active, s.clock.Now(), err)
		return
	}
	if d.AddressAfter > 0 && s.cfg.VIP != nil {
		s.cfg.VIP.HoldUntil(decided.Add(d.AddressAfter))
	}
	actx, cancel := context.WithTimeout(ctx, AcquireBudget)
	defer cancel()
	err = s.acquire(actx, rc)
	if d.Action == decide.FencePromote {
		// A verdict is about one takeover, not a standing licence.
		dc := s.cfg.DRBD.Config()
		os.Remove(drbd.VerdictFile(dc.ConfDir, dc.Resource))
	}
}

// since is the milliseconds from t0 to now.
func (s *Supervisor) since(t0 time.Time) int64 { return s.clock.Now().Sub(t0).Milliseconds() }

// detectSteps are a takeover's first steps: the peer's silence up to the
// dead time, the wait for the vote, and the takeover delay (0 with the
// witness; with a ping target, until the old active is certainly
// stopped). The failover starts at the peer's last heartbeat.
func (s *Supervisor) detectSteps(decided time.Time, snap heartbeat.Snapshot) (time.Time, []status.FailoverStep) {
	last := time.Time{}
	if snap.Peer != nil {
		last = snap.Peer.LastHeard
	}
	s.mu.Lock()
	lost, voted := s.peerLostAt, s.voteAt
	s.mu.Unlock()
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
func (s *Supervisor) fence(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := s.outdatePeer(fctx, "taking over from a silent "+s.peer, s.clock.Now())
	cancel()
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	dc := s.cfg.DRBD.Config()
	v := drbd.Verdict{Peer: s.peer, Says: "down", At: s.clock.Now().UTC()}
	if err := drbd.WriteVerdict(dc.ConfDir, dc.Resource, v); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	s.log.Warn("fencing " + s.peer + ": verdict \"down\" for DRBD's fence-peer handler")
	if err := s.cfg.DRBD.DropPeer(ctx); err != nil {
		// The promotion still works once DRBD notices by itself.
		s.log.Warn("DRBD did not drop the silent peer at once", "err", err)
	}
	return nil
}

// demote stops the active stack. Past a lost quorum a stop that fails
// leaves the stack in an unknown state: the head resets itself.
func (s *Supervisor) demote(ctx context.Context, in decide.Inputs, d decide.Decision) {
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
	defer func() { s.finished(err) }()
	s.mu.Lock()
	frozen := s.drbdState.FrozenByFencing()
	s.mu.Unlock()
	if frozen && quorumLost {
		// Nothing can be written or unmounted, and no frozen write was
		// acknowledged: restarting is the quickest clean stop, and takes
		// the service address down with it.
		s.selfFence("DRBD froze this head's I/O when it lost the peer, and the vote is gone too")
		return
	}
	bound := ReleaseBudget
	if quorumLost {
		bound = max(d.After, time.Second)
	}
	rctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	err = s.release(rctx, rc)
	if err != nil && (quorumLost || frozen) {
		s.selfFence("the stack did not stop (" + err.Error() + ")")
	}
}

// selfFence resets this head at once: it is active without quorum and
// its stack did not stop in time. It stops petting the watchdog first,
// which resets the board should the restart below not happen.
func (s *Supervisor) selfFence(why string) {
	s.boundBy(s.clock.Now())
	s.log.Error("SELF-FENCE: " + why + "; restarting this head now")
	s.cfg.Host.Restart(why)
}

// boundBy bounds the watchdog's petting, if the board has one.
func (s *Supervisor) boundBy(t time.Time) {
	if s.cfg.Watch != nil {
		s.cfg.Watch.BoundBy(t)
	}
}

// voter asks the witness for the vote every interval while the decision
// wants it, and gives it back once when it no longer does.
func (s *Supervisor) voter(ctx context.Context) {
	if s.wc == nil {
		return
	}
	t := time.NewTicker(s.params.Interval)
	defer t.Stop()
	released := true
	for {
		select {
		case <-ctx.Done():
			return // never release here: the stack may still run
		case <-t.C:
		case <-s.voteKick:
		}
		s.voteOnce(ctx, &released)
	}
}

// voteOnce asks for the vote (renews it) while the decision wants it and
// the loop is alive, or gives it back once when the decision no longer
// wants it. A stale loop's head is unsupervised: its lease must lapse,
// so that the peer may take over.
func (s *Supervisor) voteOnce(ctx context.Context, released *bool) {
	rctx, cancel := context.WithTimeout(ctx, s.params.Interval)
	defer cancel()
	var err error
	switch {
	case s.wantVote.Load() && !s.Healthy(s.clock.Now()):
		s.log.Error("the HA loop has not decided for " + s.staleAfter().String() + ": not renewing the vote")
		return
	case s.wantVote.Load():
		_, _, _, err = s.wc.Request(rctx)
		*released = false
	case !*released:
		if err = s.wc.Release(rctx); err == nil {
			*released = true
		}
	}
	s.noteVote(err)
	if err == nil {
		s.poke() // a grant or a loss changes the decision
	}
}

// noteVote logs a witness that stops or starts answering, once.
func (s *Supervisor) noteVote(err error) {
	msg := errString(err)
	s.mu.Lock()
	was := s.voteErr
	s.voteErr = msg
	s.mu.Unlock()
	switch {
	case msg != "" && was == "":
		s.log.Warn("the witness does not answer", "witness", s.tbAddr, "err", err)
	case msg == "" && was != "":
		s.log.Info("the witness answers again", "witness", s.tbAddr)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Escalate is the service supervisor's escalation: a layer failed past
// its migration threshold.
func (s *Supervisor) Escalate(name string, err error) {
	s.mu.Lock()
	s.escalatedAt[name] = s.clock.Now()
	s.mu.Unlock()
	s.log.Error("layer "+name+" failed past its migration threshold", "err", err)
	s.poke()
}

// manualOp marks an operator's role change (a switchover): the loop
// starts no role change of its own meanwhile. It returns the end mark.
func (s *Supervisor) manualOp() func() {
	s.mu.Lock()
	s.manual++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.manual--
		s.mu.Unlock()
		s.poke()
	}
}

// handOver sets (or clears) the switchover flag: the head handing its
// service over yields until the peer is active.
func (s *Supervisor) handOver(on bool) {
	s.mu.Lock()
	if on {
		s.handover = s.clock.Now().Add(handoverFor)
	} else {
		s.handover = time.Time{}
	}
	s.mu.Unlock()
	s.poke()
}

// rememberOutdated records on the state partition that the witness
// holds the peer's data as the only current copy.
func (s *Supervisor) rememberOutdated(now time.Time) {
	line := s.peer + " recorded as the only current copy at " + now.UTC().Format(time.RFC3339) + "\n"
	err := os.MkdirAll(filepath.Dir(s.cfg.OutdatedFile), 0o755)
	if err == nil {
		err = atomicfile.Write(s.cfg.OutdatedFile, []byte(line), 0o644)
	}
	if err != nil {
		s.log.Error("cannot remember that this head's data is outdated", "err", err)
	}
	s.mu.Lock()
	s.markedAt, s.markChanged = now, now
	s.mu.Unlock()
}

// forgetOutdated clears the mark: this head resynced from the peer.
func (s *Supervisor) forgetOutdated() {
	if err := os.Remove(s.cfg.OutdatedFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("cannot clear the outdated mark", "err", err)
		return
	}
	s.mu.Lock()
	s.markedAt, s.markChanged = time.Time{}, s.clock.Now()
	s.mu.Unlock()
	s.log.Info("this head resynced from " + s.peer + ": its data is current again")
}

// setEpoch records the epoch next(epoch, peer's) on the state
// partition first, then in memory. The file is written outside mu.
func (s *Supervisor) setEpoch(why string, next func(epoch, peer uint64) uint64) error {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	s.mu.Lock()
	was := s.epoch
	e := next(s.epoch, s.peerEpoch)
	s.mu.Unlock()
	if e == was {
		return nil
	}
	if err := writeEpoch(s.cfg.EpochFile, e); err != nil {
		s.log.Error("cannot record the epoch", "epoch", e, "err", err)
		return err
	}
	s.mu.Lock()
	s.epoch = e
	s.mu.Unlock()
	s.log.Info("epoch "+strconv.FormatUint(e, 10)+" ("+why+")", "was", was)
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
func (s *Supervisor) addFailover(rc roleChange, role ha.Role, end time.Time, err error) {
	f := status.Failover{Kind: rc.kind, Role: string(role), Reason: rc.why, Start: rc.start, TotalMS: end.Sub(rc.start).Milliseconds(),
		OK: err == nil, Error: errString(err), Steps: rc.steps}
	s.mu.Lock()
	s.failovers = slices.Insert(s.failovers, 0, f)
	if len(s.failovers) > keepFailovers {
		s.failovers = s.failovers[:keepFailovers]
	}
	s.mu.Unlock()
	var b strings.Builder
	for _, st := range f.Steps {
		fmt.Fprintf(&b, " %s=%dms", strings.ReplaceAll(st.Name, " ", "_"), st.MS)
	}
	s.log.Info(fmt.Sprintf("%s → %s in %d ms:%s", f.Kind, role, f.TotalMS, b.String()), "ok", f.OK, "reason", f.Reason)
}

// StatusView is the HA part of `tandem status`.
func (s *Supervisor) StatusView() *status.HA {
	now := s.clock.Now()
	snap := s.hb.Snapshot()
	layers := s.cfg.Layers.Status()
	s.mu.Lock()
	in, d := s.inputs, s.last
	v := &status.HA{
		At: now, Mode: in.Mode.String(), Switchover: in.Switchover, Announce: string(d.Announce), Epoch: s.epoch, Preferred: in.Preferred,
		Decision: status.Decision{Action: d.Action.String(), Reason: d.Reason, Since: s.lastSince},
		Alert:    s.alert,
		Timing: status.Timing{IntervalMS: s.params.Interval.Milliseconds(), DeadTimeMS: s.params.DeadTime.Milliseconds(),
			StopBoundMS: s.params.StopBound.Milliseconds(), WatchdogMS: s.params.WatchdogTimeout.Milliseconds(),
			MarginMS: s.params.Margin.Milliseconds(), TakeoverDelayMS: s.params.TakeoverDelay().Milliseconds(),
			AddressDelayMS: s.params.AddressDelay().Milliseconds()},
		Failovers: slices.Clone(s.failovers),
	}
	voteErr := s.voteErr
	v.Escalated = s.escalatedLocked(now, layers, in.Local == ha.Active)
	s.mu.Unlock()

	held := s.voteHeld()
	switch {
	case snap.Seen && held:
		v.Quorum, v.QuorumBy = true, "peer and "+s.tiebreaker()
	case snap.Seen:
		v.Quorum, v.QuorumBy = true, "peer"
	case held:
		v.Quorum, v.QuorumBy = true, s.tiebreaker()+" vote"
	}
	v.Heartbeat = heartbeatView(snap)
	v.Vote = status.Vote{Tiebreaker: s.tiebreaker(), Address: s.tbAddr, Want: s.wantVote.Load(), Held: held, Error: voteErr}
	switch {
	case s.wc != nil:
		wv := s.wc.Vote()
		v.Vote.Holder, v.Vote.Last, v.Vote.LastAt, v.Vote.Dropped = wv.Holder, wv.Last, wv.LastAt, wv.Dropped
		v.Vote.Writer, v.Vote.Outdated = wv.Writer, wv.Outdated
		if wv.Held {
			v.Vote.ExpiresInMS = wv.Expires.Sub(now).Milliseconds()
		}
	case s.ping != nil:
		ok, perr := s.ping.state()
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
			Malformed: s.Dropped.Malformed, Foreign: s.Dropped.Foreign, Unproven: s.Dropped.Unproven, Stale: s.Dropped.Stale}}
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
