package decide

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
)

var params = Params{Interval: 500 * time.Millisecond, DeadTime: 3 * time.Second, StopBound: 20 * time.Second,
	WatchdogTimeout: 30 * time.Second, Margin: time.Second}

// past is an Elapsed where every wait has run out.
var past = Elapsed{Contacted: true, Takeover: time.Hour}

// Short names for the expected actions in the grids.
const (
	no = None
	pr = Promote
	fp = FencePromote
	dm = Demote
	sf = SelfFence
	al = Alert
)

// grid is the expected action for each local disk state, in the order
// (peer seen, vote held) = (no, no), (no, yes), (yes, no), (yes, yes).
type grid map[ha.DiskState][4]Action

var combos = [4]struct{ seen, vote bool }{{false, false}, {false, true}, {true, false}, {true, true}}

// The full table: every combination of peer seen × vote × local disk
// state, for both current roles, in normal mode with every wait over.
func TestDecisionTable(t *testing.T) {
	tables := []struct {
		name string
		base Inputs // PeerSeen, Vote and Disk are filled in per cell
		want grid
		// vote is the expected Decision.Vote per (seen, vote) column for
		// an UpToDate disk and for any other.
		voteUpToDate, voteOther [4]bool
	}{
		{
			name: "active, peer (when seen) standby UpToDate",
			base: Inputs{Local: ha.Active, PeerRole: ha.Standby, PeerDisk: ha.UpToDate, Epoch: 3, PeerEpoch: 2},
			want: grid{
				ha.UpToDate:     {dm, no, no, no},
				ha.Consistent:   {dm, al, dm, dm},
				ha.Outdated:     {dm, al, dm, dm},
				ha.Inconsistent: {dm, al, dm, dm},
				ha.Diskless:     {dm, al, dm, dm},
				ha.DUnknown:     {dm, al, dm, dm},
				ha.Attaching:    {dm, al, dm, dm},
				ha.Detaching:    {dm, al, dm, dm},
				ha.Failed:       {dm, al, dm, dm},
				ha.Negotiating:  {dm, al, dm, dm},
			},
			voteUpToDate: [4]bool{true, true, true, true},
			voteOther:    [4]bool{true, true, true, true},
		},
		{
			name: "standby, peer (when seen) active UpToDate",
			base: Inputs{Local: ha.Standby, PeerRole: ha.Active, PeerDisk: ha.UpToDate, Epoch: 2, PeerEpoch: 3},
			want: grid{
				ha.UpToDate:     {al, fp, no, no},
				ha.Consistent:   {al, al, no, no},
				ha.Outdated:     {al, al, al, al},
				ha.Inconsistent: {al, al, no, no},
				ha.Diskless:     {al, al, al, al},
				ha.DUnknown:     {al, al, al, al},
				ha.Attaching:    {al, al, no, no},
				ha.Detaching:    {al, al, al, al},
				ha.Failed:       {al, al, al, al},
				ha.Negotiating:  {al, al, no, no},
			},
			voteUpToDate: [4]bool{true, true, false, false},
			voteOther:    [4]bool{false, false, false, false},
		},
		{
			// A head that runs nothing (booting, or after a stop) decides
			// like a standby; the peer, when seen, is active.
			name: "none, peer (when seen) active UpToDate",
			base: Inputs{Local: ha.None, PeerRole: ha.Active, PeerDisk: ha.UpToDate},
			want: grid{
				ha.UpToDate:     {al, fp, no, no},
				ha.Consistent:   {al, al, no, no},
				ha.Outdated:     {al, al, al, al},
				ha.Inconsistent: {al, al, no, no},
				ha.Diskless:     {al, al, al, al},
				ha.DUnknown:     {al, al, al, al},
				ha.Attaching:    {al, al, no, no},
				ha.Detaching:    {al, al, al, al},
				ha.Failed:       {al, al, al, al},
				ha.Negotiating:  {al, al, no, no},
			},
			voteUpToDate: [4]bool{true, true, false, false},
			voteOther:    [4]bool{false, false, false, false},
		},
	}
	for _, tb := range tables {
		if len(tb.want) != len(ha.DiskStates) {
			t.Fatalf("%s: %d disk states in the table, %d exist", tb.name, len(tb.want), len(ha.DiskStates))
		}
		for _, disk := range ha.DiskStates {
			row, ok := tb.want[disk]
			if !ok {
				t.Fatalf("%s: no row for %s", tb.name, disk)
			}
			for i, c := range combos {
				in := tb.base
				in.Disk, in.PeerSeen, in.PeerAlive, in.Vote = disk, c.seen, c.seen, c.vote
				got := Decide(params, in, past)
				wantVote := tb.voteOther[i]
				if disk == ha.UpToDate {
					wantVote = tb.voteUpToDate[i]
				}
				if got.Action != row[i] || got.Vote != wantVote || got.Reason == "" {
					t.Errorf("%s, disk %s, seen %v, vote %v: got %s (vote %v, %q), want %s (vote %v)",
						tb.name, disk, c.seen, c.vote, got.Action, got.Vote, got.Reason, row[i], wantVote)
				}
			}
		}
	}
}

// Neither head is active and the peer is seen: one of them starts.
func TestNoHeadActive(t *testing.T) {
	for _, tc := range []struct {
		peerRole  ha.Role
		peerDisk  ha.DiskState
		disk      ha.DiskState
		preferred bool
		want      Action
	}{
		{ha.Standby, ha.UpToDate, ha.UpToDate, true, pr},
		{ha.Standby, ha.UpToDate, ha.UpToDate, false, no},
		{ha.Standby, ha.Inconsistent, ha.UpToDate, false, pr}, // the peer cannot: we do
		{ha.Standby, ha.Outdated, ha.UpToDate, false, pr},
		{ha.None, ha.UpToDate, ha.UpToDate, false, pr}, // the peer yields (maintenance, standby mode, ...)
		{ha.None, ha.UpToDate, ha.UpToDate, true, pr},
		{ha.Standby, ha.UpToDate, ha.Inconsistent, true, no}, // resyncing here: the peer starts
		{ha.Standby, ha.UpToDate, ha.Outdated, true, no},
		{ha.None, ha.UpToDate, ha.Outdated, true, al}, // nobody can
		{ha.Standby, ha.Outdated, ha.Outdated, true, al},
	} {
		for _, vote := range []bool{false, true} {
			in := Inputs{Local: ha.Standby, Disk: tc.disk, Preferred: tc.preferred, PeerSeen: true, PeerAlive: true, PeerRole: tc.peerRole, PeerDisk: tc.peerDisk, Vote: vote}
			got := Decide(params, in, past)
			if got.Action != tc.want || got.Vote {
				t.Errorf("%+v vote %v: got %s (vote %v) %q, want %s without the vote", tc, vote, got.Action, got.Vote, got.Reason, tc.want)
			}
		}
	}
}

// Operator modes, escalation and two primaries.
func TestActiveSpecialCases(t *testing.T) {
	ready := Inputs{Local: ha.Active, Disk: ha.UpToDate, PeerSeen: true, PeerAlive: true, PeerRole: ha.Standby, PeerDisk: ha.UpToDate, Epoch: 5, PeerEpoch: 4}
	mod := func(f func(*Inputs)) Inputs { in := ready; f(&in); return in }
	for _, tc := range []struct {
		name string
		in   Inputs
		want Action
		why  string
	}{
		{"healthy", ready, no, "peer seen"},
		{"maintenance", mod(func(in *Inputs) { in.Mode = Maintenance; in.Escalated = true; in.Disk = ha.Diskless }), no, "maintenance"},
		{"maintenance, quorum lost", mod(func(in *Inputs) { in.Mode = Maintenance; in.PeerSeen = false }), dm, "quorum lost"},
		{"node standby", mod(func(in *Inputs) { in.Mode = NodeStandby }), dm, "hand the service"},
		{"node standby, peer gone, vote held", mod(func(in *Inputs) { in.Mode = NodeStandby; in.PeerSeen = false; in.Vote = true }), dm, "service stops"},
		{"switchover", mod(func(in *Inputs) { in.Switchover = true }), dm, "switchover"},
		{"switchover, peer not UpToDate", mod(func(in *Inputs) { in.Switchover = true; in.PeerDisk = ha.Inconsistent }), al, "refused"},
		{"switchover, peer yields", mod(func(in *Inputs) { in.Switchover = true; in.PeerRole = ha.None }), al, "refused"},
		{"switchover, peer not seen", mod(func(in *Inputs) { in.Switchover = true; in.PeerSeen = false; in.Vote = true }), al, "not seen"},
		{"escalated", mod(func(in *Inputs) { in.Escalated = true }), dm, "fail over"},
		{"escalated, peer not seen", mod(func(in *Inputs) { in.Escalated = true; in.PeerSeen = false; in.Vote = true }), al, "staying active"},
		{"escalated, peer disk bad", mod(func(in *Inputs) { in.Escalated = true; in.PeerDisk = ha.Outdated }), al, "staying active"},
		// Two primaries (a healed partition, or a bug): exactly one steps down.
		{"both active, peer newer", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 6 }), dm, "steps down"},
		{"both active, we are newer", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 4 }), al, "peer must step down"},
		{"both active, same epoch, peer has the vote", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 5; in.PeerHoldsVote = true }), dm, "steps down"},
		{"both active, same epoch, we have the vote", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 5; in.Vote = true }), al, "peer must"},
		{"both active, full tie, preferred", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 5; in.Preferred = true }), al, "peer must"},
		{"both active, full tie, not preferred", mod(func(in *Inputs) { in.PeerRole = ha.Active; in.PeerEpoch = 5 }), dm, "steps down"},
		{"both active in maintenance", mod(func(in *Inputs) { in.Mode = Maintenance; in.PeerRole = ha.Active; in.PeerEpoch = 9 }), dm, "steps down"},
	} {
		got := Decide(params, tc.in, past)
		if got.Action != tc.want || !strings.Contains(got.Reason, tc.why) || !got.Vote || got.Announce != ha.Active {
			t.Errorf("%s: got %s %q (vote %v, announce %s), want %s with %q", tc.name, got.Action, got.Reason, got.Vote, got.Announce, tc.want, tc.why)
		}
	}
	// Exactly one of two active heads steps down, whatever the tie.
	for _, e := range [][2]uint64{{1, 1}, {1, 2}, {2, 1}} {
		for _, va := range []bool{false, true} {
			for _, vb := range []bool{false, true} {
				if va && vb {
					continue // one vote
				}
				a := Inputs{Local: ha.Active, Disk: ha.UpToDate, PeerSeen: true, PeerRole: ha.Active, PeerDisk: ha.UpToDate,
					Epoch: e[0], PeerEpoch: e[1], Vote: va, PeerHoldsVote: vb, Preferred: true}
				b := Inputs{Local: ha.Active, Disk: ha.UpToDate, PeerSeen: true, PeerRole: ha.Active, PeerDisk: ha.UpToDate,
					Epoch: e[1], PeerEpoch: e[0], Vote: vb, PeerHoldsVote: va, Preferred: false}
				da, db := Decide(params, a, past).Action, Decide(params, b, past).Action
				if (da == Demote) == (db == Demote) {
					t.Errorf("epochs %v votes %v/%v: a %s, b %s: want exactly one demote", e, va, vb, da, db)
				}
			}
		}
	}
}

func TestStandbySpecialCases(t *testing.T) {
	lost := Inputs{Local: ha.Standby, Disk: ha.UpToDate, Vote: true} // peer not seen, vote held
	mod := func(f func(*Inputs)) Inputs { in := lost; f(&in); return in }
	ping := Params{Tiebreaker: PingTarget}
	delay := ping.TakeoverDelay()
	for _, tc := range []struct {
		name     string
		p        Params
		in       Inputs
		el       Elapsed
		want     Action
		why      string
		after    time.Duration
		vote     bool
		announce ha.Role
	}{
		{"takeover", params, lost, past, fp, "outdate the peer", 0, true, ha.Standby},
		{"takeover, peer already fenced", params, mod(func(in *Inputs) { in.PeerFenced = true }), past, pr, "already fenced", 0, true, ha.Standby},
		{"takeover wait, ping target", ping, lost, Elapsed{Contacted: true, Takeover: delay - 3*time.Second}, no, "waiting", 3 * time.Second, true, ha.Standby},
		{"takeover wait over, ping target", ping, lost, Elapsed{Contacted: true, Takeover: delay}, fp, "outdate", 0, true, ha.Standby},
		{"takeover at once, witness", params, lost, Elapsed{Contacted: true}, fp, "outdate", 0, true, ha.Standby},
		{"booted alone, witness", params, mod(func(in *Inputs) { in.Vote = false }), Elapsed{Takeover: time.Hour}, no, "booted alone", 0, true, ha.Standby},
		{"booted alone, ping target answers", Params{Tiebreaker: PingTarget}, lost, Elapsed{Takeover: time.Hour}, no, "booted alone", 0, true, ha.Standby},
		{"ping target, contacted", Params{Tiebreaker: PingTarget}, lost, past, fp, "ping target held", 0, true, ha.Standby},
		{"ping target unreachable", Params{Tiebreaker: PingTarget}, mod(func(in *Inputs) { in.Vote = false }), past, al, "no ping target", 0, true, ha.Standby},
		{"maintenance", params, lost, past, no, "maintenance", 0, false, ha.None},
		{"node standby", params, lost, past, no, "does not take over", 0, false, ha.None},
		{"switchover yields", params, mod(func(in *Inputs) {
			in.Switchover = true
			in.PeerSeen = true
			in.PeerRole = ha.Standby
			in.PeerDisk = ha.UpToDate
			in.Preferred = true
		}), past, no, "switchover", 0, false, ha.None},
		{"escalated standby, peer active", params, mod(func(in *Inputs) {
			in.Escalated = true
			in.PeerSeen = true
			in.PeerAlive = true
			in.PeerRole = ha.Active
		}), past, al, "on the standby", 0, false, ha.None},
		// A standby that failed over for a local failure yields: it does
		// not start the service again beside its peer, preferred or not.
		{"escalated standby, nobody active", params, mod(func(in *Inputs) {
			in.Escalated = true
			in.PeerSeen = true
			in.PeerAlive = true
			in.PeerRole = ha.Standby
			in.PeerDisk = ha.UpToDate
			in.Preferred = true
		}), past, no, "the peer starts the service", 0, false, ha.None},
		{"escalated standby, peer cannot start", params, mod(func(in *Inputs) {
			in.Escalated = true
			in.PeerSeen = true
			in.PeerAlive = true
			in.PeerRole = ha.None
			in.PeerDisk = ha.UpToDate
		}), past, al, "none can start", 0, false, ha.None},
		// The peer is heard but does not hear us: it may be active on its
		// vote, so no takeover, and the vote is left to it.
		{"one-way contact", params, mod(func(in *Inputs) { in.PeerAlive = true }), past, al, "one-way", 0, false, ha.Standby},
		{"one-way contact, peer fenced", params, mod(func(in *Inputs) { in.PeerAlive = true; in.PeerFenced = true }), past, al, "one-way", 0, false, ha.Standby},
		// An escalated standby still takes over from a dead active: a
		// failing layer here beats no service at all.
		{"escalated standby, peer lost", params, mod(func(in *Inputs) { in.Escalated = true }), past, fp, "outdate", 0, true, ha.None},
	} {
		in := tc.in
		switch tc.name {
		case "maintenance":
			in.Mode = Maintenance
		case "node standby":
			in.Mode = NodeStandby
		}
		got := Decide(tc.p, in, tc.el)
		if got.Action != tc.want || !strings.Contains(got.Reason, tc.why) || got.After != tc.after || got.Vote != tc.vote || got.Announce != tc.announce {
			t.Errorf("%s: got %s %q after %v vote %v announce %s; want %s %q after %v vote %v announce %s",
				tc.name, got.Action, got.Reason, got.After, got.Vote, got.Announce, tc.want, tc.why, tc.after, tc.vote, tc.announce)
		}
	}
}

// Invariants over every combination of every input.
func TestInvariants(t *testing.T) {
	roles := []ha.Role{ha.Active, ha.Standby, ha.None}
	delay := params.TakeoverDelay()
	elapsed := []Elapsed{
		{}, {Contacted: true}, {Contacted: true, Takeover: delay - time.Millisecond}, {Contacted: true, Takeover: delay},
		{Contacted: true, QuorumLost: params.StopBound - time.Millisecond}, {Contacted: true, QuorumLost: params.StopBound},
		{Contacted: true, Takeover: time.Hour, Listening: time.Millisecond},
	}
	n := 0
	for _, tb := range []Tiebreaker{Witness, PingTarget} {
		p := params
		p.Tiebreaker = tb
		for _, mode := range []Mode{Normal, Maintenance, NodeStandby} {
			for _, local := range roles {
				for _, disk := range ha.DiskStates {
					for _, peerRole := range roles {
						for _, peerDisk := range []ha.DiskState{ha.UpToDate, ha.Outdated} {
							for mask := range 1 << 8 {
								b := func(i int) bool { return mask&(1<<i) != 0 }
								in := Inputs{Mode: mode, Local: local, Disk: disk, PeerRole: peerRole, PeerDisk: peerDisk,
									Switchover: b(0), Escalated: b(1), Preferred: b(2), PeerSeen: b(3), PeerHoldsVote: b(4), PeerFenced: b(5), Vote: b(6),
									PeerAlive: b(7) || b(3)}
								for _, el := range elapsed {
									n++
									checkInvariants(t, p, in, el, Decide(p, in, el))
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d combinations checked", n)
}

func checkInvariants(t *testing.T, p Params, in Inputs, el Elapsed, d Decision) {
	t.Helper()
	fail := func(rule string) {
		t.Helper()
		t.Fatalf("%s: %+v %+v -> %s %q (vote %v)", rule, in, el, d.Action, d.Reason, d.Vote)
	}
	promotes := d.Action == Promote || d.Action == FencePromote
	quorum := in.PeerSeen || in.Vote
	if d.Reason == "" {
		fail("every decision has a reason")
	}
	if promotes {
		switch {
		case in.Local == ha.Active:
			fail("an active head does not promote")
		case in.PeerSeen && in.PeerRole == ha.Active:
			fail("never promote while the peer is seen and active")
		case !quorum:
			fail("promote only with quorum")
		case in.Disk != ha.UpToDate:
			fail("promote only with the local disk UpToDate")
		case in.Mode != Normal || in.Switchover:
			fail("no promotion in maintenance, node standby or a switchover")
		case in.PeerSeen && d.Announce == ha.None:
			fail("a head that yields (announces none) does not start the service beside a seen peer")
		}
		if !in.PeerSeen {
			switch {
			case in.PeerAlive:
				fail("never take over from a peer still heard")
			case el.Takeover < p.TakeoverDelay():
				fail("promote without the peer only after the takeover delay")
			case el.Listening > 0:
				fail("a head that just started does not take over from a peer it has not heard yet")
			case !el.Contacted && !(in.Vote && p.Tiebreaker == Witness):
				fail("a head that booted alone waits for the peer or the witness")
			case el.Takeover+d.AddressAfter < p.AddressDelay():
				fail("a takeover raises the service address only after the address delay")
			case d.Action == Promote && !in.PeerFenced:
				fail("promote without the peer only after fencing it")
			}
		}
	}
	if d.AddressAfter != 0 && (!promotes || in.PeerSeen) {
		fail("only a takeover from a silent peer holds the address back")
	}
	if in.Local == ha.Active && !quorum && d.Action != Demote && d.Action != SelfFence {
		fail("an active head without quorum stops, in every mode")
	}
	if d.Action == SelfFence && (in.Local != ha.Active || quorum || el.QuorumLost < p.StopBound) {
		fail("self-fence only when a stop after quorum loss overran its bound")
	}
	if in.Local != ha.Active && d.Action == Demote {
		fail("a head that is not active has nothing to demote")
	}
	if in.Local != ha.Active && in.PeerSeen && in.PeerRole == ha.Active && d.Action != None && d.Action != Alert {
		fail("a standby beside an active peer only alerts")
	}
	if in.Mode == Maintenance && in.Local == ha.Active && d.Action != None && quorum && !(in.PeerSeen && in.PeerRole == ha.Active) {
		fail("maintenance takes no action beyond the quorum rule")
	}
	if in.Mode == Maintenance && in.Local != ha.Active && d.Action != None {
		fail("a standby in maintenance takes no action")
	}
	if in.Local != ha.Active && d.Vote && (in.PeerAlive || in.Disk != ha.UpToDate || in.Mode != Normal || in.Switchover) {
		fail("a standby asks for the vote only when it could take over from a lost peer")
	}
	if in.Local == ha.Active && !d.Vote {
		fail("an active head keeps the vote")
	}
	if (in.Local == ha.Active) != (d.Announce == ha.Active) {
		fail("announce active exactly when active")
	}
}

// Machine: the stop bound after quorum loss, exactly.
func TestMachineStopBound(t *testing.T) {
	m, err := NewMachine(params)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	act := Inputs{Local: ha.Active, Disk: ha.UpToDate, PeerSeen: true, PeerAlive: true, PeerRole: ha.Standby, PeerDisk: ha.UpToDate}
	lost := act
	lost.PeerSeen, lost.PeerAlive = false, false
	steps := []struct {
		at   time.Duration
		in   Inputs
		want Action
		left time.Duration
	}{
		{0, act, no, 0},
		{time.Second, lost, dm, 20 * time.Second},
		{11 * time.Second, lost, dm, 10 * time.Second},
		{21*time.Second - time.Millisecond, lost, dm, time.Millisecond},
		{21 * time.Second, lost, sf, 0},
		{22 * time.Second, act, no, 0}, // quorum back: the clock resets
		{23 * time.Second, lost, dm, 20 * time.Second},
	}
	for i, s := range steps {
		d := m.Step(t0.Add(s.at), s.in)
		if d.Action != s.want || d.After != s.left {
			t.Errorf("step %d at %v: %s after %v (%q), want %s after %v", i, s.at, d.Action, d.After, d.Reason, s.want, s.left)
		}
	}
}

// Machine: the takeover wait runs from when the peer was lost with the
// vote held, and starts over when either comes back or goes.
// With a ping target the promotion waits; with the witness only the
// address does, on the same timer.
func TestMachineTakeoverWait(t *testing.T) {
	ping := params
	ping.Tiebreaker = PingTarget
	m, err := NewMachine(ping)
	if err != nil {
		t.Fatal(err)
	}
	delay := ping.TakeoverDelay()
	if delay != params.Interval+params.Margin+params.StopBound+params.WatchdogTimeout {
		t.Fatalf("takeover delay %v", delay)
	}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := Inputs{Local: ha.Standby, Disk: ha.UpToDate, PeerSeen: true, PeerAlive: true, PeerRole: ha.Active, PeerDisk: ha.UpToDate}
	noVote := Inputs{Local: ha.Standby, Disk: ha.UpToDate}
	vote := noVote
	vote.Vote = true
	heard := vote
	heard.PeerAlive = true
	steps := []struct {
		at   time.Duration
		in   Inputs
		want Action
	}{
		{0, seen, no},
		{5 * time.Second, noVote, al},             // peer lost, witness says no
		{9 * time.Second, vote, no},               // vote: the wait starts
		{9*time.Second + delay/2, vote, no},       // still waiting
		{9*time.Second + delay/2 + 1, noVote, al}, // vote lapsed: the wait is void
		{10*time.Second + delay/2, vote, no},      // starts over
		{10*time.Second + delay/2 + delay - 1, vote, no},
		{10*time.Second + delay/2 + delay, vote, fp}, // done
		{11*time.Second + delay/2 + delay, seen, no}, // the peer came back: no takeover
		{12*time.Second + delay/2 + delay, vote, no}, // and the wait starts over
		{12*time.Second + 2*delay - 1, vote, no},
		{12*time.Second + 2*delay - 1, heard, al}, // a packet from the peer (one-way): void again
		{12*time.Second + 3*delay, vote, no},      // starts over
		{12*time.Second + 4*delay, vote, fp},
	}
	for i, s := range steps {
		d := m.Step(t0.Add(s.at), s.in)
		if d.Action != s.want {
			t.Errorf("step %d at %v: %s (%q), want %s", i, s.at, d.Action, d.Reason, s.want)
		}
	}

	m, _ = NewMachine(params)
	addr := params.AddressDelay()
	if params.TakeoverDelay() != 0 || addr != params.Interval+params.Margin {
		t.Fatalf("witness: takeover delay %v, address delay %v", params.TakeoverDelay(), addr)
	}
	for i, s := range []struct {
		at   time.Duration
		in   Inputs
		want Action
		hold time.Duration
	}{
		{0, seen, no, 0},
		{5 * time.Second, noVote, al, 0},
		{9 * time.Second, vote, fp, addr},                 // the disk at once, the address later
		{9*time.Second + addr/2, vote, fp, addr - addr/2}, // the same timer
		{9*time.Second + addr, vote, fp, 0},
		{10 * time.Second, heard, al, 0}, // one-way contact: void
		{11 * time.Second, vote, fp, addr},
	} {
		d := m.Step(t0.Add(s.at), s.in)
		if d.Action != s.want || d.AddressAfter != s.hold {
			t.Errorf("witness step %d at %v: %s, address after %v (%q), want %s, %v", i, s.at, d.Action, d.AddressAfter, d.Reason, s.want, s.hold)
		}
	}
}

// Contact is sticky for the boot; a ping target alone is not contact.
func TestMachineBootedAlone(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	lost := Inputs{Local: ha.Standby, Disk: ha.UpToDate, Vote: true}
	p := params
	p.Tiebreaker = PingTarget
	m, _ := NewMachine(p)
	if d := m.Step(t0, lost); d.Action != None || !strings.Contains(d.Reason, "just started") || d.After != p.WithDefaults().BootListen {
		t.Fatalf("ping mode, just started: %s %q after %v", d.Action, d.Reason, d.After)
	}
	if d := m.Step(t0.Add(p.WithDefaults().BootListen), lost); d.Action != None || !strings.Contains(d.Reason, "booted alone") {
		t.Fatalf("ping mode, alone: %s %q", d.Action, d.Reason)
	}
	if d := m.Step(t0.Add(time.Hour), lost); d.Action != None || !strings.Contains(d.Reason, "booted alone") {
		t.Fatalf("ping mode, alone an hour later: %s %q", d.Action, d.Reason)
	}
	seen := lost
	seen.PeerSeen, seen.PeerAlive, seen.PeerRole, seen.PeerDisk = true, true, ha.Active, ha.UpToDate
	m.Step(t0.Add(2*time.Hour), seen)
	m.Step(t0.Add(3*time.Hour), lost)
	if d := m.Step(t0.Add(3*time.Hour+p.TakeoverDelay()), lost); d.Action != FencePromote {
		t.Errorf("ping mode after contact: %s %q", d.Action, d.Reason)
	}
	if el := m.Elapsed(t0.Add(3*time.Hour + p.TakeoverDelay())); !el.Contacted || el.Takeover != p.TakeoverDelay() {
		t.Errorf("elapsed %+v", el)
	}

	// With a witness, its grant is contact, once the head has listened
	// for the peer for BootListen: it may be booting beside us, seconds
	// behind (a lab run of R3 saw head-b take over from a head-a that
	// was 3 s slower to boot, under a dead time's listening alone).
	listen := params.WithDefaults().BootListen
	if listen <= params.DeadTime {
		t.Fatalf("BootListen %v is not longer than the dead time %v", listen, params.DeadTime)
	}
	m, _ = NewMachine(params)
	for _, s := range []struct {
		at    time.Duration
		want  Action
		after time.Duration
	}{
		{0, None, listen},
		{params.DeadTime, None, listen - params.DeadTime}, // a dead time is not enough at boot
		{listen - time.Millisecond, None, time.Millisecond},
		{listen, FencePromote, 0},
	} {
		if d := m.Step(t0.Add(s.at), lost); d.Action != s.want || d.After != s.after {
			t.Errorf("witness mode, %v after boot, peer never heard: %s %q after %v, want %s after %v", s.at, d.Action, d.Reason, d.After, s.want, s.after)
		}
	}
	// A peer heard since boot that falls silent counts as silent after a
	// dead time, as at any other time.
	m, _ = NewMachine(params)
	m.Step(t0, seen)
	if d := m.Step(t0.Add(time.Second), lost); d.Action != None || d.After != params.DeadTime-time.Second {
		t.Errorf("witness mode, peer heard then silent 1 s after boot: %s %q after %v", d.Action, d.Reason, d.After)
	}
	if d := m.Step(t0.Add(params.DeadTime), lost); d.Action != FencePromote {
		t.Errorf("witness mode, peer heard then silent a dead time after boot: %s %q", d.Action, d.Reason)
	}
}

func TestParams(t *testing.T) {
	if err := (Params{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		tb   Tiebreaker
		want time.Duration
	}{
		{Witness, 0},
		{PingTarget, DefaultInterval + DefaultMargin + DefaultStopBound + DefaultWatchdogTimeout},
	} {
		if got := (Params{Tiebreaker: tc.tb}).TakeoverDelay(); got != tc.want {
			t.Errorf("default takeover delay with tiebreaker %d: %v, want %v", tc.tb, got, tc.want)
		}
	}
	for _, p := range []Params{
		{Interval: time.Second, DeadTime: 2 * time.Second},
		{StopBound: -1},
		{Tiebreaker: 7},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
		if _, err := NewMachine(p); err == nil {
			t.Errorf("%+v: machine built", p)
		}
	}
	if !Prefer("nas-a", "nas-b", 1, 1) || Prefer("nas-b", "nas-a", 1, 1) || !Prefer("nas-b", "nas-a", 2, 1) {
		t.Errorf("Prefer")
	}
	for a := None; a <= Alert; a++ {
		if s := a.String(); strings.HasPrefix(s, "action(") {
			t.Errorf("action %d has no name", a)
		}
	}
	if fmt.Sprint(Action(99)) != "action(99)" {
		t.Errorf("unknown action name")
	}
}
