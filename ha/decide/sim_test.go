package decide

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
)

// A discrete-time simulation of a pair: two heads running Machine, the
// heartbeat's mutual "seen" rule (echo-based, as in ha/heartbeat), a
// witness leasing its vote and recording which head wrote alone, DRBD
// (a connection over the replication link, noticed lost after a per-head
// delay; a primary that loses it freezes until the witness records it as
// the writer: resource-and-stonith, or until the peer announces that it
// outdated its own disk: a standby that hears the active peer after its
// DRBD lost it marks its disk Outdated, as DRBD's outdate-peer daemon
// does), one-way delays, link cuts in any direction, crashes, and stops
// that take long or hang until the watchdog resets the head. Every active
// head writes every step. It checks what the safety argument in
// docs/ha.md promises: never two heads writing at once, no head promoted
// without every write a client was told is done, and no split brain.

const (
	simStep  = 50 * time.Millisecond
	simDelay = 100 * time.Millisecond // one way, heartbeat and witness
	simLease = 9 * time.Second
	// simConnect: the link must be up this long before DRBD connects.
	simConnect = time.Second
	hang       = time.Duration(1 << 62)
)

var simParams = Params{Interval: 500 * time.Millisecond, DeadTime: 3 * time.Second, StopBound: 20 * time.Second,
	WatchdogTimeout: 30 * time.Second, Margin: time.Second}

type scenario struct {
	name string
	hb   func(from, to int, t time.Duration) bool // heartbeat link up
	wit  func(head int, t time.Duration) bool     // witness reachable (both ways)
	// rep: DRBD's replication link up (nil: DRBD runs over the heartbeat
	// link, up while both directions are).
	rep func(t time.Duration) bool
	// crash is when a head dies (0: never); stop how long its stop takes;
	// detect how long its DRBD takes to notice a lost connection (0: 6 s).
	crash  [2]time.Duration
	stop   [2]time.Duration
	detect [2]time.Duration
	end    time.Duration
}

type simHead struct {
	m         *Machine
	role      ha.Role
	dead      bool
	stopping  bool
	stopEnd   time.Duration
	resetAt   time.Duration // watchdog fires (0: not armed)
	announce  ha.Role
	wantVote  bool
	expiry    time.Duration // own view of the lease
	lastHeard time.Duration
	heardUsAt time.Duration // our send time of the newest packet the peer echoed
	lastGot   time.Duration // send time of the newest packet from the peer (what we echo)
	peerRole  ha.Role
	epoch     uint64
	peerEpoch uint64
	activeAt  []time.Duration // promotions, for the report
	// The service address: raised once active and not before addrAfter
	// (Decision.AddressAfter); dropped first when the stop begins.
	addrAfter time.Duration
	addr      bool

	// DRBD
	conn     bool          // this head's DRBD counts the peer as connected
	frozen   bool          // primary, I/O frozen by fencing
	fenceAt  time.Duration // last request to the witness to record us as writer
	promote  bool          // a promotion waits for the witness's record
	data     []int         // the writes this head's disk holds, in order
	outdated bool          // the witness denied us: the peer is the writer
	lostAt   time.Duration // when this head's DRBD last lost the peer
	// diskOutdated: this head marked its own disk Outdated in DRBD's
	// metadata (drbdadm outdate) because it heard the active peer after
	// its DRBD lost it. It survives restarts; only a resync from the peer
	// clears it. The head announces it in every heartbeat.
	diskOutdated     bool
	peerDiskOutdated bool // the peer announced diskOutdated in its newest heartbeat
	// wasActive: this head was active (or starting, or stopping) since
	// its DRBD lost the peer; its disk may hold writes the peer lacks, and
	// it must not outdate itself (init's replicaWatch has the same rule).
	wasActive bool
}

type simMsg struct {
	at   time.Duration // delivery
	to   int           // head, or -1: the witness
	from int
	// heartbeat
	sent, echo   time.Duration
	role         ha.Role
	epoch        uint64
	diskOutdated bool
	// witness
	vote, release, granted bool
	outdate, clear         bool // record the sender as the writer; lift the record
	outdated               bool // answer: another head is the writer
}

type simResult struct {
	active    [2][]time.Duration
	fail      string
	trace     []string
	writes    int
	lastWrite [2]time.Duration // each head's last write (-1 h: none)
}

// prefix says whether a is a prefix of b.
func prefix(a, b []int) bool { return len(a) <= len(b) && slices.Equal(a, b[:len(a)]) }

func simulate(sc scenario) simResult {
	const never = -time.Hour
	var hs [2]*simHead
	for i := range hs {
		m, err := NewMachine(simParams)
		if err != nil {
			panic(err)
		}
		// The pair starts connected, as after its stacks came up.
		hs[i] = &simHead{m: m, role: ha.Standby, lastHeard: never, heardUsAt: never, lastGot: never, expiry: never, fenceAt: never, conn: true}
	}
	var res simResult
	var queue []simMsg
	holder, holderExp, writer := -1, never, -1 // the witness
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	logf := func(t time.Duration, f string, a ...any) {
		res.trace = append(res.trace, fmt.Sprintf("%8.2fs ", t.Seconds())+fmt.Sprintf(f, a...))
	}
	failf := func(t time.Duration, f string, a ...any) {
		if res.fail == "" {
			res.fail = fmt.Sprintf("%v: ", t) + fmt.Sprintf(f, a...)
		}
	}
	detect := func(i int) time.Duration {
		if sc.detect[i] == 0 {
			return 6 * time.Second
		}
		return sc.detect[i]
	}
	// DRBD's link: the replication link, or without one the heartbeat's.
	link := func(t time.Duration) bool {
		if hs[0].dead || hs[1].dead {
			return false
		}
		if sc.rep != nil {
			return sc.rep(t)
		}
		return sc.hb(0, 1, t) && sc.hb(1, 0, t)
	}
	res.lastWrite = [2]time.Duration{never, never}
	var linkUpSince, linkDownSince time.Duration = 0, never
	nextWrite := 0
	for t := time.Duration(0); t <= sc.end; t += simStep {
		// Deliver.
		var later []simMsg
		for _, msg := range queue {
			if msg.at > t {
				later = append(later, msg)
				continue
			}
			switch {
			case msg.to < 0: // at the witness
				if holder >= 0 && t >= holderExp {
					holder = -1
				}
				ans := simMsg{at: t + simDelay, to: msg.from, from: -1, vote: true, sent: msg.sent}
				switch {
				case msg.clear:
					writer = -1
					continue
				case msg.release:
					if holder == msg.from {
						holder = -1
					}
					continue
				case writer >= 0 && writer != msg.from:
					ans.outdated = true
				case msg.outdate:
					if holder == msg.from {
						holderExp, writer, ans.granted, ans.outdate = t+simLease, msg.from, true, true
					}
				case holder < 0 || holder == msg.from:
					holder, holderExp, ans.granted = msg.from, t+simLease, true
				}
				if sc.wit(msg.from, t) {
					later = append(later, ans)
				}
			case msg.vote: // a witness answer at a head
				h := hs[msg.to]
				if h.dead {
					continue
				}
				h.outdated = msg.outdated
				if msg.granted {
					if exp := msg.sent + simLease - simLease/10; exp > h.expiry {
						h.expiry = exp
					}
				} else {
					h.expiry = never
				}
				switch {
				case msg.outdate && h.frozen:
					h.frozen = false
					logf(t, "head %d: the witness records it as the writer; I/O thaws", msg.to)
				case msg.outdate && h.promote && h.role != ha.Active:
					h.promote, h.role = false, ha.Active
					h.epoch = max(h.epoch, h.peerEpoch) + 1
					h.activeAt = append(h.activeAt, t)
					logf(t, "head %d promotes, recorded as the writer", msg.to)
				}
			default: // a heartbeat
				h := hs[msg.to]
				if h.dead {
					continue
				}
				h.lastHeard = t
				h.peerRole, h.peerEpoch = msg.role, msg.epoch
				h.peerDiskOutdated = msg.diskOutdated
				h.lastGot = max(h.lastGot, msg.sent)
				if msg.echo > h.heardUsAt {
					h.heardUsAt = msg.echo
				}
				// A standby that hears the active peer, in a packet sent
				// more than an interval after its DRBD lost it, knows the
				// peer went on serving and may write without it: it
				// outdates its own disk (drbdadm outdate). A head whose
				// promotion is under way counts as active (the loop's
				// own rule: starting counts as active). A head that was
				// itself active and wrote since the loss must not: its
				// disk holds writes the peer lacks (the peer may be an
				// old active still frozen, or hung in its stop, and
				// announcing active), and the resync onto an outdated
				// disk would drop them.
				if !h.diskOutdated && h.role != ha.Active && !h.promote && !h.conn && !h.wasActive &&
					msg.role == ha.Active && msg.sent > h.lostAt+simParams.Interval {
					h.diskOutdated = true
					logf(t, "head %d: outdates its own disk (heard the active peer after DRBD lost it)", msg.to)
				}
				// A frozen primary thaws once the peer, heard now,
				// announces its disk outdated: it cannot serve without
				// this head's writes before it has resynced from it.
				if h.frozen && msg.diskOutdated {
					h.frozen = false
					logf(t, "head %d: the peer announces its disk outdated; I/O thaws", msg.to)
				}
			}
		}
		queue = later

		// DRBD's connection.
		if link(t) {
			if linkDownSince != never {
				linkDownSince, linkUpSince = never, t
			}
		} else if linkDownSince == never {
			linkDownSince = t
		}
		for i, h := range hs {
			if h.conn && linkDownSince != never && t-linkDownSince >= detect(i) {
				h.conn, h.lostAt = false, t
				logf(t, "head %d: DRBD lost the peer", i)
				if h.role == ha.Active {
					h.frozen = true
				}
			}
		}
		a, b := hs[0], hs[1]
		if !a.conn && !b.conn && linkDownSince == never && t-linkUpSince >= simConnect && !(a.role == ha.Active && b.role == ha.Active) {
			// DRBD connects and resyncs from the head with the newer data,
			// or onto the one whose disk is marked Outdated (DRBD goes by
			// that mark, not by the data: were the outdated disk the
			// newer, its writes would be lost, and the prefix check below
			// catches that); a primary never becomes the target (it
			// refuses).
			src, dst := a, b
			if a.diskOutdated != b.diskOutdated && a.diskOutdated || a.diskOutdated == b.diskOutdated && len(b.data) > len(a.data) {
				src, dst = b, a
			}
			if !prefix(dst.data, src.data) {
				failf(t, "split brain: the disks diverged (%d and %d writes)", len(a.data), len(b.data))
			}
			if dst.role != ha.Active || len(dst.data) == len(src.data) {
				dst.data = slices.Clone(src.data)
				dst.diskOutdated, a.wasActive, b.wasActive = false, false, false
				a.conn, b.conn, a.frozen, b.frozen = true, true, false, false
				logf(t, "DRBD connected and resynced (%d writes)", len(src.data))
				if writer >= 0 {
					queue = append(queue, simMsg{at: t + simDelay, to: -1, from: 0, clear: true})
				}
			}
		}

		for i, h := range hs {
			if h.dead {
				continue
			}
			if sc.crash[i] > 0 && t >= sc.crash[i] || h.resetAt > 0 && t >= h.resetAt {
				h.dead, h.addr = true, false
				logf(t, "head %d dies (role %s)", i, h.role)
				continue
			}
			if h.stopping && t >= h.stopEnd {
				h.stopping, h.role, h.frozen = false, ha.Standby, false
				logf(t, "head %d stopped", i)
			}
			// Send a heartbeat and talk to the witness once per interval.
			if t%simParams.Interval == 0 {
				if sc.hb(i, 1-i, t) {
					queue = append(queue, simMsg{at: t + simDelay, to: 1 - i, from: i, sent: t, echo: h.lastGot, role: h.announce, epoch: h.epoch,
						diskOutdated: h.diskOutdated})
				}
				if h.wantVote || t < h.expiry {
					release := !h.wantVote
					if release {
						h.expiry = never
					}
					if sc.wit(i, t) {
						queue = append(queue, simMsg{at: t + simDelay, to: -1, from: i, sent: t, release: release})
					}
				}
			}
			// A frozen primary, or a promotion, asks the witness to record
			// this head as the writer while it holds the vote.
			if (h.frozen || h.promote) && t < h.expiry && t-h.fenceAt >= 2*time.Second {
				h.fenceAt = t
				if sc.wit(i, t) {
					queue = append(queue, simMsg{at: t + simDelay, to: -1, from: i, sent: t, outdate: true})
				}
			}
			d := simParams.DeadTime
			disk, peerDisk := ha.UpToDate, ha.UpToDate
			if h.diskOutdated {
				// decide must never promote it. DRBD itself (and
				// drbd.Promote) would refuse too; the sim leaves that
				// out, so that decide's own rule is what is checked.
				disk = ha.Outdated
			}
			if h.peerDiskOutdated {
				peerDisk = ha.Outdated
			}
			in := Inputs{Local: h.role, Disk: disk, Preferred: i == 0,
				PeerSeen: t-h.lastHeard <= d && t-h.heardUsAt <= d, PeerAlive: t-h.lastHeard <= d,
				PeerRole: h.peerRole, PeerDisk: peerDisk, Vote: t < h.expiry, Epoch: h.epoch, PeerEpoch: h.peerEpoch}
			if h.stopping {
				in.Local = ha.Active
			}
			if !h.conn && (in.Local == ha.Active || h.promote) { // as replicaWatch counts it
				h.wasActive = true
			}
			dec := h.m.Step(t0.Add(t), in)
			h.announce, h.wantVote = dec.Announce, dec.Vote
			peer := hs[1-i]
			if dec.Action != Promote && dec.Action != FencePromote {
				h.promote = false
			}
			switch dec.Action {
			case Promote, FencePromote:
				if h.role != ha.Active && !h.promote {
					h.addrAfter = t + dec.AddressAfter
				}
				switch {
				case h.role == ha.Active || h.promote:
				case h.conn && peer.role == ha.Active && !peer.dead:
					// DRBD refuses a second primary.
				case !h.conn:
					h.promote = true // after the witness's record
				default:
					h.role = ha.Active
					if !in.PeerSeen {
						h.epoch = max(h.epoch, h.peerEpoch) + 1
					} else {
						h.epoch = max(h.epoch, h.peerEpoch)
					}
					h.activeAt = append(h.activeAt, t)
					logf(t, "head %d promotes: %s", i, dec.Reason)
				}
			case Demote:
				if !h.stopping && h.role == ha.Active {
					h.stopping, h.stopEnd, h.addr = true, t+sc.stop[i], false
					logf(t, "head %d demotes: %s", i, dec.Reason)
				}
			case SelfFence:
				if h.resetAt == 0 {
					h.resetAt = t + simParams.WatchdogTimeout
					logf(t, "head %d self-fences: %s", i, dec.Reason)
				}
			}
			if h.role == ha.Active && len(h.activeAt) > 0 && h.activeAt[len(h.activeAt)-1] == t && !prefix(peer.data, h.data) {
				failf(t, "head %d promoted without %d writes the other head acknowledged", i, len(peer.data)-len(h.data))
			}
		}

		// The address goes up last, once its wait is over; never on both.
		for i, h := range hs {
			if !h.dead && h.role == ha.Active && !h.stopping && !h.addr && t >= h.addrAfter {
				h.addr = true
				logf(t, "head %d raises the service address", i)
			}
		}
		if hs[0].addr && hs[1].addr {
			failf(t, "the service address is up on both heads")
		}

		// Every active head writes; a write is acknowledged once it is on
		// every disk DRBD is connected to.
		var wrote []int
		for i, h := range hs {
			peer := hs[1-i]
			if h.dead || h.role != ha.Active || h.frozen {
				continue
			}
			switch {
			case !h.conn: // alone
				h.data = append(h.data, nextWrite)
				h.wasActive = true
			case link(t) && peer.conn:
				h.data = append(h.data, nextWrite)
				peer.data = append(peer.data, nextWrite)
			default:
				continue // waits for the peer's ack
			}
			nextWrite++
			wrote = append(wrote, i)
			res.lastWrite[i] = t
		}
		res.writes = nextWrite
		if len(wrote) == 2 {
			failf(t, "both heads write")
		}
	}
	for i, h := range hs {
		res.active[i] = h.activeAt
	}
	return res
}

func up(from, to int, t time.Duration) bool { return true }
func witUp(int, time.Duration) bool         { return true }

func cutAfter(at time.Duration) func(int, int, time.Duration) bool {
	return func(_, _ int, t time.Duration) bool { return t < at }
}

func TestSimulatedFailures(t *testing.T) {
	const cut = 20 * time.Second
	fast := [2]time.Duration{2 * time.Second, 2 * time.Second}
	delay := simParams.TakeoverDelay()
	witGone := func(_ int, t time.Duration) bool { return t < cut }
	repCut := func(t time.Duration) bool { return t < cut }
	for _, tc := range []struct {
		sc scenario
		// takeover: head 1 must become active, within this of the cut (0: must not)
		takeover time.Duration
		// writing: head 0 must still write this long after the cut (0: no
		// check): its I/O froze when DRBD lost the peer, and thawed.
		writing time.Duration
	}{
		{scenario{name: "healthy", hb: up, wit: witUp, stop: fast, end: 200 * time.Second}, 0, 0},
		// Both heartbeat paths cut, both heads reach the witness: the
		// active keeps the vote, and the service.
		{scenario{name: "heartbeat partition", hb: cutAfter(cut), wit: witUp, stop: fast, end: 200 * time.Second}, 0, 0},
		// Only head 0 -> head 1 cut: nobody sees anybody (contact must be
		// mutual); the active keeps the vote.
		{scenario{name: "one-way cut", hb: func(from, _ int, t time.Duration) bool { return from == 1 || t < cut }, wit: witUp, stop: fast, end: 200 * time.Second}, 0, 0},
		{scenario{name: "other one-way cut", hb: func(from, _ int, t time.Duration) bool { return from == 0 || t < cut }, wit: witUp, stop: fast, end: 200 * time.Second}, 0, 0},
		// The active crashes: the standby takes over once the lease and
		// the takeover delay have passed.
		{scenario{name: "active crashes", hb: up, wit: witUp, crash: [2]time.Duration{cut, 0}, stop: fast, end: 200 * time.Second},
			simLease + delay + 6*time.Second, 0},
		// The active is cut off from everything and stops quickly.
		{scenario{name: "active isolated", hb: cutAfter(cut), wit: func(h int, t time.Duration) bool { return h == 1 || t < cut }, stop: fast, end: 200 * time.Second},
			simLease + delay + 6*time.Second, 0},
		// ...and its stop hangs: the watchdog resets it; the standby still
		// waits long enough.
		{scenario{name: "isolated active hangs in its stop", hb: cutAfter(cut), wit: func(h int, t time.Duration) bool { return h == 1 || t < cut },
			stop: [2]time.Duration{hang, hang}, end: 200 * time.Second}, simLease + delay + 6*time.Second, 0},
		// The active loses the witness first (keeps running on the peer),
		// then the peer too.
		{scenario{name: "witness then peer lost", hb: cutAfter(cut + 30*time.Second), wit: func(h int, t time.Duration) bool { return h == 1 || t < cut },
			stop: [2]time.Duration{hang, hang}, end: 250 * time.Second}, 30*time.Second + delay + 7*time.Second, 0},
		// The active's stop takes just under its bound.
		{scenario{name: "slow stop", hb: cutAfter(cut), wit: func(h int, t time.Duration) bool { return h == 1 || t < cut },
			stop: [2]time.Duration{simParams.StopBound - simStep, hang}, end: 200 * time.Second}, simLease + delay + 6*time.Second, 0},
		// Only the replication link is cut; the heartbeat stays up, and
		// neither head reaches the witness any more. Head 0's I/O freezes
		// when its DRBD loses the peer; nothing can record it as the
		// writer, but head 1 still hears it announce active after its own
		// DRBD lost it, outdates its disk and announces that, and head 0
		// thaws on it and serves on alone.
		{scenario{name: "replication cut, witness gone", hb: up, wit: witGone, rep: repCut, stop: fast, end: 200 * time.Second},
			0, 170 * time.Second},
		// ...then head 0 crashes: head 1 lacks its writes since the thaw
		// and must not take over (its disk is Outdated; nor does it hold
		// the vote).
		{scenario{name: "replication cut, witness gone, then the active crashes", hb: up, wit: witGone, rep: repCut,
			crash: [2]time.Duration{cut + 60*time.Second, 0}, stop: fast, end: 200 * time.Second}, 0, 50 * time.Second},
		// ...and then head 1 reaches the witness again, which records no
		// writer (head 0 thawed without it) and would grant it the vote:
		// only the Outdated disk keeps head 1 from taking over without
		// head 0's writes.
		{scenario{name: "replication cut, witness gone, the active crashes, the witness returns", hb: up,
			wit:   func(h int, t time.Duration) bool { return t < cut || h == 1 && t >= cut+90*time.Second },
			rep:   repCut,
			crash: [2]time.Duration{cut + 60*time.Second, 0}, stop: fast, end: 200 * time.Second}, 0, 50 * time.Second},
		// Only the replication link is cut and the witness stays up:
		// head 0 thaws by whichever path comes first (the witness's
		// record, or head 1's outdated disk); head 1 does not take over.
		{scenario{name: "replication cut, witness up", hb: up, wit: witUp, rep: repCut, stop: fast, end: 200 * time.Second},
			0, 170 * time.Second},
	} {
		t.Run(tc.sc.name, func(t *testing.T) {
			res := simulate(tc.sc)
			report := strings.Join(res.trace, "\n")
			if res.fail != "" {
				t.Fatalf("%s\n%s", res.fail, report)
			}
			if testing.Verbose() {
				t.Logf("trace:\n%s", report)
			}
			if len(res.active[0]) == 0 || res.active[0][0] > 5*time.Second {
				t.Fatalf("head 0 (preferred) did not start the service: %v\n%s", res.active[0], report)
			}
			switch {
			case tc.takeover == 0 && len(res.active[1]) > 0:
				t.Errorf("head 1 took over at %v; it should not have\n%s", res.active[1], report)
			case tc.takeover > 0 && len(res.active[1]) == 0:
				t.Errorf("head 1 never took over\n%s", report)
			case tc.takeover > 0 && res.active[1][0] > cut+tc.takeover:
				t.Errorf("head 1 took over at %v, later than %v\n%s", res.active[1][0], cut+tc.takeover, report)
			}
			if tc.writing > 0 && res.lastWrite[0] < cut+tc.writing {
				t.Errorf("head 0 last wrote at %v, before %v: its I/O did not thaw\n%s", res.lastWrite[0], cut+tc.writing, report)
			}
		})
	}
}

// Random cuts of the four links (each heartbeat direction, each head to
// the witness), in half the runs of a separate replication link too,
// random crashes and stop times: never two active heads.
func TestSimulatedRandomFailures(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 20
	}
	takeovers := 0
	for seed := range runs {
		r := rand.New(rand.NewPCG(uint64(seed), 42))
		const end = 400 * time.Second
		// Each link flips between up and down at random times.
		flips := func() []time.Duration {
			var f []time.Duration
			for at := time.Duration(0); at < end; {
				at += time.Duration(r.ExpFloat64() * float64(40*time.Second))
				f = append(f, at)
			}
			return f
		}
		upAt := func(f []time.Duration, t time.Duration) bool {
			n := 0
			for _, x := range f {
				if x <= t && x >= 10*time.Second { // let the pair form first
					n++
				}
			}
			return n%2 == 0
		}
		hb := [2][]time.Duration{flips(), flips()}
		wit := [2][]time.Duration{flips(), flips()}
		stops := []time.Duration{time.Second, 10 * time.Second, simParams.StopBound - simStep, hang}
		sc := scenario{
			name: fmt.Sprint("seed ", seed),
			hb:   func(from, _ int, t time.Duration) bool { return upAt(hb[from], t) },
			wit:  func(h int, t time.Duration) bool { return upAt(wit[h], t) },
			stop: [2]time.Duration{stops[r.IntN(len(stops))], stops[r.IntN(len(stops))]},
			end:  end,
		}
		if r.IntN(4) == 0 {
			sc.crash[r.IntN(2)] = time.Duration(r.Int64N(int64(end)))
		}
		// Drawn last, so that the other half of the seeds keep their
		// links: DRBD over a replication link of its own, cut on its own.
		if r.IntN(2) == 0 {
			rep := flips()
			sc.name += " (replication link)"
			sc.rep = func(t time.Duration) bool { return upAt(rep, t) }
		}
		res := simulate(sc)
		if res.fail != "" {
			t.Fatalf("%s: %s\n%s", sc.name, res.fail, strings.Join(res.trace, "\n"))
		}
		if len(res.active[1]) > 0 {
			takeovers++
		}
	}
	// The scenarios must exercise takeovers, or the check above is empty.
	if takeovers < runs/10 {
		t.Errorf("only %d of %d runs had a takeover", takeovers, runs)
	}
	t.Logf("%d runs, %d with a takeover", runs, takeovers)
}
