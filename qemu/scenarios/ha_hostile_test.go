package scenarios_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// A hostile host on the management network (docs/ha.md, "Threat
// model"): it records the heartbeats and the witness traffic it sees,
// and replays, delays and reflects them during a switchover and a
// failover. Nothing moves but what the operator and the fault move.
//
// The attacker is played by the lab hub, which every frame of the
// management segment crosses. Its tap (Hub.SetTap) sees them all, as a
// host on the segment does behind a mirror port or by ARP spoofing;
// Hub.Inject sends frames as one more host on the segment; its filter
// (Hub.SetFilter) holds chosen frames back, as a host that made itself
// the man in the middle by ARP spoofing can. It knows no key. The control
// channel runs on the replication links, out of its reach (its unit
// tests play that attacker).
//
//  1. The full lab boots with the witness on the client; head-a serves.
//     The client writes checksummed records through the VIP over a hard
//     NFSv3 mount for the whole story.
//  2. From now on the attacker records every heartbeat between the heads
//     on the management path and every witness request and answer, both
//     ways, both heads.
//  3. The witness is restarted on the same state file. From then on, to
//     the end, the attacker replays and reflects what it recorded, twice
//     a second: heartbeats to the heads, requests to the witness (every
//     release, outdate-peer and clear-writer it saw, and acquires),
//     answers to the heads; each head's own heartbeats and requests back
//     to it, the witness's answers back to it. head-a keeps the vote.
//  4. Switchover. The attacker holds back every second heartbeat each way
//     for 15 s; then `tandem switchover` on head-a. Once head-b serves and
//     a dead time has passed, it releases what it held (head-a's saying
//     "active"). The service moves to head-b once: head-a gives the vote
//     up once, head-b is granted it once, and nothing else changes hands.
//  5. Failover. The attacker holds back every second heartbeat of head-b
//     for 30 s, then head-b loses power (QMP quit). The replays now carry
//     head-a's release from step 4 (the same client boot as head-a's
//     coming lease) and a dead head's acquires; from half a second after
//     the kill the attacker releases head-b's held heartbeats, oldest
//     first, one a second, as if head-b still lived (each is 30 s old
//     when it lands). head-a takes over once, as fast as without an
//     attacker, and the witness records it as the only
//     current copy: the record survives the replays. head-b is powered
//     on and resyncs; head-a lifts the record, and the replays of its
//     outdate-peer request do not set it again.
//  6. Every packet sent was counted where it landed: by the heads as
//     heartbeats replayed, stale or unproven, foreign (reflected) and
//     witness answers dropped, shown in `tandem status`; by the witness,
//     in its log, as requests replayed or challenged, and malformed (its
//     own answers reflected). No witness lease was lost outside the
//     moves, no head changed role but in them, and the client saw no
//     error and lost nothing.
func TestHostileHostOnManagementNetwork(t *testing.T) {
	ctx, lab, sc := startHALab(t, 30*time.Minute)
	_, dead, _ := membershipTiming(sc)
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	statePath, err := witness.DefaultStateFile(sc.Pair.Name)
	if err != nil {
		t.Fatal(err)
	}

	// 1. The pair serves; the client writes.
	stA := pairReady(t, ctx, a)
	delay := time.Duration(stA.HA.Timing.TakeoverDelayMS) * time.Millisecond
	failA, failB := len(stA.HA.Failovers), len(nodeStatus(t, ctx, b).HA.Failovers)
	raw, _ := haSite(t)
	plan, err := qemu.PlanClient(raw)
	if err != nil {
		t.Fatal(err)
	}
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, plan.MountNFSv3("/tmp/v3")...)
	startWorkload(t, ctx, client, "/tmp/v3", 30*time.Minute) // stopped at the end
	started := time.Now()

	// 2. The attacker records.
	atk := newHostile(t, lab.Hub, sc)
	marks := map[*qemu.VM]int{a: a.Console.Len(), b: b.Console.Len()}
	wlog0 := len(witnessLog(t, ctx, client))
	sleepCtx(ctx, 10*time.Second)
	atk.mustHaveRecorded(t)

	// 3. The witness restarts; the barrage starts.
	if err := lab.RestartWitness(ctx); err != nil {
		t.Fatal(err)
	}
	stopBarrage := atk.barrage(ctx, 500*time.Millisecond)
	defer stopBarrage()
	pairReady(t, ctx, a)
	if wl := witnessLog(t, ctx, client)[wlog0:]; witnessSaid(wl, "witness: reinstated", "holder=head-a") == 1 {
		t.Logf("witness restarted: head-a's lease reinstated in the quiet period")
	} else {
		t.Logf("witness restarted: head-a granted the vote anew (%d grants): its lease lapsed while the witness was down", witnessSaid(wl, "witness: granted", "holder=head-a"))
	}

	// 4. The switchover, with heartbeats held back before it.
	beforeA, beforeB := headDropsOf(t, ctx, a), headDropsOf(t, ctx, b)
	atk.take()
	atk.hold("head-a", "head-b")
	sleepCtx(ctx, 15*time.Second)
	atk.stopHolding()
	holdEnd := time.Now()
	wlog1 := len(witnessLog(t, ctx, client))
	switchAt := time.Since(started)
	res, err := a.Agent().Run(ctx, "tandem", "switchover")
	if err != nil || res.Exit != 0 || !strings.Contains(string(res.Stdout), "head-b is active") {
		t.Fatalf("tandem switchover on head-a: exit %d, %v: %s%s", res.Exit, err, res.Stdout, res.Stderr)
	}
	t.Logf("under attack: %s", strings.TrimSpace(string(res.Stdout)))
	pairReady(t, ctx, b)
	sleepCtx(ctx, time.Until(holdEnd.Add(dead+time.Second)))
	held := atk.release(ctx, 200*time.Millisecond)
	sleepCtx(ctx, 2*dead) // what a believed stale packet would do, it does by now
	pairReady(t, ctx, b)
	sent := atk.take()
	dA := countedAll(t, ctx, a, beforeA, sent["head-a"], true)
	dB := countedAll(t, ctx, b, beforeB, sent["head-b"], true)
	t.Logf("switchover: %d heartbeats held back and released late; head-a was sent %s, counted %s; head-b was sent %s, counted %s",
		held, sent["head-a"], dA, sent["head-b"], dB)
	wl := witnessLog(t, ctx, client)
	wlog2 := len(wl)
	roleLines(t, a, marks[a], 0, 1)
	roleLines(t, b, marks[b], 1, 0)
	witnessMoves(t, "witness restart", wl[wlog0:wlog1],
		movesWanted{[]witnessMove{{"witness: reinstated", "holder=head-a"}, {"witness: granted", "holder=head-a"}}, 1})
	witnessMoves(t, "switchover", wl[wlog1:wlog2], movesWanted{[]witnessMove{{"witness: granted", "holder=head-b"}}, 1},
		movesWanted{[]witnessMove{{"witness: released", "holder=head-a"}, {"witness: lease expired unrenewed", "holder=head-a"}}, 1})
	stA, stB := nodeStatus(t, ctx, a), nodeStatus(t, ctx, b)
	if len(stA.HA.Failovers) != failA+1 || stA.HA.Failovers[0].Kind != "switchover" || stA.HA.Failovers[0].Role != "standby" ||
		len(stB.HA.Failovers) != failB+1 || stB.HA.Failovers[0].Kind != "switchover" || stB.HA.Failovers[0].Role != "active" {
		t.Fatalf("after the switchover: head-a's role changes %+v, head-b's %+v; want one switchover each", stA.HA.Failovers, stB.HA.Failovers)
	}

	// 5. The failover, with head-b's heartbeats held back before it.
	marks[a] = a.Console.Len()
	beforeA = headDropsOf(t, ctx, a)
	atk.take()
	atk.hold("head-b")
	sleepCtx(ctx, 30*time.Second)
	mark := a.Console.Len()
	atk.down("head-b")
	killAt, killed := time.Since(started), time.Now()
	if err := b.Quit(); err != nil {
		t.Fatal(err)
	}
	atk.stopHolding()
	releasing := make(chan int)
	go func() {
		// Oldest first, one a second: each was sent about 30 s before
		// it lands, long past the dead time.
		sleepCtx(ctx, time.Until(killed.Add(500*time.Millisecond)))
		releasing <- atk.release(ctx, time.Second)
	}()
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	line, err := a.Console.WaitForAfter(wctx, mark, regexp.MustCompile(`role: active after \d+ ms`))
	wcancel()
	if err != nil {
		// Its HA lines since the kill say what it waited for.
		t.Fatalf("head-a did not take over within 2 minutes of the kill: %v\nhead-a since the kill:\n%s\nhead-a: %s\nthe witness's last words:\n%s",
			err, lastLines(a.Console.Text()[mark:], 60), guest(t, ctx, a, "tandem", "status"), lastLines(witnessLog(t, ctx, client), 40))
	}
	took := time.Since(killed)
	// Without an attacker a takeover takes the dead time, the takeover
	// delay and the stack's start (2 s in the lab). Held-back heartbeats
	// believed would keep head-b alive until the dead time after the
	// last one released, about 33 s after the kill.
	if limit := dead + delay + 12*time.Second; took > limit {
		t.Errorf("head-a took over %.1f s after the kill, beyond %v: something kept the dead head alive", took.Seconds(), limit)
	}
	st := waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.Role == "active" && s.HA != nil && len(s.HA.Failovers) > 0 && s.HA.Failovers[0].Kind == "takeover" && s.HA.Vote.Writer
	})
	t.Logf("head-a took over %.1f s after the kill (%s); its timeline: %s", took.Seconds(), strings.TrimSpace(line), failoverSteps(st.HA.Failovers[0]))
	writer, since := witnessRecord(t, ctx, client, statePath)
	held = <-releasing // head-b's held heartbeats, one a second
	sleepCtx(ctx, 2*dead)
	if w, s := witnessRecord(t, ctx, client, statePath); writer != "head-a" || w != writer || !s.Equal(since) {
		t.Errorf("the witness's record: %q since %s after the takeover, %q since %s after the replays; want head-a throughout", writer, since, w, s)
	}
	if st := nodeStatus(t, ctx, a); st.Role != "active" || !st.HA.Vote.Held || !st.HA.Vote.Writer {
		t.Errorf("head-a after the replays with head-b off: %s, vote held %v, writer %v", st.Role, st.HA.Vote.Held, st.HA.Vote.Writer)
	}
	b2, err := lab.PowerOn("head-b")
	if err != nil {
		t.Fatal(err)
	}
	pairReady(t, ctx, a) // head-b resynced; head-a lifted the witness's record
	beforeB2 := headDropsOf(t, ctx, b2)
	sentA := atk.take()["head-a"]
	atk.up("head-b")
	sleepCtx(ctx, 10*time.Second) // replays reach the new head-b too
	stopBarrage()
	sleepCtx(ctx, dead)
	sent = atk.take()
	sentA.add(sent["head-a"])
	dA = countedAll(t, ctx, a, beforeA, sentA, false)
	dB = countedAll(t, ctx, b2, beforeB2, sent["head-b"], false)
	t.Logf("failover: %d heartbeats of head-b held back and released after its death; head-a was sent %s, counted %s; head-b, since it came back, was sent %s, counted %s",
		held, sentA, dA, sent["head-b"], dB)
	if w, _ := witnessRecord(t, ctx, client, statePath); w != "" {
		t.Errorf("the witness records %q as the only current copy after head-b resynced and the replays", w)
	}
	wl = witnessLog(t, ctx, client)
	witnessMoves(t, "failover", wl[wlog2:], movesWanted{[]witnessMove{{"witness: lease expired unrenewed", "holder=head-b"}}, 1},
		movesWanted{[]witnessMove{{"witness: granted", "holder=head-a"}}, 1},
		movesWanted{[]witnessMove{{"witness: recorded the writer", "writer=head-a"}}, 1},
		movesWanted{[]witnessMove{{"witness: cleared the writer", "writer=head-a"}}, 1})
	roleLines(t, a, marks[a], 1, 0)
	roleLines(t, b, marks[b], 1, 0) // up to its death
	roleLines(t, b2, 0, 0, -1)
	stA = nodeStatus(t, ctx, a)
	if len(stA.HA.Failovers) != failA+2 || stA.HA.Failovers[0].Kind != "takeover" || stA.HA.Failovers[0].Role != "active" {
		t.Errorf("after the failover head-a's role changes are %+v; want one takeover after the switchover", stA.HA.Failovers)
	}
	for _, f := range nodeStatus(t, ctx, b2).HA.Failovers {
		if f.Role == "active" {
			t.Errorf("head-b became active after it came back: %+v", f)
		}
	}
	for _, vm := range []*qemu.VM{a, b, b2} {
		for _, bad := range []string{"witness: vote lost before its expiry", "SELF-FENCE"} {
			if strings.Contains(vm.Console.Text(), bad) {
				t.Errorf("%s's console has %q", vm.Name, bad)
			}
		}
	}

	// 6. What the witness and tandem status show, and the client.
	atk.witnessCounted(t, ctx, client)
	for _, vm := range []*qemu.VM{a, b2} {
		out := guest(t, ctx, vm, "tandem", "status")
		hb := regexp.MustCompile(`dropped: forged \d+, replayed [1-9]\d*, stale \d+, wrong pair \d+, malformed \d+, foreign [1-9]\d*, unproven \d+`).FindString(out)
		if hb == "" {
			t.Errorf("tandem status on %s does not show the dropped heartbeats:\n%s", vm.Name, out)
		}
		t.Logf("tandem status on %s: %s", vm.Name, hb)
	}
	if out := guest(t, ctx, a, "tandem", "status"); !regexp.MustCompile(`vote HELD by this head.*; [1-9]\d* answers dropped`).MatchString(out) {
		t.Errorf("tandem status on head-a does not show the witness answers dropped:\n%s", out)
	}
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	stalls := switchoverStalls(r, []time.Duration{switchAt, killAt})
	t.Logf("under attack: client stall %.1f s at the switchover, %.1f s at the failover (head-a took over %.1f s after the kill)",
		stalls[0].Seconds(), stalls[1].Seconds(), took.Seconds())
}

func witnessLog(t testing.TB, ctx context.Context, vm *qemu.VM) string {
	t.Helper()
	return guest(t, ctx, vm, "busybox", "cat", qemu.WitnessLog)
}

// witnessRecord reads the witness's state file on its host: the head it
// records as the only one with current data ("" for none), and since
// when. No file is no record.
func witnessRecord(t testing.TB, ctx context.Context, vm *qemu.VM, path string) (string, time.Time) {
	t.Helper()
	res, err := run(ctx, vm, "busybox", "cat", path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 0 {
		return "", time.Time{}
	}
	var st struct {
		Writer string    `json:"writer"`
		Since  time.Time `json:"since"`
	}
	if err := json.Unmarshal(res.Stdout, &st); err != nil {
		t.Fatalf("the witness's state file %s: %v: %s", path, err, res.Stdout)
	}
	return st.Writer, st.Since
}

// witnessSaid counts the lines of a witness log whose message starts
// with msg and that carry attr (e.g. "holder=head-a"; "" for any).
func witnessSaid(log, msg, attr string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, ` msg="`+msg) && (attr == "" || strings.Contains(l+" ", " "+attr+" ")) {
			n++
		}
	}
	return n
}

// witnessEvents are the witness's lines that move the vote or the
// writer record, or refuse a request that got that far.
var witnessEvents = []string{"witness: granted", "witness: released", "witness: lease expired unrenewed", "witness: reinstated",
	"witness: recorded the writer", "witness: cleared the writer", "witness: refused"}

// witnessMove is a witness log line: its message's start and an
// attribute it carries.
type witnessMove struct{ msg, attr string }

// movesWanted: n lines, each one of the moves in any.
type movesWanted struct {
	any []witnessMove
	n   int
}

// witnessMoves fails unless log (a stretch of the witness's log) has
// exactly the moves wanted, and none of witnessEvents besides.
func witnessMoves(t *testing.T, when, log string, want ...movesWanted) {
	t.Helper()
	for _, w := range want {
		got := 0
		for _, m := range w.any {
			got += witnessSaid(log, m.msg, m.attr)
		}
		if got != w.n {
			t.Errorf("%s: the witness logged %+v %d times, want %d:\n%s", when, w.any, got, w.n, grepLines(log, "witness: "))
		}
	}
	for _, l := range strings.Split(log, "\n") {
		event := slices.ContainsFunc(witnessEvents, func(msg string) bool { return witnessSaid(l, msg, "") > 0 })
		wanted := slices.ContainsFunc(want, func(w movesWanted) bool {
			return slices.ContainsFunc(w.any, func(m witnessMove) bool { return witnessSaid(l, m.msg, m.attr) > 0 })
		})
		if event && !wanted {
			t.Errorf("%s: the witness did what it should not have: %s", when, l)
		}
	}
}

// roleLines fails unless vm's console, from mark on, shows exactly
// active role changes to active and standby ones to standby (-1: any).
func roleLines(t *testing.T, vm *qemu.VM, mark, active, standby int) {
	t.Helper()
	text := vm.Console.Text()[mark:]
	for _, c := range []struct {
		line string
		want int
	}{{"role: becoming active", active}, {"role: standby after", standby}} {
		if got := strings.Count(text, c.line); c.want >= 0 && got != c.want {
			t.Errorf("%s: %d console lines %q, want %d:\n%s", vm.Name, got, c.line, c.want, grepLines(text, "role: "))
		}
	}
}

// headDrops are what a head counts of the attacker's packets.
type headDrops struct {
	hb      status.HeartbeatDrops
	answers uint64 // witness answers dropped
}

func (d headDrops) String() string {
	return fmt.Sprintf("heartbeats replayed %d, stale %d, unproven %d, foreign %d, forged %d; witness answers dropped %d",
		d.hb.Replayed, d.hb.Stale, d.hb.Unproven, d.hb.Foreign, d.hb.Forged, d.answers)
}

func headDropsOf(t testing.TB, ctx context.Context, vm *qemu.VM) headDrops {
	t.Helper()
	st := nodeStatus(t, ctx, vm)
	if st.HA == nil {
		t.Fatalf("%s: no HA status", vm.Name)
	}
	return headDrops{st.HA.Heartbeat.Dropped, st.HA.Vote.Dropped}
}

// countedAll waits until vm counted at least what the attacker sent it
// since before, and returns the rise. The heartbeats replayed and
// released late count as replayed, stale or unproven together (which
// one depends on whether either head restarted since they were sent);
// strict, when neither did, wants each under its own counter.
// Reflected heartbeats are foreign (they name the head itself).
func countedAll(t *testing.T, ctx context.Context, vm *qemu.VM, before headDrops, sent hostileSent, strict bool) headDrops {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := headDropsOf(t, ctx, vm)
		d := headDrops{status.HeartbeatDrops{
			Replayed: now.hb.Replayed - before.hb.Replayed, Stale: now.hb.Stale - before.hb.Stale, Unproven: now.hb.Unproven - before.hb.Unproven,
			Foreign: now.hb.Foreign - before.hb.Foreign, Forged: now.hb.Forged - before.hb.Forged}, now.answers - before.answers}
		ok := d.hb.Replayed+d.hb.Stale+d.hb.Unproven >= uint64(sent.replayed+sent.released) && d.hb.Stale >= uint64(sent.released) &&
			d.hb.Foreign >= uint64(sent.reflected) && d.answers >= uint64(sent.answers)
		if strict {
			ok = ok && d.hb.Replayed >= uint64(sent.replayed)
		}
		if ok {
			return d
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Errorf("%s counted %s; the attacker sent it %s", vm.Name, d, sent)
			return d
		}
		sleepCtx(ctx, time.Second)
	}
}

// hostileSent is what the attacker sent one head (to a live one only).
type hostileSent struct {
	replayed  int // recorded heartbeats of its peer
	released  int // its peer's heartbeats held back and released late
	reflected int // its own heartbeats sent back to it
	answers   int // witness answers replayed and its requests reflected, to its witness client's port
}

func (s *hostileSent) add(o hostileSent) {
	s.replayed += o.replayed
	s.released += o.released
	s.reflected += o.reflected
	s.answers += o.answers
}

func (s hostileSent) String() string {
	return fmt.Sprintf("heartbeats replayed %d, released late %d, reflected %d; witness answers %d", s.replayed, s.released, s.reflected, s.answers)
}

// hostile is the attacker on the management segment (see the story
// above). It records into pools and sends from them, and counts what it
// sent where, for the checks.
type hostile struct {
	hub     *qemu.Hub
	heads   map[netip.Addr]string // management address → head
	witness netip.AddrPort
	hbPort  uint16

	mu       sync.Mutex
	hb       map[string][][]byte       // recorded heartbeats, by receiving head
	reqs     map[string][]witnessFrame // recorded witness requests, by head
	answers  map[string][][]byte       // recorded witness answers, by head
	port     map[string]uint16         // each head's witness client port: that of its latest request
	isDown   map[string]bool           // powered off: nothing is sent to it
	holdFrom map[string]bool           // heads whose heartbeats are held back, every second one
	seen     map[string]int
	held     [][]byte
	heldSet  map[string]bool
	sent     map[string]hostileSent // by receiving head, since take
	// Sent to the witness since its restart: requests replayed, and its
	// answers reflected back to it.
	witRequests, witReflected int
}

type witnessFrame struct {
	f  []byte
	op byte // the request's operation: 1 acquire, 2 release, 3 outdate peer, 4 clear writer
}

// newHostile puts the attacker on the hub, recording from now on, until
// the test ends.
func newHostile(t *testing.T, hub *qemu.Hub, sc *site.Config) *hostile {
	wit, err := netip.ParseAddrPort(sc.Witness.Address)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{hub: hub, heads: map[netip.Addr]string{}, witness: wit, hbPort: uint16(sc.HA.HeartbeatPort),
		hb: map[string][][]byte{}, reqs: map[string][]witnessFrame{}, answers: map[string][][]byte{}, port: map[string]uint16{},
		isDown: map[string]bool{}, holdFrom: map[string]bool{}, seen: map[string]int{}, heldSet: map[string]bool{}, sent: map[string]hostileSent{}}
	for _, n := range sc.Nodes {
		h.heads[n.Management.Prefix().Addr()] = n.Name
	}
	hub.SetTap(h.see)
	hub.SetFilter(h.pass)
	t.Cleanup(func() {
		hub.SetTap(nil)
		hub.SetFilter(nil)
	})
	return h
}

// see records a frame a member sent, or holds it back.
func (h *hostile) see(f []byte) {
	src, dst, p, ok := udpOf(f)
	if !ok {
		return
	}
	from, to := h.heads[src.Addr()], h.heads[dst.Addr()]
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case from != "" && to != "" && dst.Port() == h.hbPort:
		if h.holdFrom[from] {
			if h.seen[from]++; h.seen[from]%2 == 0 {
				h.held = append(h.held, f)
				h.heldSet[string(f)] = true
				return
			}
		}
		h.hb[to] = append(h.hb[to], f)
	case from != "" && dst == h.witness && len(p) > 5 && string(p[:4]) == "TDWQ":
		h.reqs[from] = append(h.reqs[from], witnessFrame{f, p[5]})
		h.port[from] = src.Port()
	case to != "" && src == h.witness:
		h.answers[to] = append(h.answers[to], f)
	}
}

// pass is the hub's filter: the frames held back do not get through
// (the attacker's own always do).
func (h *hostile) pass(f []byte, from, _ string) bool {
	if from == "" {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.heldSet[string(f)]
}

func (h *hostile) mustHaveRecorded(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.hb["head-a"]) < 5 || len(h.hb["head-b"]) < 5 || len(h.reqs["head-a"]) < 5 || len(h.answers["head-a"]) < 5 {
		t.Fatalf("the attacker recorded %d heartbeats to head-a, %d to head-b, %d witness requests and %d answers of head-a",
			len(h.hb["head-a"]), len(h.hb["head-b"]), len(h.reqs["head-a"]), len(h.answers["head-a"]))
	}
}

// hold holds back every second heartbeat the heads send from now on,
// until stopHolding.
func (h *hostile) hold(heads ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range heads {
		h.holdFrom[n] = true
	}
}

func (h *hostile) stopHolding() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.holdFrom)
}

// release sends the held-back heartbeats, oldest first, one every gap,
// and returns how many.
func (h *hostile) release(ctx context.Context, gap time.Duration) int {
	h.mu.Lock()
	held := h.held
	h.held = nil
	clear(h.heldSet)
	h.mu.Unlock()
	for _, f := range held {
		_, dst, _, _ := udpOf(f)
		to := h.heads[dst.Addr()]
		h.mu.Lock()
		down := h.isDown[to]
		if !down {
			s := h.sent[to]
			s.released++
			h.sent[to] = s
		}
		h.mu.Unlock()
		if !down {
			h.hub.Inject(f)
		}
		sleepCtx(ctx, gap)
	}
	return len(held)
}

// down and up: a head lost power, and is back; its witness client has a
// new port then.
func (h *hostile) down(head string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.isDown[head] = true
	delete(h.port, head)
}

func (h *hostile) up(head string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.isDown[head] = false
}

// take returns what was sent to each head since the last take.
func (h *hostile) take() map[string]hostileSent {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sent
	h.sent = map[string]hostileSent{}
	return s
}

// barrage replays and reflects every period until stopped; stop may be
// called more than once.
func (h *hostile) barrage(ctx context.Context, period time.Duration) (stop func()) {
	h.mu.Lock()
	h.witRequests, h.witReflected = 0, 0 // the witness was just restarted: its counts start at 0
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			h.burst()
			sleepCtx(ctx, period)
		}
	}()
	return func() { cancel(); <-done }
}

// burst sends one round: recorded heartbeats to their receiver and back
// to their sender; every recorded release, outdate-peer and clear-writer
// request and some acquires to the witness, and some back to their
// sender; some recorded answers to their head, and back to the witness.
func (h *hostile) burst() {
	var out [][]byte
	h.mu.Lock()
	count := func(head string, fn func(*hostileSent)) {
		if !h.isDown[head] {
			s := h.sent[head]
			fn(&s)
			h.sent[head] = s
		}
	}
	for to, pool := range h.hb {
		from := peerName(to)
		if !h.isDown[to] {
			for _, f := range pick(pool, 3) {
				out = append(out, f)
				count(to, func(s *hostileSent) { s.replayed++ })
			}
		}
		if !h.isDown[from] {
			for _, f := range pick(pool, 1) {
				out = append(out, reflectFrame(f))
				count(from, func(s *hostileSent) { s.reflected++ })
			}
		}
	}
	// A witness answer counts at the head only if its client still
	// listens on the port it went to.
	toClient := func(head string, f []byte) {
		out = append(out, f)
		if _, dst, _, _ := udpOf(f); h.port[head] == dst.Port() {
			count(head, func(s *hostileSent) { s.answers++ })
		}
	}
	for head, pool := range h.reqs {
		var all, rare, acquires [][]byte
		for _, w := range pool {
			all = append(all, w.f)
			if w.op == 1 {
				acquires = append(acquires, w.f)
			} else {
				rare = append(rare, w.f)
			}
		}
		for _, f := range append(rare[max(len(rare)-8, 0):], pick(acquires, 3)...) {
			out = append(out, f)
			h.witRequests++
		}
		if !h.isDown[head] {
			for _, f := range pick(all, 1) {
				toClient(head, reflectFrame(f))
			}
		}
	}
	for head, pool := range h.answers {
		if !h.isDown[head] {
			for _, f := range pick(pool, 2) {
				toClient(head, f)
			}
		}
		for _, f := range pick(pool, 1) {
			out = append(out, reflectFrame(f))
			h.witReflected++
		}
	}
	h.mu.Unlock()
	// Not under h.mu: the hub's filter takes it.
	for _, f := range out {
		h.hub.Inject(f)
	}
}

// witnessCounted waits until the witness's summary of refused requests
// (logged every 5 s while they rise) counts what the attacker sent it
// since its restart: replayed requests as replayed or challenged (a
// request proving freshness against the witness's previous run is
// challenged), its own answers reflected back as malformed.
func (h *hostile) witnessCounted(t *testing.T, ctx context.Context, vm *qemu.VM) {
	t.Helper()
	h.mu.Lock()
	reqs, refl := h.witRequests, h.witReflected
	h.mu.Unlock()
	summary := regexp.MustCompile(`msg="witness: requests refused so far".* replayed=(\d+) forged=(\d+) malformed=(\d+) wrong_pair=(\d+) unknown_node=(\d+) challenged=(\d+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		log := witnessLog(t, ctx, vm)
		log = log[max(strings.LastIndex(log, "witness: serving"), 0):]
		var c [6]int
		if m := summary.FindAllStringSubmatch(log, -1); len(m) > 0 {
			for i := range c {
				c[i], _ = strconv.Atoi(m[len(m)-1][i+1])
			}
		}
		if c[0]+c[5] >= reqs && c[2] >= refl {
			t.Logf("the witness since its restart: %d requests replayed, %d challenged, %d malformed, %d forged; the attacker sent it %d recorded requests and %d of its answers",
				c[0], c[5], c[2], c[1], reqs, refl)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Errorf("the witness counted %d replayed and %d challenged requests (the attacker sent %d), %d malformed (sent %d of its answers back)",
				c[0], c[5], reqs, c[2], refl)
			return
		}
		sleepCtx(ctx, 2*time.Second)
	}
}

func peerName(head string) string {
	if head == "head-a" {
		return "head-b"
	}
	return "head-a"
}

// pick is up to k frames of a pool: the newest and random others.
func pick(pool [][]byte, k int) [][]byte {
	if len(pool) == 0 || k == 0 {
		return nil
	}
	out := [][]byte{pool[len(pool)-1]}
	for len(out) < k {
		out = append(out, pool[rand.IntN(len(pool))])
	}
	return out
}

// The attacker's reflections are well-formed packets: addresses and
// ports swapped, checksums right.
func TestReflectFrame(t *testing.T) {
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, b} }
	f := ipUDPFrame(mac(2), mac(1), [4]byte{10, 0, 0, 11}, [4]byte{10, 0, 0, 2}, 40000, 7791, []byte("TDWQ request, odd length"))
	fixChecksums(f)
	g := reflectFrame(f)
	src, dst, p, ok := udpOf(g)
	if !ok || src != netip.MustParseAddrPort("10.0.0.2:7791") || dst != netip.MustParseAddrPort("10.0.0.11:40000") ||
		string(p) != "TDWQ request, odd length" || g[5] != 1 || g[11] != 2 {
		t.Fatalf("reflected: %v → %v %q, MACs %x %x", src, dst, p, g[0:6], g[6:12])
	}
	for _, fr := range [][]byte{f, g} {
		ip := fr[14:34]
		udp := fr[34:]
		pseudo := append(append([]byte(nil), ip[12:20]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
		if inetSum(ip) != 0 || inetSum(append(pseudo, udp...)) != 0 || binary.BigEndian.Uint16(udp[6:]) == 0 {
			t.Errorf("checksums wrong: IP %#04x, UDP %#04x", inetSum(ip), inetSum(append(pseudo, udp...)))
		}
	}
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}
