package scenarios_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
	"tandem.dev/tandem/status"
)

// R3 (docs/ha.md): every link between the heads breaks while the
// witness stays reachable from both, and the witness alone decides.
//
//  1. The full lab boots with the witness on the client; head-a serves
//     with the witness vote. The client writes checksummed records
//     through the VIP over a hard NFSv3 mount for the whole story.
//  2. Every link between the heads is cut: both replication links, at
//     both ends, and the management segment between the two heads (the
//     hub stops switching their frames to each other). Each head still
//     reaches the client, and so the witness.
//  3. The partition lasts the dead time, the lease and the takeover
//     delay and then several dead times more: long enough for a wrong
//     takeover to happen. Meanwhile both heads are watched, their DRBD
//     role every second and their status as often as it answers: head-a
//     keeps serving on its witness vote; head-b, without the vote, stays
//     stopped (standby, DRBD Secondary) and never records a takeover. At
//     no instant are there two primaries: no sample shows one, and both
//     heads' event logs (console and kernel log) show head-b's DRBD never
//     promoted and head-a's never demoted. head-a's DRBD froze its I/O on
//     losing head-b and resumed once the witness recorded head-a as the
//     only current copy.
//  4. The links heal. DRBD reconnects by itself and resyncs head-b from
//     head-a, with no split brain and no discard on either head, and the
//     witness lifts its record.
//  5. The client saw no I/O error and lost no acknowledged record. After
//     a switchover to the resynced head-b, every record still reads back
//     through the VIP: the writes made during the partition reached it.
func TestFailoverPartitionBetweenHeads(t *testing.T) {
	ctx, lab, sc := startHALab(t, 30*time.Minute)
	interval, dead, lease := membershipTiming(sc)
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The pair serves; the client writes.
	stA := pairReady(t, ctx, a)
	delay := time.Duration(stA.HA.Timing.TakeoverDelayMS) * time.Millisecond
	stB := nodeStatus(t, ctx, b)
	failoversA, failoversB := len(stA.HA.Failovers), len(stB.HA.Failovers)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 30*time.Minute) // stopped once the pair is whole again
	wstart := time.Now()
	sleepCtx(ctx, 8*time.Second)

	// 2. The partition: nothing passes between the heads, each reaches
	// the client and the witness.
	marks := map[string]int{"head-a": a.Console.Len(), "head-b": b.Console.Len()}
	down := map[string][]*consoleMark{}
	for _, vm := range []*qemu.VM{a, b} {
		for _, path := range []string{"replication", "management"} {
			down[vm.Name] = append(down[vm.Name], consoleAt(ctx, vm, marks[vm.Name], regexp.MustCompile(`heartbeat: path down.* path=`+path)))
		}
	}
	cutOff := time.Since(wstart)
	lab.Hub.SetFilter(apart("head-a", "head-b"))
	setRepLinks(t, lab, false)
	cut := time.Now()
	w := watchHeads(ctx, a, b)

	// 3. Long enough for a wrong takeover: head-b would get the vote
	// after the lease at the latest and promote a takeover delay later.
	// And long enough for head-a to serve alone for a while after its
	// DRBD has noticed the loss (ping-int plus ping-timeout, 4 s).
	hold := max(max(dead, lease)+interval+delay+4*dead, 25*time.Second)
	t.Logf("partition: every link between the heads cut for %v (dead time %v, lease %v, takeover delay %v)", hold, dead, lease, delay)
	sleepCtx(ctx, hold)
	// Only the partition's samples count; the heal is seen below.
	samples := w.stop()
	proc, err := readDRBD(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %.1f s of partition: head-a's DRBD %s %s/%s %s/%s, %d KiB out of sync with head-b",
		time.Since(cut).Seconds(), proc.CS, proc.Role, proc.PeerRole, proc.Disk, proc.PeerDisk, proc.OOS)
	if proc.OOS == 0 {
		t.Errorf("head-a wrote nothing during the partition (oos 0): the client's writes did not reach it")
	}

	// The fault must be real: each head lost the other on both paths
	// within the dead time (and some slack for TCG), by its event log,
	// and its status said so.
	for _, vm := range []*qemu.VM{a, b} {
		var lost time.Time
		for _, m := range down[vm.Name] {
			at := m.at(ctx, time.Second)
			if at.IsZero() {
				t.Fatalf("%s never logged a heartbeat path down: the cut did not take", vm.Name)
			}
			if at.After(lost) {
				lost = at
			}
		}
		if d := lost.Sub(cut); d > dead+5*time.Second {
			t.Errorf("%s still heard its peer %v into the partition (dead time %v)", vm.Name, d, dead)
		}
		if samples.firstStatus(vm.Name, func(s status.Status) bool {
			return s.HA != nil && !s.HA.Heartbeat.Alive && pathsUp(s.HA) == 0
		}).IsZero() {
			t.Fatalf("%s's status never showed the peer silent on both paths: the cut did not take", vm.Name)
		}
		t.Logf("%s lost its peer on both paths %.1f s into the partition", vm.Name, lost.Sub(cut).Seconds())
	}
	// head-a serves throughout on its vote; head-b never promotes.
	for _, s := range samples.status["head-a"] {
		at := s.at.Sub(cut).Seconds()
		switch {
		case s.st.Role != "active" || s.st.DRBD == nil || s.st.DRBD.Role != "Primary":
			t.Errorf("head-a %.1f s into the partition: role %s, DRBD %+v; it holds the vote and must keep serving", at, s.st.Role, s.st.DRBD)
		case s.st.HA == nil || !s.st.HA.Quorum || !s.st.HA.Vote.Held:
			t.Errorf("head-a %.1f s into the partition: no quorum or no vote: %+v", at, s.st.HA)
		case len(s.st.HA.Failovers) != failoversA:
			t.Errorf("head-a %.1f s into the partition recorded a role change: %+v", at, s.st.HA.Failovers[0])
		}
	}
	var alert string
	for _, s := range samples.status["head-b"] {
		at := s.at.Sub(cut).Seconds()
		switch {
		case s.st.Role == "active" || s.st.DRBD == nil || s.st.DRBD.Role != "Secondary":
			t.Errorf("head-b %.1f s into the partition: role %s, DRBD %+v; without the vote it must stay stopped", at, s.st.Role, s.st.DRBD)
		case s.st.HA == nil || s.st.HA.Vote.Held:
			t.Errorf("head-b %.1f s into the partition holds the witness vote: %+v", at, s.st.HA)
		case len(s.st.HA.Failovers) != failoversB:
			t.Errorf("head-b %.1f s into the partition recorded a role change: %+v", at, s.st.HA.Failovers[0])
		}
		if s.st.HA != nil && s.st.HA.Alert != "" {
			alert = fmt.Sprintf("%s (vote holder %q, witness says %q)", s.st.HA.Alert, s.st.HA.Vote.Holder, s.st.HA.Vote.Last)
		}
	}
	t.Logf("head-b's alert during the partition: %s", alert)
	samples.noTwoPrimaries(t)
	if n := len(samples.drbd["head-a"]) + len(samples.drbd["head-b"]); n < int(hold/time.Second) {
		t.Errorf("only %d DRBD samples of both heads in %v", n, hold)
	}
	t.Logf("watched: %d DRBD and %d status samples of head-a, %d and %d of head-b; %d agent calls failed; the hub filtered %d frames",
		len(samples.drbd["head-a"]), len(samples.status["head-a"]), len(samples.drbd["head-b"]), len(samples.status["head-b"]),
		samples.failed, lab.Hub.Filtered.Load())
	// head-b saw the partition and refused to take over; head-a kept
	// its role. Their consoles are PID 1's event log.
	// The first alert is the missing vote; once the witness says head-a
	// wrote alone, head-b also counts its own disk as outdated.
	mustLogAfter(t, b, marks["head-b"], "alert: peer not seen and ")
	for _, bad := range []string{"role: becoming active", "drbd primary", "fence-peer-then-promote", "fencing head-a"} {
		if strings.Contains(b.Console.Text()[marks["head-b"]:], bad) {
			t.Errorf("head-b's console has %q during the partition", bad)
		}
	}
	for _, bad := range []string{"role: releasing", "quorum lost", "SELF-FENCE"} {
		if strings.Contains(a.Console.Text()[marks["head-a"]:], bad) {
			t.Errorf("head-a's console has %q during the partition", bad)
		}
	}
	mustLogAfter(t, a, marks["head-a"], "the witness now records this head's data as the only current copy")
	if t.Failed() {
		t.FailNow()
	}

	// 4. The links heal; DRBD reconnects and resyncs head-b.
	healed := time.Now()
	lab.Hub.SetFilter(nil)
	setRepLinks(t, lab, true)
	if err := waitPairWhole(ctx, a, b, marks); err != nil {
		t.Fatal(err)
	}
	resync := time.Since(healed)
	after := pairReady(t, ctx, a) // the witness's record lifted, too
	mustLogAfter(t, a, marks["head-a"], "head-b has resynced: the witness no longer records it as outdated")
	if len(after.HA.Failovers) != failoversA {
		t.Errorf("head-a changed role across the heal: %+v", after.HA.Failovers[0])
	}
	if st := nodeStatus(t, ctx, b); len(st.HA.Failovers) != failoversB || st.Role != "standby" {
		t.Errorf("head-b after the heal: role %s, failovers %+v", st.Role, st.HA.Failovers)
	}
	// The kernel logs: one primary from boot to now, a resync from
	// head-a to head-b, no split brain.
	klogA, klogB := kernelLog(t, ctx, a), kernelLog(t, ctx, b)
	if n := len(drbdPromoted.FindAllString(klogA, -1)); n != 1 {
		t.Errorf("head-a's kernel log shows its DRBD promoted %d times, want once (at the start)", n)
	}
	if n := len(drbdPromoted.FindAllString(klogB, -1)); n != 0 {
		t.Errorf("head-b's kernel log shows its DRBD promoted %d times", n)
	}
	if n := len(drbdDemoted.FindAllString(klogA, -1)); n != 0 {
		t.Errorf("head-a's kernel log shows its DRBD demoted %d times", n)
	}
	for name, klog := range map[string]string{"head-a": klogA, "head-b": klogB} {
		if m := splitBrain.FindString(klog); m != "" {
			t.Errorf("%s's kernel log: %q", name, m)
		}
	}
	source := regexp.MustCompile(`Began resync as SyncSource \(will sync (\d+) KB`).FindAllStringSubmatch(klogA, -1)
	done := regexp.MustCompile(`Resync done \(total (\d+) sec`).FindAllStringSubmatch(klogA, -1)
	if len(source) == 0 || len(done) == 0 || !strings.Contains(klogB, "Began resync as SyncTarget") {
		t.Errorf("no resync from head-a to head-b in the kernel logs (SyncSource %v, done %v)", source, done)
	} else {
		t.Logf("healed: DRBD Connected and UpToDate/UpToDate %.1f s after the links came back; resync of %s KB as SyncSource took %s s (kernel)",
			resync.Seconds(), source[len(source)-1][1], done[len(done)-1][1])
	}

	// 5. The client's writes: nothing failed, nothing lost, and every
	// record reads back from head-b's copy too.
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	if s := stallAt(r, cutOff); s != nil {
		t.Logf("client stall at the cut: %.1f s (DRBD waiting out the lost peer)", s.Took.Seconds())
		if s.Took > hold-5*time.Second {
			t.Errorf("the client could not write for %v of the %v partition: head-a did not keep serving", s.Took, hold)
		}
	}
	res, err := a.Agent().Run(ctx, "tandem", "switchover")
	if err != nil || res.Exit != 0 || !strings.Contains(string(res.Stdout), "head-b is active") {
		t.Fatalf("switchover to head-b: exit %d, %v: %s%s", res.Exit, err, res.Stdout, res.Stderr)
	}
	verifyUncached(t, ctx, client, r)
	t.Logf("R3: partition of %.1f s, the witness kept head-a serving and head-b stopped; one primary throughout; resync %.1f s; %d records acknowledged",
		hold.Seconds(), resync.Seconds(), r.Acked)
}

// R6 (docs/ha.md): a stop that cannot finish ends in a reset, and the
// peer's takeover meanwhile loses nothing.
//
//  1. The full lab boots with the witness on the client; head-a serves,
//     and the client writes checksummed records through the VIP over a
//     hard NFSv3 mount.
//  2. A process on head-a holds the filesystem busy (its working
//     directory is in the export), so the stack cannot stop.
//  3. head-a is cut off from everyone: its replication links and every
//     management frame to or from it. It loses its peer and its witness
//     vote, so it must stop its stack within the stop bound. The stop
//     cannot finish (the unmount stays busy, or nfsd, its last writes
//     waiting on the lost peer, uses up the bound first; or DRBD has
//     frozen head-a's I/O on losing the peer, and head-a restarts at
//     once), and head-a is reset (self-fence or watchdog) within the stop
//     bound and the watchdog timeout of losing quorum.
//  4. head-b takes over once it holds the vote, no sooner than the
//     takeover delay after the cut, and possibly before head-a's reset:
//     head-a's DRBD froze its writes, so none of them is on head-a
//     alone. The client's writes go on through the VIP on head-b.
//  5. head-a boots again, still cut off, and stays standby: a head
//     that booted alone never takes over. The links are restored and it
//     rejoins as the standby: DRBD resyncs it from head-b, with no split
//     brain (which it would meet had head-a's DRBD written on alone
//     after losing its peer), and the witness lifts its record of head-a
//     as outdated. The client saw no error, and every acknowledged
//     record reads back from head-b's disk.
func TestFailoverHungStopResets(t *testing.T) {
	ctx, lab, sc := startHALab(t, 30*time.Minute)
	interval, dead, lease := membershipTiming(sc)
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The pair serves; the client writes.
	stA := pairReady(t, ctx, a)
	tm := stA.HA.Timing
	delay := time.Duration(tm.TakeoverDelayMS) * time.Millisecond
	stopBound := time.Duration(tm.StopBoundMS) * time.Millisecond
	watchdog := time.Duration(tm.WatchdogMS) * time.Millisecond
	t.Logf("pair up: head-a active; stop bound %v, watchdog %v, takeover delay %v", stopBound, watchdog, delay)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 30*time.Minute) // stopped once the pair is whole again
	wstart := time.Now()

	// 2. The filesystem held busy.
	pid := strings.TrimSpace(guest(t, ctx, a, "busybox", "sh", "-c",
		"cd /srv/tandem/vm && (busybox sleep 100000 < /dev/null > /dev/null 2>&1 & echo $!)"))
	if cwd := strings.TrimSpace(guest(t, ctx, a, "busybox", "readlink", "/proc/"+pid+"/cwd")); cwd != "/srv/tandem/vm" {
		t.Fatalf("the busy process %s on head-a has its cwd in %q", pid, cwd)
	}
	sleepCtx(ctx, 8*time.Second)

	// 3. head-a alone: no peer, no witness, no client.
	mark, markB := a.Console.Len(), b.Console.Len()
	lost := consoleAt(ctx, a, mark, regexp.MustCompile(`quorum lost while active`))
	took := consoleAt(ctx, b, markB, regexp.MustCompile(`role: becoming active`))
	cutOff := time.Since(wstart)
	lab.Hub.SetFilter(alone("head-a"))
	setRepLinks(t, lab, false)
	cut := time.Now()
	// Quorum is gone once the peer is unseen and the lease has run
	// out; the stack must be down a stop bound later, or the watchdog
	// resets the head.
	worst := max(dead, lease) + interval + stopBound + watchdog + 10*time.Second // TCG's scheduling
	rctx, rcancel := context.WithTimeout(ctx, worst)
	reset, err := a.WaitEvent(rctx, "RESET", cut)
	rcancel()
	if err != nil {
		t.Fatalf("head-a was not reset within %v of being cut off: %v", worst, err)
	}
	lostAt := lost.at(ctx, 5*time.Second)
	if lostAt.IsZero() {
		t.Fatal("head-a never said it lost quorum, yet it was reset")
	}
	var how []string
	for _, ev := range a.Events() {
		if !ev.Time.Before(cut) && (ev.Name == "RESET" || ev.Name == "WATCHDOG") {
			how = append(how, ev.Name+" "+string(ev.Data))
		}
	}
	text := a.Console.Text()[mark:]
	boot := strings.Index(text, "tandem: PID 1 starting")
	if boot < 0 {
		boot = len(text)
	}
	before := text[:boot] // the old boot's last words
	// The stop must not have finished. What held it up varies with what
	// was in flight at the cut: the busy unmount; the filesystem probe,
	// or nfsd's last writes, waiting on the lost peer until DRBD gives up
	// on it, using up the bound first.
	if strings.Contains(before, "role: standby after") {
		t.Fatalf("head-a's stack stopped despite the busy filesystem: the fault did not take; its console:\n%s", before)
	}
	if why := stopFailure.FindString(before); why != "" {
		t.Logf("head-a's stop did not finish: %.240s", why)
	} else {
		t.Errorf("head-a's console does not say why its stop did not finish:\n%s", before)
	}
	selfFence := strings.Contains(before, "SELF-FENCE")
	// Whether head-a's DRBD noticed the lost peer before the reset
	// (its errors reach the console): if it did, it wrote on alone.
	if l := drbdLines(before, `drbd`); len(l) > 0 {
		t.Logf("head-a's DRBD before the reset:\n\t%s", strings.Join(l, "\n\t"))
	} else {
		t.Logf("head-a's DRBD logged no error before the reset (it had not noticed the lost peer yet)")
	}
	t.Logf("head-a lost quorum %.1f s after the cut and was reset %.1f s later (stop bound %v, watchdog %v): self-fence %v, QMP %s",
		lostAt.Sub(cut).Seconds(), reset.Time.Sub(lostAt).Seconds(), stopBound, watchdog, selfFence, strings.Join(how, "; "))
	if d := reset.Time.Sub(lostAt); d > stopBound+watchdog+time.Second {
		t.Errorf("head-a was reset %v after losing quorum, past the stop bound and the watchdog (%v)", d, stopBound+watchdog)
	}
	if !selfFence && !slices.ContainsFunc(how, func(s string) bool { return strings.HasPrefix(s, "WATCHDOG") }) {
		t.Errorf("head-a was reset neither by its self-fence nor by the watchdog: %v", how)
	}

	// 4. head-b takes over, after the reset and the takeover delay.
	tookAt := took.at(ctx, max(dead, lease)+interval+delay+2*time.Minute)
	if tookAt.IsZero() {
		t.Fatalf("head-b did not take over")
	}
	if d := tookAt.Sub(cut); d < delay {
		t.Errorf("head-b began to take over %v after the cut, before the takeover delay of %v", d, delay)
	}
	stB := waitStatus(t, ctx, b, func(s status.Status) bool {
		return s.Role == "active" && s.HA != nil && len(s.HA.Failovers) > 0 && s.HA.Failovers[0].Kind == "takeover" &&
			s.DRBD != nil && s.DRBD.Role == "Primary"
	})
	f := stB.HA.Failovers[0]
	t.Logf("head-b began to take over %.1f s after the cut (head-a was reset %.1f s after it); its timeline, %.1f s from head-a's last heartbeat: %s",
		tookAt.Sub(cut).Seconds(), reset.Time.Sub(cut).Seconds(), float64(f.TotalMS)/1000, failoverSteps(f))
	if !f.OK {
		t.Errorf("head-b's takeover failed: %+v", f)
	}
	for _, g := range stB.HA.Failovers[1:] {
		if !g.OK {
			t.Logf("head-b's earlier attempt (%s) failed: %s", g.Kind, g.Error)
		}
	}

	// 5. head-a comes back alone and must not take over.
	ready := regexp.MustCompile(`HA supervisor running`)
	if _, err := a.Console.WaitForAfter(ctx, mark+boot, ready); err != nil {
		t.Fatal(err)
	}
	sleepCtx(ctx, max(dead, lease)+interval+delay+5*time.Second)
	stA = waitStatus(t, ctx, a, func(s status.Status) bool { return s.HA != nil && s.DRBD != nil })
	if stA.Role == "active" || stA.DRBD.Role == "Primary" {
		t.Errorf("head-a booted alone and took over: role %s, DRBD %+v", stA.Role, stA.DRBD)
	} else {
		t.Logf("head-a back alone: role %s, DRBD %s %s, decision %s: %s", stA.Role, stA.DRBD.Role, stA.DRBD.Disk,
			stA.HA.Decision.Action, stA.HA.Decision.Reason)
	}
	healed := time.Now()
	lab.Hub.SetFilter(nil)
	setRepLinks(t, lab, true)
	// A failed rejoin is reported, and the client's records are still
	// checked below.
	if err := waitPairWhole(ctx, b, a, map[string]int{"head-a": mark, "head-b": markB}); err != nil {
		t.Errorf("head-a did not rejoin: %v", err)
	} else {
		rejoin := time.Since(healed)
		pairReady(t, ctx, b)
		if st := nodeStatus(t, ctx, a); st.Role != "standby" {
			t.Errorf("head-a rejoined as %s, want standby", st.Role)
		}
		t.Logf("head-a rejoined as the standby, DRBD UpToDate/UpToDate, %.1f s after its links came back", rejoin.Seconds())
	}
	// How DRBD matched the two heads' data generations, and the resync.
	klogA, klogB := kernelLog(t, ctx, a), kernelLog(t, ctx, b)
	for name, klog := range map[string]string{"head-a": klogA, "head-b": klogB} {
		t.Logf("%s's DRBD handshake:\n\t%s", name, strings.Join(drbdLines(klog, `uuid_compare|Becoming sync|Began resync|Resync done|Split-Brain`), "\n\t"))
		if m := splitBrain.FindString(klog); m != "" {
			t.Errorf("%s's kernel log: %q", name, m)
		}
	}

	r := finishWorkload(t, ctx, client, "/tmp/v3")
	if s := stallAt(r, cutOff); s != nil {
		t.Logf("client stall at the cut: %.1f s", s.Took.Seconds())
	} else {
		t.Errorf("no client stall at the cut (%v into the run): %+v", cutOff, r.Stalls)
	}
	// Read back from the servers' disks, not the client's page cache.
	verifyUncached(t, ctx, client, r)
	t.Logf("R6: hung stop → reset %.1f s after quorum loss; head-b took over %.1f s after the cut; %d records acknowledged",
		reset.Time.Sub(lostAt).Seconds(), tookAt.Sub(cut).Seconds(), r.Acked)
}

// verifyUncached checks every acknowledged record of r through the VIP
// with the client's page cache dropped first: the records come from the
// serving head's disk, not from the pages the client wrote them from.
func verifyUncached(t testing.TB, ctx context.Context, client *qemu.VM, r *workload.Report) {
	t.Helper()
	guest(t, ctx, client, "busybox", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches")
	res, err := client.Agent().Run(ctx, "tandem", "workload", "--verify", r.File, "--acked", fmt.Sprint(r.Acked))
	if err != nil || res.Exit != 0 {
		t.Errorf("verifying the records through the VIP, uncached: %v %s%s", err, res.Stdout, res.Stderr)
		return
	}
	t.Logf("read back uncached: %s", strings.TrimSpace(string(res.Stdout)))
}

// apart is a hub filter that drops the frames between members x and y.
func apart(x, y string) func([]byte, string, string) bool {
	return func(_ []byte, from, to string) bool {
		return !(from == x && to == y || from == y && to == x)
	}
}

// alone is a hub filter that drops every frame to or from member x.
func alone(x string) func([]byte, string, string) bool {
	return func(_ []byte, from, to string) bool { return from != x && to != x }
}

// setRepLinks cuts or restores both replication links at both ends.
func setRepLinks(t testing.TB, lab *qemu.Lab, up bool) {
	t.Helper()
	for _, name := range []string{"head-a", "head-b"} {
		for _, l := range []string{"rep0", "rep1"} {
			if err := lab.VM(name).SetLink(l, up); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// drbdProc is one look at /proc/drbd (DRBD 8.4).
type drbdProc struct {
	At                                 time.Time
	CS, Role, PeerRole, Disk, PeerDisk string
	OOS                                int64 // KiB out of sync
}

var (
	procDRBD = regexp.MustCompile(`\d+: cs:(\S+)(?: ro:(\w+)/(\w+) ds:(\w+)/(\w+))?`)
	procOOS  = regexp.MustCompile(`oos:(\d+)`)
)

func readDRBD(ctx context.Context, vm *qemu.VM) (drbdProc, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := vm.Agent().Run(ctx, "busybox", "cat", "/proc/drbd")
	at := time.Now()
	if err != nil || res.Exit != 0 {
		return drbdProc{}, fmt.Errorf("%s: /proc/drbd: %v %s", vm.Name, err, res.Stderr)
	}
	m := procDRBD.FindStringSubmatch(string(res.Stdout))
	if m == nil {
		return drbdProc{}, fmt.Errorf("%s: /proc/drbd: %q", vm.Name, res.Stdout)
	}
	p := drbdProc{At: at, CS: m[1], Role: m[2], PeerRole: m[3], Disk: m[4], PeerDisk: m[5]}
	if o := procOOS.FindStringSubmatch(string(res.Stdout)); o != nil {
		p.OOS, _ = strconv.ParseInt(o[1], 10, 64)
	}
	return p, nil
}

// headSamples is what watchHeads saw of each head.
type headSamples struct {
	drbd   map[string][]drbdProc
	status map[string][]timedStatus
	failed int
}

type timedStatus struct {
	at time.Time
	st status.Status
}

// headWatch samples heads until stop: DRBD's role every second, and
// `tandem status --json` as often as it answers (its query of an
// unreachable peer takes a few seconds).
type headWatch struct {
	mu     sync.Mutex
	s      headSamples
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func watchHeads(ctx context.Context, vms ...*qemu.VM) *headWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &headWatch{s: headSamples{drbd: map[string][]drbdProc{}, status: map[string][]timedStatus{}}, cancel: cancel}
	for _, vm := range vms {
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				p, err := readDRBD(ctx, vm)
				w.mu.Lock()
				if err != nil {
					w.s.failed++
				} else {
					w.s.drbd[vm.Name] = append(w.s.drbd[vm.Name], p)
				}
				w.mu.Unlock()
				sleepCtx(ctx, time.Second-time.Since(t0))
			}
		}()
		go func() {
			defer w.wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
				res, err := vm.Agent().Run(rctx, "tandem", "status", "--json")
				rcancel()
				var st status.Status
				w.mu.Lock()
				if err == nil && res.Exit == 0 && json.Unmarshal(res.Stdout, &st) == nil {
					w.s.status[vm.Name] = append(w.s.status[vm.Name], timedStatus{time.Now(), st})
				} else if ctx.Err() == nil {
					w.s.failed++
				}
				w.mu.Unlock()
				sleepCtx(ctx, time.Second-time.Since(t0))
			}
		}()
	}
	return w
}

// stop ends the watch and returns the samples.
func (w *headWatch) stop() headSamples {
	w.cancel()
	w.wg.Wait()
	return w.s
}

// firstStatus is when a status sample of name first satisfied ok.
func (s headSamples) firstStatus(name string, ok func(status.Status) bool) time.Time {
	for _, ts := range s.status[name] {
		if ok(ts.st) {
			return ts.at
		}
	}
	return time.Time{}
}

// noTwoPrimaries fails if any DRBD sample shows head-b Primary, or a
// sample of each head within a second of each other shows both Primary.
func (s headSamples) noTwoPrimaries(t *testing.T) {
	t.Helper()
	for _, p := range s.drbd["head-b"] {
		if p.Role == "Primary" {
			t.Errorf("head-b's DRBD is Primary at %s", p.At.Format("15:04:05.000"))
		}
		for _, q := range s.drbd["head-a"] {
			if d := p.At.Sub(q.At); d > -time.Second && d < time.Second && p.Role == "Primary" && q.Role == "Primary" {
				t.Errorf("two primaries: head-a at %s, head-b at %s", q.At.Format("15:04:05.000"), p.At.Format("15:04:05.000"))
			}
		}
	}
	for _, p := range s.drbd["head-a"] {
		if p.Role != "Primary" {
			t.Errorf("head-a's DRBD is %s at %s (%s)", p.Role, p.At.Format("15:04:05.000"), p.CS)
		}
	}
}

// consoleMark records when (host time) a console line first matches
// after a mark.
type consoleMark struct {
	done chan struct{}
	t    time.Time
}

func consoleAt(ctx context.Context, vm *qemu.VM, mark int, re *regexp.Regexp) *consoleMark {
	m := &consoleMark{done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if _, err := vm.Console.WaitForAfter(ctx, mark, re); err == nil {
			m.t = time.Now()
		}
	}()
	return m
}

// at waits up to within for the line; zero if it never came.
func (m *consoleMark) at(ctx context.Context, within time.Duration) time.Time {
	select {
	case <-m.done:
		return m.t
	case <-time.After(within):
	case <-ctx.Done():
	}
	return time.Time{}
}

// stopFailure is the first sign on a console that a stop did not finish.
var stopFailure = regexp.MustCompile(`(ERROR stop \S+ (failed|timeout)|the stop overran its bound|DRBD froze this head's I/O)[^\n]*`)

var (
	drbdPromoted = regexp.MustCompile(`drbd\d+: role\( Secondary -> Primary \)`)
	drbdDemoted  = regexp.MustCompile(`drbd\d+: role\( Primary -> Secondary \)`)
	// DRBD 8.4's split-brain lines ("Split-Brain detected ...", the
	// split-brain helper), a resync that throws a head's data away, and
	// Tandem's monitor on a connection dropped for a split brain.
	splitBrain = regexp.MustCompile(`(?i).*(split-brain|discard-my-data|discarding|split brain).*`)
)

// kernelLog is the guest's kernel ring buffer, DRBD's state changes
// with PID 1's log; it fails if the buffer no longer reaches the boot.
func kernelLog(t *testing.T, ctx context.Context, vm *qemu.VM) string {
	t.Helper()
	out := guest(t, ctx, vm, "busybox", "dmesg")
	if !strings.Contains(out, "Linux version") {
		t.Errorf("%s's kernel log no longer reaches its boot: the DRBD history is incomplete", vm.Name)
	}
	return out
}

// drbdLines are the lines of a log that mention DRBD and match re.
func drbdLines(log, re string) []string {
	match := regexp.MustCompile(re)
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "drbd") && !strings.Contains(l, "tandem:") && match.MatchString(l) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// waitPairWhole waits until active's DRBD is Connected and both disks
// are UpToDate again; it gives up at once on a split brain on either
// console.
func waitPairWhole(ctx context.Context, active, other *qemu.VM, marks map[string]int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		for _, vm := range []*qemu.VM{active, other} {
			if m := splitBrain.FindString(vm.Console.Text()[marks[vm.Name]:]); m != "" {
				return fmt.Errorf("%s: %s", vm.Name, strings.TrimSpace(m))
			}
		}
		p, err := readDRBD(ctx, active)
		if err == nil && p.CS == "Connected" && p.Disk == "UpToDate" && p.PeerDisk == "UpToDate" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s's DRBD did not reconnect and resync within 5 minutes: %+v %v", active.Name, p, err)
		}
		sleepCtx(ctx, time.Second)
	}
}
