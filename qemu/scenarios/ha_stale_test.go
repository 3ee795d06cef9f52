package scenarios_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/status"
)

// A head with stale data never serves: after a double fault the standby,
// cut off from the active head's last writes, does not take over when
// the active head dies.
//
//  1. The full lab boots with the witness on the client; head-a serves
//     and the client writes through the VIP over a hard NFSv3 mount.
//  2. Both replication links are cut; the management network still
//     carries the heartbeat. head-a goes on serving alone; head-b hears it
//     after DRBD lost it, so its copy may lack writes: it counts its disk
//     as Outdated, and marks it so in DRBD's metadata. head-a's DRBD froze
//     its I/O on losing head-b, and thawed once the witness recorded
//     head-a as the only current copy, or head-b announced its mark.
//  3. head-a loses power. head-b must not take over: it would serve
//     data without head-a's last writes (and the witness refuses it the
//     vote). The witness is restarted meanwhile (without --init): it
//     keeps its state file, and with it any record of head-a as the only
//     current copy.
//  4. head-a is powered on and the links restored: head-a, with the
//     newer data, serves again, head-b resyncs from it, and every
//     acknowledged record reads back uncached.
func TestFailoverNotOnStaleData(t *testing.T) {
	ctx, lab, sc := startHALab(t, 25*time.Minute)
	dead := time.Duration(sc.HA.DeadTimeMS) * time.Millisecond
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The pair serves; the client writes.
	st := pairReady(t, ctx, a)
	delay := time.Duration(st.HA.Timing.TakeoverDelayMS) * time.Millisecond
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 30*time.Minute) // stopped at the end

	// 2. Replication cut; the heartbeat goes on over management.
	mark, markA := b.Console.Len(), a.Console.Len()
	setRepLinks(t, lab, false)
	if _, err := b.Console.WaitForAfter(ctx, mark, regexp.MustCompile(`DRBD lost head-a while it went on serving`)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, b, func(s status.Status) bool {
		return s.Role == "standby" && s.HA != nil && s.HA.Heartbeat.Seen && s.HA.Announce == "standby" &&
			s.HA.Heartbeat.Peer != nil && s.HA.Heartbeat.Peer.Role == "active" && s.DRBD != nil && s.DRBD.Connection != "Connected"
	})
	clientWrites(t, ctx, client, "/tmp/v3") // head-a acknowledges writes head-b lacks
	waitStatus(t, ctx, b, func(s status.Status) bool { return s.DRBD != nil && s.DRBD.Disk == "Outdated" })
	sleepCtx(ctx, 5*time.Second)
	// head-a thawed through the witness's record or head-b's own mark,
	// whichever came first.
	if out := a.Console.Text()[markA:]; !strings.Contains(out, "the witness now records this head's data as the only current copy") &&
		!strings.Contains(out, "head-b has marked its own disk Outdated in DRBD's metadata") {
		t.Errorf("head-a's console shows neither the witness's record nor head-b's mark after the cut")
	}

	// 3. head-a dies; head-b holds back for longer than any takeover.
	if err := a.Quit(); err != nil {
		t.Fatal(err)
	}
	stateFile, err := witness.DefaultStateFile(sc.Pair.Name)
	if err != nil {
		t.Fatal(err)
	}
	before := guest(t, ctx, client, "busybox", "cat", stateFile)
	logLen := len(guest(t, ctx, client, "busybox", "cat", qemu.WitnessLog))
	if err := lab.RestartWitness(ctx); err != nil {
		t.Fatal(err)
	}
	if after := guest(t, ctx, client, "busybox", "cat", stateFile); after != before {
		t.Errorf("the witness restart changed its state file:\n%s\n->\n%s", before, after)
	}
	if strings.Contains(before, `"writer":"head-a"`) {
		if out := guest(t, ctx, client, "busybox", "cat", qemu.WitnessLog); !strings.Contains(out[min(logLen, len(out)):], "only head-a's data is current") {
			t.Errorf("the restarted witness does not say it records head-a:\n%s", out[min(logLen, len(out)):])
		}
	}
	t.Logf("witness restarted with head-a dead; its state file: %s", strings.TrimSpace(before))
	window := 2*(dead+delay) + 30*time.Second
	until := time.Now().Add(window)
	for time.Now().Before(until) {
		if st := nodeStatus(t, ctx, b); st.Role == "active" || st.DRBD != nil && st.DRBD.Role == "Primary" {
			t.Fatalf("head-b took over with data that lacks head-a's last writes: %s, DRBD %+v", st.Role, st.DRBD)
		}
		sleepCtx(ctx, 2*time.Second)
	}
	st = nodeStatus(t, ctx, b)
	t.Logf("head-b held back for %v after head-a died: %s (alert %q)", window, st.HA.Decision.Reason, st.HA.Alert)
	if st.HA.Alert == "" {
		t.Errorf("head-b shows no alert while the service is down")
	}

	// 4. head-a comes back with the newer data and serves again.
	a, err = lab.PowerOn("head-a")
	if err != nil {
		t.Fatal(err)
	}
	setRepLinks(t, lab, true)
	pairReady(t, ctx, a)
	if out := a.Console.Text() + b.Console.Text(); strings.Contains(out, "Split-Brain detected") {
		t.Errorf("a split brain after the heads rejoined")
	}
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	verifyUncached(t, ctx, client, r)
}
