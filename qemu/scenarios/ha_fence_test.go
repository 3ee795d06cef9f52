package scenarios_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/status"
)

// DRBD's fencing when the witness cannot answer: a head that can still
// reach its peer outdates it through DRBD's fence-peer hook. The active
// head's writes stay frozen until the peer, still heard over the
// management network, has marked its own disk Outdated in DRBD's
// metadata; then they go on, with no witness at all.
//
//  1. The full lab boots with the witness on the client; head-a serves
//     and the client writes through the VIP over a hard NFSv3 mount.
//  2. The witness is paused (SIGSTOP): head-a's lease runs out, and it
//     stays active on its peer alone.
//  3. Both replication links are cut. head-a's DRBD loses head-b and
//     freezes its I/O. head-b, hearing head-a after its own DRBD lost it,
//     marks its disk Outdated (drbdadm outdate) and announces it; head-a
//     writes on, thawed by that mark, not by the witness. head-b cannot
//     take over now, not even after a reboot, until it has resynced.
//  4. The witness resumes and the links come back: head-b resyncs and is
//     UpToDate again, with no split brain, and every acknowledged record
//     reads back uncached.
func TestFencingFreezesWithoutTheWitness(t *testing.T) {
	ctx, lab, _ := startHALab(t, 20*time.Minute)
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The pair serves; the client writes.
	pairReady(t, ctx, a)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 20*time.Minute) // stopped at the end
	sleepCtx(ctx, 5*time.Second)

	// 2. The witness pauses; head-a keeps serving on its peer.
	witness := strings.TrimSpace(guest(t, ctx, client, "busybox", "cat", "/tmp/witness.pid"))
	guest(t, ctx, client, "busybox", "kill", "-STOP", witness)
	waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.Role == "active" && s.HA != nil && !s.HA.Vote.Held && s.HA.Heartbeat.Seen
	})

	// 3. Replication cut: head-a's DRBD freezes; head-b outdates itself;
	// head-a writes on.
	markA, markB := a.Console.Len(), b.Console.Len()
	cut := time.Now()
	setRepLinks(t, lab, false)
	if _, err := b.Console.WaitForAfter(ctx, markB, regexp.MustCompile(`this head's disk is now marked Outdated in DRBD's metadata`)); err != nil {
		t.Fatalf("head-b did not mark its disk Outdated: %v\n%s", err, drbdKernelLines(t, ctx, b))
	}
	marked := time.Since(cut)
	lines := drbdLines(kernelLog(t, ctx, b), `drbd`)
	t.Logf("head-b's DRBD kernel log, last lines:\n%s", strings.Join(lines[max(0, len(lines)-12):], "\n"))
	if _, err := a.Console.WaitForAfter(ctx, markA, regexp.MustCompile(`head-b has marked its own disk Outdated in DRBD's metadata`)); err != nil {
		t.Fatalf("head-a did not take head-b's mark: %v\n%s", err, drbdKernelLines(t, ctx, a))
	}
	clientWrites(t, ctx, client, "/tmp/v3")
	thawed := time.Since(cut)
	if strings.Contains(a.Console.Text()[markA:], "the witness now records this head's data") {
		t.Errorf("head-a went through the witness, which is paused")
	}
	stB := nodeStatus(t, ctx, b)
	if stB.Role == "active" || stB.DRBD == nil || stB.DRBD.Disk != "Outdated" || stB.DRBD.Role != "Secondary" {
		t.Fatalf("head-b after marking itself: role %s, DRBD %+v", stB.Role, stB.DRBD)
	}
	t.Logf("replication cut: head-b marked its disk Outdated after %.1f s, the client wrote again by %.1f s; head-b: %s",
		marked.Seconds(), thawed.Seconds(), stB.HA.Decision.Reason)

	// 4. The witness and the links come back; the pair is whole.
	guest(t, ctx, client, "busybox", "kill", "-CONT", witness)
	setRepLinks(t, lab, true)
	pairReady(t, ctx, a)
	if st := nodeStatus(t, ctx, b); st.DRBD == nil || st.DRBD.Disk != "UpToDate" {
		t.Errorf("head-b after the resync: DRBD %+v", st.DRBD)
	}
	for name, klog := range map[string]string{"head-a": kernelLog(t, ctx, a), "head-b": kernelLog(t, ctx, b)} {
		if m := splitBrain.FindString(klog); m != "" {
			t.Errorf("%s's kernel log: %q", name, m)
		}
	}
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	verifyUncached(t, ctx, client, r)
}

// drbdKernelLines is a VM's DRBD kernel log lines, for a failure message.
func drbdKernelLines(t *testing.T, ctx context.Context, vm *qemu.VM) string {
	return strings.Join(drbdLines(kernelLog(t, ctx, vm), `drbd`), "\n")
}
