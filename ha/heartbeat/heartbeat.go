// Package heartbeat is the membership layer of the HA supervisor: UDP
// heartbeats between the two heads of a pair over several independent
// paths (the replication bond and the management network), authenticated
// with the heartbeat key, a sub-key of the pair key (site.SubKey) that
// no other role (the witness host in particular) holds.
//
// Each head runs one Endpoint. Every Interval it sends one packet on every
// path; each carries its announced State (role, DRBD disk state, whether
// it holds the witness vote, epoch) and an echo of the newest packet it
// accepted from the peer. The receiver drops and counts forged (bad MAC),
// replayed, stale, unproven, wrong-pair, foreign and malformed packets.
//
// Freshness. Every packet is accepted only with a proof of when it was
// sent, on our own clock: it echoes a packet of ours (sent at s, which we
// remember) and says how long it held that echo (h), so it was sent no
// earlier than s+h. That is its proven send time; a packet whose proven
// send time is older than the dead time is dropped (stale, or unproven
// for a boot not accepted yet). A packet delayed or replayed by an
// attacker keeps the send time it proves, so the packets of a dead peer
// prove nothing past its death, however late they are released. No
// clock sync between the heads is assumed: s is ours, h is a duration.
//
// Two views of the peer come out of it:
//
//   - Alive: some path accepted a packet whose proven send time is within
//     the dead time (per path, and for the peer: alive if any path is). A
//     peer that cannot hear us keeps echoing the last packet of ours it
//     got, with a growing hold, so it stays Alive (one-way contact) as
//     long as we remember that packet (sentRing rounds).
//   - HearsUs: the peer echoed a packet of ours whose own proof, as the
//     peer will judge it, lies within the dead time (its credit).
//
// Seen = Alive and HearsUs is what the decision logic calls "peer seen":
// contact in both directions, the basis of an active head's quorum. Alive
// alone is what holds a standby back from taking over. The two fit
// together: a packet's credit is no later than the proven send time the
// peer computes for it, so whenever a head sees its peer, the peer still
// finds it Alive; a head's Seen ends no later than its peer's Alive, with
// no assumption about delivery delays (docs/ha.md).
//
// Replays. Within one boot of the peer, an anti-replay window over the
// sequence numbers drops duplicates. A packet from a boot ID we have not
// accepted yet (the peer rebooted, or first contact) needs the same proof
// of freshness; replayed packets of an older boot cannot give it, and boot
// IDs we have retired are refused outright. So neither heads' wall clocks
// nor a persistent counter are needed.
package heartbeat

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"sync"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/site"
)

// Path is one independent way between the heads: a local address to bind
// and the peer's address, each with the heartbeat port.
type Path struct {
	Name  string         // e.g. "replication", "management"
	Local netip.AddrPort // bound; the port is ha.heartbeat_port
	Peer  netip.AddrPort // where the peer's Local for this path is
}

// Config configures an Endpoint.
type Config struct {
	Pair string // the pair name; packets of another pair are dropped
	Node string // this head
	Peer string // the other head
	// Key is the pair key, >= ha.MinKeyBytes. Open derives the heartbeat
	// key from it; the pair key itself signs nothing.
	Key []byte
	// Paths, at least one; the design wants two independent ones.
	Paths []Path
	// Interval between send rounds (ha.heartbeat_interval_ms).
	Interval time.Duration
	// DeadTime: silence after which a path, or the peer, counts as dead
	// (ha.dead_time_ms); more than twice Interval.
	DeadTime time.Duration
	Log      *slog.Logger // nil: slog.Default()
}

func (c *Config) check() error {
	var errs []error
	if c.Pair == "" || len(c.Pair) > ha.MaxNameLen {
		errs = append(errs, fmt.Errorf("pair name %q: 1 to %d bytes", c.Pair, ha.MaxNameLen))
	}
	if c.Node == "" || len(c.Node) > ha.MaxNameLen || c.Peer == "" || len(c.Peer) > ha.MaxNameLen {
		errs = append(errs, fmt.Errorf("node %q, peer %q: 1 to %d bytes each", c.Node, c.Peer, ha.MaxNameLen))
	} else if c.Node == c.Peer {
		errs = append(errs, fmt.Errorf("node and peer are both %q", c.Node))
	}
	if len(c.Key) < ha.MinKeyBytes {
		errs = append(errs, fmt.Errorf("pair key is %d bytes, need at least %d", len(c.Key), ha.MinKeyBytes))
	}
	if len(c.Paths) == 0 || len(c.Paths) > math.MaxUint8 {
		errs = append(errs, fmt.Errorf("%d paths; need 1 to 255", len(c.Paths)))
	}
	for i, p := range c.Paths {
		if !p.Local.IsValid() || !p.Peer.IsValid() || p.Peer.Port() == 0 {
			errs = append(errs, fmt.Errorf("path %d (%s): local %v, peer %v: need addresses and a peer port", i, p.Name, p.Local, p.Peer))
		}
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v must be positive", c.Interval))
	}
	if c.DeadTime <= 2*c.Interval {
		errs = append(errs, fmt.Errorf("dead time %v must exceed twice the interval %v", c.DeadTime, c.Interval))
	}
	return errors.Join(errs...)
}

// State is what this head announces in every heartbeat.
type State struct {
	Role      ha.Role      `json:"role"`
	Disk      ha.DiskState `json:"disk"`
	HoldsVote bool         `json:"holds_vote"`
	Epoch     uint64       `json:"epoch"`
	// Outdated: DRBD's metadata on the sender marks its disk Outdated
	// (drbdadm outdate): it cannot be promoted before a resync, even
	// after a reboot. Disk may say Outdated for softer reasons.
	Outdated bool `json:"outdated,omitempty"`
}

// sentRing is how many of our send rounds are remembered, to judge the
// peer's echoes. A peer that cannot hear us echoes an ever older packet
// of ours, so this bounds how long one-way contact is recognised: 4096
// rounds, 34 minutes at the default interval.
const sentRing = 4096

// sentRec is one of our send rounds; all its packets share it.
type sentRec struct {
	tick uint64
	at   time.Time // when we sent it
	// credit: the earliest proven send time the peer can compute for
	// these packets (the proof of what they echo plus their hold); zero
	// while they echo nothing we proved.
	credit time.Time
}

// driftDiv discounts a hold measured on the peer's clock by 1/driftDiv
// (1000 ppm, beyond any working oscillator), so that a fast peer clock
// cannot make a packet look younger than it is.
const driftDiv = 1000

func discount(hold time.Duration) time.Duration { return hold - hold/driftDiv }

type pathState struct {
	Path
	conn       *net.UDPConn
	lastHeard  time.Time
	received   uint64
	sent       uint64
	sendErrors uint64
	recent     uint64 // bit i: the peer's tick (maxTick - i) arrived here
	rtt        time.Duration
	gap        gapTracker // within the peer's current boot
	alive      bool       // as of the last evaluation, for transition logs
}

// gapTracker keeps the longest gap between consecutive accepted packets
// (of one path, or of the peer on any path): the longest silence a live
// peer showed, the evidence for choosing the dead time. Its zero value has
// seen no packet; the silence before the first packet does not count.
type gapTracker struct {
	last    time.Time     // the newest packet's arrival; zero: none yet
	longest time.Duration // the longest gap so far
}

// mark records a packet that arrived at now and reports whether its gap
// from the previous one is a new longest. A packet timed before the newest
// (the paths' receivers raced for the lock) only ends a shorter gap than
// the one already counted, so it changes nothing.
func (g *gapTracker) mark(now time.Time) bool {
	if !now.After(g.last) {
		return false
	}
	last := g.last
	g.last = now
	if last.IsZero() {
		return false
	}
	if d := now.Sub(last); d > g.longest {
		g.longest = d
		return true
	}
	return false
}

// peerState is what we know about the peer's current boot.
type peerState struct {
	has        bool
	boot       BootID
	win        window
	retired    []BootID
	since      time.Time // current boot accepted at
	boots      int       // boot changes accepted, first contact included
	last       packet    // newest accepted (highest sequence number)
	lastAt     time.Time // when last arrived
	accepted   time.Time // the newest proven send time of this boot's packets
	heardUsAt  time.Time // the newest credit of a packet of ours it echoed
	rtt        time.Duration
	firstTick  uint64
	maxTick    uint64
	echoBoot   BootID // what we echo back: the newest accepted, or a
	echoSeq    uint64 // candidate boot while none is alive
	echoRecvAt time.Time
	echoProof  time.Time  // the echoed packet's proven send time; zero: a candidate
	gap        gapTracker // between this boot's packets, on any path
	seen       bool       // as of the last evaluation, for transition logs
}

// Endpoint is one head's side of the heartbeat. Open binds the paths, Run
// drives them; the query methods are safe for concurrent use at any time.
type Endpoint struct {
	cfg  Config
	key  []byte // the heartbeat key, derived from cfg.Key
	log  *slog.Logger
	boot BootID
	kick chan struct{}

	mu      sync.Mutex
	state   State
	seq     uint64
	tick    uint64
	sent    [sentRing]sentRec
	paths   []*pathState
	peer    peerState
	drops   Counters
	changed chan struct{}
	ran     bool
}

// Open checks cfg, picks a fresh boot ID and binds every path's socket,
// so that a bad address fails here, before Run.
func Open(cfg Config) (*Endpoint, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	key, err := site.SubKey(cfg.Key, cfg.Pair, site.PurposeHeartbeat, "")
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	e := &Endpoint{cfg: cfg, key: key, log: cfg.Log, kick: make(chan struct{}, 1), changed: make(chan struct{}),
		state: State{Role: ha.None, Disk: ha.DUnknown}}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.log = e.log.With("component", "heartbeat")
	if _, err := rand.Read(e.boot[:]); err != nil {
		return nil, fmt.Errorf("heartbeat: boot ID: %w", err)
	}
	for i, p := range cfg.Paths {
		network := "udp4"
		if p.Local.Addr().Is6() && !p.Local.Addr().Is4In6() {
			network = "udp6"
		}
		conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(p.Local))
		if err != nil {
			e.closeConns()
			return nil, fmt.Errorf("heartbeat: path %d (%s): %w", i, p.Name, err)
		}
		ps := &pathState{Path: p, conn: conn}
		ps.Local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
		e.paths = append(e.paths, ps)
	}
	return e, nil
}

func (e *Endpoint) closeConns() {
	for _, p := range e.paths {
		p.conn.Close()
	}
}

// BootID is this endpoint's boot ID.
func (e *Endpoint) BootID() BootID { return e.boot }

// LocalAddr returns path i's bound address (useful with port 0).
func (e *Endpoint) LocalAddr(i int) netip.AddrPort { return e.paths[i].Local }

// SetState changes what this head announces; a change is sent at once
// rather than at the next interval.
func (e *Endpoint) SetState(s State) {
	e.mu.Lock()
	changed := s != e.state
	e.state = s
	e.mu.Unlock()
	if changed {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

// Run sends and receives until ctx ends, then closes the sockets and
// returns nil. An Endpoint runs once.
func (e *Endpoint) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.ran {
		e.mu.Unlock()
		return errors.New("heartbeat: endpoint already ran")
	}
	e.ran = true
	e.mu.Unlock()
	e.log.Info("heartbeat: running", "node", e.cfg.Node, "peer", e.cfg.Peer, "boot", e.boot.String(),
		"paths", len(e.paths), "interval", e.cfg.Interval, "dead_time", e.cfg.DeadTime)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range e.paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.receive(ctx, i)
		}()
	}
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	e.sendRound()
	for {
		select {
		case <-ctx.Done():
			e.closeConns()
			wg.Wait()
			return nil
		case <-t.C:
		case <-e.kick:
		}
		e.sendRound()
		e.evaluate()
	}
}

// sendRound sends one packet on every path.
func (e *Endpoint) sendRound() {
	type out struct {
		p   *pathState
		buf []byte
	}
	var outs []out
	e.mu.Lock()
	bufs := e.roundLocked(time.Now())
	for i, p := range e.paths {
		if bufs[i] != nil {
			outs = append(outs, out{p, bufs[i]})
		}
	}
	e.mu.Unlock()
	for _, o := range outs {
		_, err := o.p.conn.WriteToUDPAddrPort(o.buf, o.p.Peer)
		e.mu.Lock()
		if err != nil {
			o.p.sendErrors++
		} else {
			o.p.sent++
		}
		e.mu.Unlock()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			e.log.Debug("heartbeat: send", "path", o.p.Name, "err", err)
		}
	}
}

// roundLocked builds one send round at now: one packet per path (nil if
// it cannot be encoded), and remembers the round to judge echoes of it.
// Every path spends a sequence number even when its packet fails, so the
// round of a sequence number is known (sentLocked).
func (e *Endpoint) roundLocked(now time.Time) [][]byte {
	e.tick++
	var hold uint32
	if !e.peer.echoRecvAt.IsZero() {
		hold = uint32(min(max(now.Sub(e.peer.echoRecvAt).Microseconds(), 0), math.MaxUint32))
	}
	rec := sentRec{tick: e.tick, at: now}
	if !e.peer.echoProof.IsZero() {
		// What the peer will compute: its send time of the echoed packet
		// (no earlier than our proof of it) plus the discounted hold.
		rec.credit = e.peer.echoProof.Add(discount(time.Duration(hold) * time.Microsecond))
	}
	e.sent[e.tick%sentRing] = rec
	bufs := make([][]byte, len(e.paths))
	for i := range e.paths {
		e.seq++
		pk := packet{
			Role: e.state.Role, HoldsVote: e.state.HoldsVote, Outdated: e.state.Outdated, Path: uint8(i),
			Boot: e.boot, Seq: e.seq, Tick: e.tick, SentUnix: now.UnixNano(), Epoch: e.state.Epoch,
			EchoBoot: e.peer.echoBoot, EchoSeq: e.peer.echoSeq, EchoHold: hold,
			Pair: e.cfg.Pair, Node: e.cfg.Node, Disk: string(e.state.Disk),
		}
		buf, err := appendPacket(make([]byte, 0, MaxPacket), &pk, e.key)
		if err != nil {
			// Only a state this package cannot encode gets here.
			e.log.Error("heartbeat: cannot encode", "err", err)
			continue
		}
		bufs[i] = buf
	}
	return bufs
}

func (e *Endpoint) receive(ctx context.Context, i int) {
	p := e.paths[i]
	buf := make([]byte, MaxPacket+1)
	for {
		n, src, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Debug("heartbeat: receive", "path", p.Name, "err", err)
			continue
		}
		e.handle(p, src, buf[:n], time.Now())
	}
}

// handle judges one datagram that arrived on path p at now.
func (e *Endpoint) handle(p *pathState, src netip.AddrPort, b []byte, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer e.notifyLocked()
	if src.Addr().Unmap() != p.Peer.Addr().Unmap() || src.Port() != p.Peer.Port() {
		e.drop(&e.drops.Foreign, "foreign", p, fmt.Sprintf("from %v, expected %v", src, p.Peer))
		return
	}
	pk, err := parsePacket(b, e.cfg.Pair, e.key)
	switch {
	case errors.Is(err, errMalformed):
		e.drop(&e.drops.Malformed, "malformed", p, fmt.Sprintf("%d bytes", len(b)))
		return
	case errors.Is(err, errWrongPair):
		e.drop(&e.drops.WrongPair, "wrong pair", p, "another pair's heartbeat reaches this port")
		return
	case err != nil:
		e.drop(&e.drops.Forged, "forged", p, "bad MAC: not signed with this pair's heartbeat key")
		return
	}
	if pk.Node != e.cfg.Peer {
		e.drop(&e.drops.Foreign, "foreign", p, fmt.Sprintf("node %q is not the peer %q", pk.Node, e.cfg.Peer))
		return
	}

	peer := &e.peer
	// Liveness counts only what a packet proves about its send time, not
	// when it arrived: an attacker may hold packets back for long.
	proof, rec, proven := e.proofLocked(pk, now)
	fresh := proven && now.Sub(proof) <= e.cfg.DeadTime
	switch {
	case peer.has && pk.Boot == peer.boot:
		if !peer.win.check(pk.Seq) {
			e.drop(&e.drops.Replayed, "replayed", p, fmt.Sprintf("seq %d already seen or too old", pk.Seq))
			return
		}
		if !fresh {
			why := "echoes no packet of ours that we remember"
			if proven {
				why = fmt.Sprintf("proves a send time %v old, dead time %v", now.Sub(proof).Round(time.Millisecond), e.cfg.DeadTime)
			}
			e.drop(&e.drops.Stale, "stale", p, fmt.Sprintf("seq %d %s", pk.Seq, why))
			return
		}
		peer.win.accept(pk.Seq)
	case isRetired(peer.retired, pk.Boot):
		e.drop(&e.drops.Replayed, "replayed", p, "packet of an ended boot of the peer")
		return
	default:
		// A boot we have not accepted: the peer restarted, or first
		// contact, or a replay of a boot we never saw.
		if !fresh {
			e.drops.Unproven++
			// Echo it back so that the peer can prove itself next time,
			// unless a current boot is alive (then a replay must not
			// disturb what we echo).
			if !peer.has || now.Sub(peer.accepted) > e.cfg.DeadTime {
				peer.echoBoot, peer.echoSeq, peer.echoRecvAt, peer.echoProof = pk.Boot, pk.Seq, now, time.Time{}
			}
			return
		}
		if peer.has {
			peer.retired = retire(peer.retired, peer.boot)
			e.log.Warn("heartbeat: peer restarted", "peer", e.cfg.Peer, "old_boot", peer.boot.String(), "boot", pk.Boot.String(), "path", p.Name)
		} else {
			e.log.Info("heartbeat: peer found", "peer", e.cfg.Peer, "boot", pk.Boot.String(), "path", p.Name)
		}
		*peer = peerState{has: true, boot: pk.Boot, retired: peer.retired, since: now, boots: peer.boots + 1,
			heardUsAt: peer.heardUsAt, rtt: peer.rtt, firstTick: pk.Tick, maxTick: pk.Tick, seen: peer.seen}
		peer.win.accept(pk.Seq)
		for _, q := range e.paths {
			q.recent = 0
			q.gap = gapTracker{} // gaps count within one boot of the peer
		}
	}

	// Accepted. The packets of one path may arrive out of order, so the
	// newest proof wins.
	if proof.After(peer.accepted) {
		peer.accepted = proof
	}
	if proof.After(p.lastHeard) {
		p.lastHeard = proof
	}
	p.received++
	// A new longest gap past two intervals (a round lost) is logged: the
	// console then shows how close a live peer came to the dead time.
	if p.gap.mark(now) && p.gap.longest > 2*e.cfg.Interval {
		e.log.Info("heartbeat: longest gap on a path", "path", p.Name, "gap", p.gap.longest, "dead_time", e.cfg.DeadTime)
	}
	if peer.gap.mark(now) && peer.gap.longest > 2*e.cfg.Interval {
		e.log.Info("heartbeat: longest gap from the peer", "peer", e.cfg.Peer, "gap", peer.gap.longest, "dead_time", e.cfg.DeadTime)
	}
	if pk.Tick > peer.maxTick {
		shift := pk.Tick - peer.maxTick
		for _, q := range e.paths {
			if shift >= 64 {
				q.recent = 0
			} else {
				q.recent <<= shift
			}
		}
		peer.maxTick = pk.Tick
	}
	if d := peer.maxTick - pk.Tick; d < 64 {
		p.recent |= 1 << d
	}
	if pk.Seq >= peer.win.top { // the newest: its state is current
		peer.last, peer.lastAt = *pk, now
		peer.echoBoot, peer.echoSeq, peer.echoRecvAt, peer.echoProof = pk.Boot, pk.Seq, now, proof
	}
	if rec.credit.After(peer.heardUsAt) {
		peer.heardUsAt = rec.credit
	}
	rtt := now.Sub(rec.at) - time.Duration(pk.EchoHold)*time.Microsecond
	if rtt < 0 {
		rtt = 0
	}
	peer.rtt, p.rtt = rtt, rtt
	e.evaluateLocked(now)
}

// proofLocked returns pk's proven send time on our clock: our send time
// of the packet it echoes plus its (discounted) hold, capped at now. ok
// is false when pk echoes no packet of ours that we remember.
func (e *Endpoint) proofLocked(pk *packet, now time.Time) (at time.Time, rec sentRec, ok bool) {
	rec, ok = e.sentLocked(pk.EchoBoot, pk.EchoSeq)
	if !ok {
		return time.Time{}, rec, false
	}
	at = rec.at.Add(discount(time.Duration(pk.EchoHold) * time.Microsecond))
	if at.After(now) {
		at = now
	}
	return at, rec, true
}

// sentLocked returns the record of the round that sent our packet (boot,
// seq), if it is ours and recent enough to be remembered.
func (e *Endpoint) sentLocked(boot BootID, seq uint64) (sentRec, bool) {
	if boot != e.boot || seq == 0 {
		return sentRec{}, false
	}
	tick := (seq-1)/uint64(len(e.paths)) + 1
	if tick > e.tick {
		return sentRec{}, false
	}
	r := e.sent[tick%sentRing]
	return r, r.tick == tick
}

func isRetired(list []BootID, id BootID) bool {
	for _, r := range list {
		if r == id {
			return true
		}
	}
	return false
}

// drop counts a refused packet; the first of each kind is logged as a
// warning (a misconfiguration or an attack), the rest at debug level.
func (e *Endpoint) drop(counter *uint64, kind string, p *pathState, why string) {
	*counter++
	level := slog.LevelDebug
	if *counter == 1 {
		level = slog.LevelWarn
	}
	e.log.Log(context.Background(), level, "heartbeat: dropped "+kind+" packet", "path", p.Name, "why", why, "count", *counter)
}

// evaluate logs transitions of path and peer liveness (a path or the peer
// going dead is a timeout, not an event, so Run calls this every round)
// and wakes the waiters.
func (e *Endpoint) evaluate() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evaluateLocked(time.Now())
	e.notifyLocked()
}

func (e *Endpoint) evaluateLocked(now time.Time) {
	d := e.cfg.DeadTime
	for _, p := range e.paths {
		alive := !p.lastHeard.IsZero() && now.Sub(p.lastHeard) <= d
		if alive != p.alive {
			p.alive = alive
			if alive {
				e.log.Info("heartbeat: path up", "path", p.Name, "peer", p.Peer.String())
			} else {
				e.log.Warn("heartbeat: path down", "path", p.Name, "peer", p.Peer.String(), "silent_for", now.Sub(p.lastHeard).Round(time.Millisecond))
			}
		}
	}
	seen := e.seenLocked(now, d)
	if seen != e.peer.seen {
		e.peer.seen = seen
		if seen {
			e.log.Info("heartbeat: peer seen", "peer", e.cfg.Peer)
		} else {
			e.log.Warn("heartbeat: peer lost", "peer", e.cfg.Peer, "alive", e.aliveLocked(now, d), "hears_us", e.hearsUsLocked(now, d))
		}
	}
}

func (e *Endpoint) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *Endpoint) aliveLocked(now time.Time, d time.Duration) bool {
	for _, p := range e.paths {
		if !p.lastHeard.IsZero() && now.Sub(p.lastHeard) <= d {
			return true
		}
	}
	return false
}

func (e *Endpoint) hearsUsLocked(now time.Time, d time.Duration) bool {
	return e.peer.has && !e.peer.heardUsAt.IsZero() && now.Sub(e.peer.heardUsAt) <= d
}

func (e *Endpoint) seenLocked(now time.Time, d time.Duration) bool {
	return e.aliveLocked(now, d) && e.hearsUsLocked(now, d)
}

// Alive reports whether any path accepted a packet from the peer within
// dead.
func (e *Endpoint) Alive(dead time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.aliveLocked(time.Now(), dead)
}

// Seen reports contact in both directions within the configured dead
// time: the peer is alive and echoed a packet we sent within it. This is
// "peer seen" for the decision logic.
func (e *Endpoint) Seen() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seenLocked(time.Now(), e.cfg.DeadTime)
}

// Changed returns a channel that is closed at the next change: a packet
// handled (accepted or dropped) or a send round (liveness is re-judged
// then). Take the channel before reading the state to miss nothing; Await
// does that.
func (e *Endpoint) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// Await returns the first snapshot for which cond holds, or ctx's error.
func (e *Endpoint) Await(ctx context.Context, cond func(Snapshot) bool) (Snapshot, error) {
	for {
		ch := e.Changed()
		s := e.Snapshot()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-ch:
		}
	}
}

// Duration prints as "1.5s" in JSON.
type Duration time.Duration

// MarshalText renders d like time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Counters are the packets refused, by reason.
type Counters struct {
	// Forged: right pair name, wrong MAC (not signed with the heartbeat key).
	Forged uint64 `json:"forged"`
	// Replayed: a sequence number already seen or below the window, or a
	// packet of one of the peer's ended boots.
	Replayed uint64 `json:"replayed"`
	// WrongPair: another pair's heartbeat (a cabling or config mistake).
	WrongPair uint64 `json:"wrong_pair"`
	// Malformed: not a Tandem heartbeat of this version.
	Malformed uint64 `json:"malformed"`
	// Foreign: from an address other than the path's peer address, or
	// signed by a node other than the peer (e.g. our own, reflected).
	Foreign uint64 `json:"foreign"`
	// Unproven: authentic, but from a boot of the peer we have not
	// accepted yet and not (yet) echoing a recent packet of ours. A few
	// at every peer start are normal: the handshake takes one round trip.
	Unproven uint64 `json:"unproven"`
	// Stale: authentic, of the peer's current boot and not seen before,
	// but it cannot prove it was sent within the dead time: held back on
	// the way (an attack, or a path slower than the dead time), or from
	// before the peer heard us.
	Stale uint64 `json:"stale"`
}

// PathStatus is one path's health.
type PathStatus struct {
	Name      string    `json:"name"`
	Local     string    `json:"local"`
	Peer      string    `json:"peer"`
	Alive     bool      `json:"alive"`               // heard within the dead time
	LastHeard time.Time `json:"last_heard,omitzero"` // see PeerStatus
	Received  uint64    `json:"received"`
	Sent      uint64    `json:"sent"`
	SendErrs  uint64    `json:"send_errors"`
	// Loss is the share of the peer's last (up to) 64 send rounds that
	// did not arrive on this path, 0 to 1.
	Loss float64  `json:"loss"`
	RTT  Duration `json:"rtt,omitzero"`
	// LongestGap is the longest time between two consecutive packets
	// accepted on this path within the peer's current boot (the silence
	// before the first one does not count).
	LongestGap Duration `json:"longest_gap,omitzero"`
}

// PeerStatus is the peer's newest announced state. LastHeard (here and
// per path) is the newest proven send time of an accepted packet, on our
// clock, about a round trip before it arrived: the peer was alive then.
// Alive ends at LastHeard plus the dead time, however late packets come.
type PeerStatus struct {
	Boot      BootID    `json:"boot"`
	Since     time.Time `json:"since"` // this boot accepted at
	Boots     int       `json:"boots"` // boots accepted since we started
	State     State     `json:"state"`
	SentAt    time.Time `json:"sent_at"`    // the peer's clock, informational
	LastHeard time.Time `json:"last_heard"` // proven; see above
	// HeardUs: the newest credit of a packet of ours the peer echoed: it
	// is no later than our send time of that packet, nor than the proven
	// send time the peer computes for it (so the peer finds us Alive until
	// HeardUs plus the dead time). State was sent after the peer received
	// that packet, so it is no older than this, on our clock and with no
	// bound on delays.
	HeardUs time.Time `json:"heard_us,omitzero"`
	// LongestGap is the longest time between two consecutive packets of
	// this boot accepted on any path: the longest the peer went unheard
	// while alive. Compare with the dead time.
	LongestGap Duration `json:"longest_gap,omitzero"`
}

// Snapshot is the heartbeat's status, JSON-friendly.
type Snapshot struct {
	At       time.Time `json:"at"`
	Node     string    `json:"node"`
	PeerName string    `json:"peer_name"`
	Boot     BootID    `json:"boot"`
	DeadTime Duration  `json:"dead_time"`
	State    State     `json:"state"` // what we announce
	// Alive: some path accepted a packet that proves it was sent within
	// the dead time.
	Alive bool `json:"alive"`
	// HearsUs: the peer echoed a packet of ours whose credit is within
	// the dead time (PeerStatus.HeardUs).
	HearsUs bool `json:"hears_us"`
	// Seen = Alive && HearsUs: "peer seen" for the decision logic.
	Seen    bool         `json:"seen"`
	Peer    *PeerStatus  `json:"peer,omitempty"`
	RTT     Duration     `json:"rtt,omitzero"`
	Paths   []PathStatus `json:"paths"`
	Dropped Counters     `json:"dropped"`
}

// Snapshot returns the current status.
func (e *Endpoint) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	d := e.cfg.DeadTime
	s := Snapshot{
		At: now, Node: e.cfg.Node, PeerName: e.cfg.Peer, Boot: e.boot, DeadTime: Duration(d), State: e.state,
		Alive: e.aliveLocked(now, d), HearsUs: e.hearsUsLocked(now, d), Seen: e.seenLocked(now, d),
		RTT: Duration(e.peer.rtt), Dropped: e.drops,
	}
	if e.peer.has {
		l := e.peer.last
		s.Peer = &PeerStatus{
			Boot: e.peer.boot, Since: e.peer.since, Boots: e.peer.boots,
			State:  State{Role: l.Role, Disk: ha.DiskState(l.Disk), HoldsVote: l.HoldsVote, Epoch: l.Epoch, Outdated: l.Outdated},
			SentAt: time.Unix(0, l.SentUnix), LastHeard: e.peer.accepted, HeardUs: e.peer.heardUsAt, LongestGap: Duration(e.peer.gap.longest),
		}
	}
	expected := uint64(0)
	if e.peer.has {
		expected = min(64, e.peer.maxTick-e.peer.firstTick+1)
	}
	for _, p := range e.paths {
		ps := PathStatus{
			Name: p.Name, Local: p.Local.String(), Peer: p.Peer.String(),
			Alive: !p.lastHeard.IsZero() && now.Sub(p.lastHeard) <= d, LastHeard: p.lastHeard,
			Received: p.received, Sent: p.sent, SendErrs: p.sendErrors, RTT: Duration(p.rtt),
			LongestGap: Duration(p.gap.longest),
		}
		if expected > 0 {
			mask := uint64(math.MaxUint64)
			if expected < 64 {
				mask = 1<<expected - 1
			}
			ps.Loss = 1 - float64(bits.OnesCount64(p.recent&mask))/float64(expected)
		}
		s.Paths = append(s.Paths, ps)
	}
	return s
}
