package qemu_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/init/status"
	"tandem.dev/tandem/qemu"
)

// DRBD's fencing when the witness cannot answer (issue 6, "never two
// writers"): the active head's writes stay frozen rather than land on its
// disk alone, and thaw once the witness records it as the writer.
//
//  1. The full lab boots with the witness on the client; head-a serves
//     and the client writes through the VIP over a hard NFSv3 mount.
//  2. The witness is paused (SIGSTOP): head-a's lease runs out, and it
//     stays active on its peer alone.
//  3. Both replication links are cut. head-a's DRBD loses head-b and
//     freezes its I/O; the fence-peer handler cannot have head-b recorded
//     as outdated (no vote), so DRBD stays frozen ("helper broken").
//  4. The witness resumes. head-a gets the vote back, has the witness
//     record it as the writer, and thaws DRBD itself (drbdadm resume-io);
//     the client writes again.
//  5. The links come back: head-b resyncs, the record is lifted, and
//     every acknowledged record reads back uncached.
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

	// 3. Replication cut: head-a's DRBD freezes and stays frozen.
	markA := a.Console.Len()
	setRepLinks(t, lab, false)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(kernelLog(t, ctx, a), "fence-peer helper broken, returned 1") {
		if time.Now().After(deadline) {
			t.Fatalf("head-a's DRBD never ran the fence-peer handler to a refusal after the cut:\n%s", drbdKernelLines(t, ctx, a))
		}
		sleepCtx(ctx, time.Second)
	}
	sleepCtx(ctx, 3*time.Second) // past the loop's 2 s retry: nothing thaws it without the vote
	if strings.Contains(a.Console.Text()[markA:], "I/O resumed after fencing") {
		t.Fatalf("head-a thawed DRBD without the witness vote")
	}
	st := nodeStatus(t, ctx, a)
	if st.Role != "active" || st.DRBD == nil || st.DRBD.Role != "Primary" {
		t.Fatalf("head-a while frozen: role %s, DRBD %+v", st.Role, st.DRBD)
	}
	t.Logf("head-a frozen: DRBD %s %s/%s, decision %s", st.DRBD.Connection, st.DRBD.Disk, st.DRBD.PeerDisk, st.HA.Decision.Reason)

	// 4. The witness is back: head-a is recorded as the writer and thaws.
	guest(t, ctx, client, "busybox", "kill", "-CONT", witness)
	thawed := regexp.MustCompile(`drbd: I/O resumed after fencing`)
	if _, err := a.Console.WaitForAfter(ctx, markA, thawed); err != nil {
		t.Fatalf("head-a did not thaw once the witness answered again: %v", err)
	}
	mustLogAfter(t, a, markA, "DRBD froze this primary's I/O: the witness now records this head's data as the only current copy")
	clientWrites(t, ctx, client, "/tmp/v3")
	if st := nodeStatus(t, ctx, b); st.Role == "active" {
		t.Errorf("head-b became active: %+v", st.HA.Decision)
	}

	// 5. The links come back; the pair is whole and the record lifted.
	setRepLinks(t, lab, true)
	pairReady(t, ctx, a)
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
