package scenarios_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// haSiteFlag runs the HA scenarios on another site.toml than
// configs/site.lab.toml, e.g. to try shorter lab timings:
// go test ./qemu/scenarios -run TestFailover -args -ha.site=/tmp/site.toml
var haSiteFlag = flag.String("ha.site", "", "site.toml for the HA scenarios (default configs/site.lab.toml)")

func haSite(t testing.TB) ([]byte, *site.Config) {
	t.Helper()
	raw := labSite(t)
	if *haSiteFlag != "" {
		var err error
		if raw, err = os.ReadFile(*haSiteFlag); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := site.Parse("site.toml", raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, sc
}

// longFlag runs the long forms of the HA scenarios (20 power pulls).
var (
	longFlag  = flag.Bool("long", false, "run the long forms of the HA scenarios")
	killsFlag = flag.Int("kills", 4, "power pulls in TestFailoverActiveHeadKilled (the benchmark's figures: 10; -long: 20)")
)

// R1 and R9 (docs/ha.md): the active head loses power again and again
// under the client's writes, and the pair carries the service back and
// forth.
//
//  1. The full lab boots with the witness on the client (10.0.0.2, as the
//     site config says). head-a takes the service and the witness vote;
//     each head sees the other on both heartbeat paths.
//  2. The client mounts the export hard over NFSv3 through the VIP.
//  3. Four times (-kills N; the figures in docs/benchmarks.md come from
//     10, and -long makes it 20), while the client writes checksummed
//     records: the active head is killed (QMP quit: a power pull). The
//     standby gets the vote once the old head's lease has run out, waits
//     until the old head would certainly be stopped or reset (the
//     takeover delay: never less), outdates it through DRBD's fence-peer
//     hook and starts the service. The dead head is powered on again,
//     resyncs and becomes the standby for the next kill.
//  4. After every kill the client's writes went on: no error, nothing
//     lost or corrupt, and every record of every earlier round still
//     reads back. The stalls and takeover timelines are logged, with
//     their median and maximum.
//  5. A switchover loses a head halfway (switchoverEndpointDies): the
//     operator runs `tandem switchover` on the active head, and as the
//     target starts the stack the target loses power: the old head
//     takes the service back as in a failover, and the command says the
//     target fell silent. Once the dead head is back and resynced, the
//     same again, but the source loses power: the target goes on and
//     serves. Each time the client, which stalled from the start of the
//     switchover, writes again within a failover's 10 s of the power
//     cut, with no error and nothing lost.
func TestFailoverActiveHeadKilled(t *testing.T) {
	kills := *killsFlag
	if *longFlag {
		kills = 20
	}
	ctx, lab, sc := startHALab(t, 10*time.Minute+time.Duration(kills+2)*4*time.Minute)
	interval, dead, lease := membershipTiming(sc)
	client := lab.VM("client")

	// 1. The witness runs on the client; head-a serves and holds its vote.
	activeRE := regexp.MustCompile(`tandem: role: active after (\d+) ms`)
	if _, err := lab.VM("head-a").Console.WaitFor(ctx, activeRE); err != nil {
		t.Fatal(err)
	}
	stA := pairReady(t, ctx, lab.VM("head-a"))
	delay := time.Duration(stA.HA.Timing.TakeoverDelayMS) * time.Millisecond
	t.Logf("pair up: head-a active with the witness vote (%d ms left), epoch %d; takeover delay %v, dead time %v, lease %v",
		stA.HA.Vote.ExpiresInMS, stA.HA.Epoch, delay, dead, lease)
	out := guest(t, ctx, lab.VM("head-b"), "tandem", "status")
	for _, want := range []string{`quorum \(peer\)`, `head-a: quorum \(peer and witness\)`, `heartbeat\s+SEEN head-a: active`,
		`replication\s+10\.10\.0\.12:\d+\s+10\.10\.0\.11:\d+\s+up`, `management\s+10\.0\.0\.12:\d+\s+10\.0\.0\.11:\d+\s+up`,
		`dropped: forged 0, replayed 0`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("tandem status on head-b does not match %q:\n%s", want, out)
		}
	}
	if out := guest(t, ctx, lab.VM("head-a"), "tandem", "status"); !regexp.MustCompile(`witness\s+10\.0\.0\.2:7791: vote HELD by this head`).MatchString(out) {
		t.Errorf("tandem status on head-a does not show the witness vote:\n%s", out)
	}

	// 2. A hard NFSv3 mount through the VIP: the command tandem lab full prints.
	raw, _ := haSite(t)
	plan, err := qemu.PlanClient(raw)
	if err != nil {
		t.Fatal(err)
	}
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, plan.MountNFSv3("/tmp/v3")...)

	// 3. The kills.
	const before = 8 * time.Second
	worst := max(dead, lease) + interval + delay + time.Minute // the stack's start and the client's reconnect
	activeName, standbyName := "head-a", "head-b"
	epoch := stA.HA.Epoch
	var stalls, takeovers []time.Duration
	var done []*workload.Report
	for k := 1; k <= kills; k++ {
		active, standby := lab.VM(activeName), lab.VM(standbyName)
		dir := fmt.Sprintf("/tmp/v3/k%02d", k)
		startWorkload(t, ctx, client, dir, worst+10*time.Minute) // stopped below, once the pair is whole again
		sleepCtx(ctx, before)

		mark := standby.Console.Len()
		killed := time.Now()
		if err := active.Quit(); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, worst+time.Minute)
		line, err := standby.Console.WaitForAfter(wctx, mark, activeRE)
		wcancel()
		if err != nil {
			t.Fatalf("kill %d: %s did not take over within %v of the kill: %v", k, standbyName, worst+time.Minute, err)
		}
		took := time.Since(killed)
		// Safety: the takeover waits out the takeover delay after the
		// silence; an earlier one could meet a live old active.
		if took < delay {
			t.Errorf("kill %d: %s took over %.1f s after the kill, before the takeover delay of %v", k, standbyName, took.Seconds(), delay)
		}
		st := waitStatus(t, ctx, standby, func(s status.Status) bool {
			return s.Role == "active" && s.HA != nil && len(s.HA.Failovers) > 0 && s.HA.Failovers[0].Kind == "takeover" &&
				s.DRBD != nil && s.DRBD.Role == "Primary"
		})
		f := st.HA.Failovers[0]
		t.Logf("kill %d: %s took over %.1f s after the kill (%s); its timeline, %.1f s from %s's last heartbeat: %s",
			k, standbyName, took.Seconds(), strings.TrimSpace(line), float64(f.TotalMS)/1000, activeName, failoverSteps(f))
		takeovers = append(takeovers, time.Duration(f.TotalMS)*time.Millisecond)
		for _, want := range []string{"detect", "vote", "wait", "fence", "promote", "mount", "nfsd up", "VIP up"} {
			if !slices.ContainsFunc(f.Steps, func(s status.FailoverStep) bool { return s.Name == want }) {
				t.Errorf("kill %d: the takeover's timeline lacks %q: %+v", k, want, f.Steps)
			}
		}
		if !f.OK || st.HA.Epoch <= epoch || !st.HA.Vote.Held || st.HA.Heartbeat.Alive {
			t.Errorf("kill %d: %s after the takeover: ok %v, epoch %d (before %d), vote held %v, peer alive %v",
				k, standbyName, f.OK, st.HA.Epoch, epoch, st.HA.Vote.Held, st.HA.Heartbeat.Alive)
		}
		epoch = st.HA.Epoch
		// The new head outdated the dead one through DRBD's fence-peer hook.
		if rec := guest(t, ctx, standby, "busybox", "cat", "/var/lib/tandem/drbd/r0.fenced"); !strings.Contains(rec, `"verdict":"down"`) {
			t.Errorf("kill %d: no fence record for %s on %s: %s", k, activeName, standbyName, rec)
		}
		// What keeps the takeover short: XFS pushes its log every second
		// (little to replay at the next takeover), and nfsd tracks NFSv4
		// clients through nfsdcld, not a fallback it picks when nfsdcld
		// is late.
		if v := strings.TrimSpace(guest(t, ctx, standby, "busybox", "cat", "/proc/sys/fs/xfs/xfssyncd_centisecs")); v != "100" {
			t.Errorf("kill %d: xfssyncd_centisecs on %s is %s, want 100", k, standbyName, v)
		}
		if out := guest(t, ctx, standby, "busybox", "dmesg"); !strings.Contains(out, "NFSD: Using nfsdcld client tracking operations") {
			t.Errorf("kill %d: nfsd on %s does not track clients through nfsdcld:\n%s", k, standbyName, grepLines(out, "NFSD"))
		}

		// The dead head comes back from its own disks and rejoins as
		// the standby, while the client goes on writing.
		back, err := lab.PowerOn(activeName)
		if err != nil {
			t.Fatal(err)
		}
		pairReady(t, ctx, standby)
		// The new standby readies the takeover path once it is up.
		wctx, wcancel = context.WithTimeout(ctx, time.Minute)
		if _, err := back.Console.WaitFor(wctx, regexp.MustCompile(`warmed the takeover path`)); err != nil {
			t.Errorf("kill %d: %s did not warm its takeover path: %v", k, activeName, err)
		}
		wcancel()
		mustLog(t, back, "assembled existing array (not created)")
		mustNotLog(t, back, "creating a new RAID10 array")
		stopWorkload(t, ctx, client, dir)
		r := waitWorkload(t, ctx, client, dir, 3*time.Minute)
		if !r.Clean() || r.Acked == 0 {
			t.Errorf("kill %d: the client saw errors or lost records: %s", k, r)
		}
		stall := stallAt(r, before)
		if stall == nil {
			t.Errorf("kill %d: no stall at the kill (%v into the run): %+v", k, before, r.Stalls)
		} else {
			stalls = append(stalls, stall.Took)
			t.Logf("kill %d: client stall %.1f s; NFSv3: %s", k, stall.Took.Seconds(), r)
		}
		// Every record acknowledged in every round so far reads back.
		done = append(done, r)
		for _, old := range done {
			res, err := client.Agent().Run(ctx, "tandem", "workload", "--verify", old.File, "--acked", fmt.Sprint(old.Acked))
			if err != nil || res.Exit != 0 {
				t.Errorf("kill %d: verifying %s: %v %s%s", k, old.File, err, res.Stdout, res.Stderr)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		activeName, standbyName = standbyName, activeName
	}
	t.Logf("R1/R9: %d power pulls; client stall median %.1f s, max %.1f s; takeover median %.1f s, max %.1f s",
		kills, median(stalls).Seconds(), slices.Max(stalls).Seconds(), median(takeovers).Seconds(), slices.Max(takeovers).Seconds())

	// 5. A switchover loses its target, then its source, halfway.
	switchoverEndpointDies(t, ctx, lab, activeName, standbyName, worst, &done)
}

// pairReady waits until active serves with the witness vote, sees its
// peer on both paths as a standby, the witness records neither head as
// outdated, and DRBD is Connected with both disks
// UpToDate: ready for the next fault.
func pairReady(t testing.TB, ctx context.Context, active *qemu.VM) status.Status {
	t.Helper()
	st := waitStatus(t, ctx, active, func(s status.Status) bool {
		return s.Role == "active" && s.DRBD != nil && s.DRBD.Connection == "Connected" && s.DRBD.Disk == "UpToDate" &&
			s.DRBD.PeerDisk == "UpToDate" && s.HA != nil && s.HA.Vote.Held && !s.HA.Vote.Writer && s.HA.Heartbeat.Seen && pathsUp(s.HA) == 2 &&
			s.Peer != nil && s.Peer.HA != nil && s.Peer.HA.Announce == "standby"
	})
	if st.HA.QuorumBy != "peer and witness" {
		t.Fatalf("%s: quorum by %q, want peer and witness", active.Name, st.HA.QuorumBy)
	}
	return st
}

// stallAt is the first stall that began around at (an offset from the
// workload's start; host and guest clocks only share that start).
func stallAt(r *workload.Report, at time.Duration) *workload.Stall {
	for i, s := range r.Stalls {
		if off := s.From.Sub(r.Start); off >= at-5*time.Second && off <= at+5*time.Second {
			return &r.Stalls[i]
		}
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// keepWitnessLog keeps the witness's log with the consoles when the test
// fails: its decisions are part of the story.
func keepWitnessLog(t testing.TB, client *qemu.VM) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if res, err := client.Agent().Run(cctx, "busybox", "cat", qemu.WitnessLog); err == nil {
			dir := failedDir(t)
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "witness.log"), res.Stdout, 0o644)
			t.Logf("witness log: %s", filepath.Join(dir, "witness.log"))
		}
	})
}

// pathsUp counts the heartbeat paths that hear the peer.
func pathsUp(h *status.HA) int {
	n := 0
	for _, p := range h.Heartbeat.Paths {
		if p.Alive {
			n++
		}
	}
	return n
}

// startHALab boots the full lab on the HA site config (haSite) and sets
// the client up as `tandem lab full` does (Lab.SetUpClient: 10.0.0.2 and
// the witness): where every HA scenario starts. ctx ends with the test,
// or after timeout.
func startHALab(t testing.TB, timeout time.Duration) (context.Context, *qemu.Lab, *site.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	raw, sc := haSite(t)
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, SiteTOML: raw})
	plan, err := qemu.PlanClient(raw)
	if err != nil {
		t.Fatal(err)
	}
	keepWitnessLog(t, lab.VM("client"))
	if err := lab.SetUpClient(ctx, plan); err != nil {
		t.Fatal(err)
	}
	return ctx, lab, sc
}

// failoverSteps renders a role change's timeline for a log line.
func failoverSteps(f status.Failover) string {
	var steps []string
	for _, s := range f.Steps {
		steps = append(steps, fmt.Sprintf("%s %.2fs", s.Name, float64(s.MS)/1000))
	}
	return strings.Join(steps, ", ")
}

// membershipTiming is the site's heartbeat interval, dead time and
// witness lease.
func membershipTiming(sc *site.Config) (interval, dead, lease time.Duration) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	return ms(sc.HA.HeartbeatIntervalMS), ms(sc.HA.DeadTimeMS), ms(sc.Witness.LeaseMS)
}

// grepLines keeps the lines of text that contain s.
func grepLines(text, s string) string {
	var keep []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
