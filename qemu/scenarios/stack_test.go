package scenarios_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
	"tandem.dev/tandem/status"
)

// switchovers is how many times the stack moves under the client's writes.
const switchovers = 5

// The served stack on a fresh pair, as an integrator first sees it:
//
//  1. Both heads build RAID10 on blank disks; DRBD connects and skips the
//     initial sync; head-a makes LVM and XFS and serves NFS on the VIP.
//  2. The client mounts the export hard, over NFSv3 and over NFSv4.2,
//     and writes checksummed records on both mounts while the operator
//     switches the stack over five times, alternately from the active
//     and the standby head. No write fails and no record is lost.
//  3. A switchover is refused while DRBD is disconnected.
//  4. Both heads reboot: the stack comes back on head-a, nothing is
//     re-created, and every acknowledged record reads back intact.
//  5. A data disk is pulled from the active head: RAID10 serves degraded,
//     status says so, and the client's writes go on.
func TestStackFreshPairSwitchoverReboot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, SiteTOML: labSite(t)})
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	heads := map[string]*qemu.VM{"head-a": a, "head-b": b}

	// 1. A fresh pair builds its stack once.
	activeRE := regexp.MustCompile(`tandem: role: active after (\d+) ms`)
	if _, err := a.Console.WaitFor(ctx, activeRE); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []*qemu.VM{a, b} {
		if err := vm.WaitAgentPort(ctx); err != nil {
			t.Fatal(err)
		}
		mustLog(t, vm, "creating a new RAID10 array: every member is blank", "created new array",
			"no DRBD metadata on the backing device: creating it (first activation)")
	}
	mustLog(t, a, "brand-new pair: skipping the initial sync", "creating the volume group on a blank device",
		"making a new XFS filesystem", "nfs up", "vip up")
	mustNotLog(t, b, "creating the volume group", "making a new XFS filesystem")
	stA := waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.Role == "active" && s.DRBD != nil && s.DRBD.Connection == "Connected" && s.DRBD.Disk == "UpToDate" && s.DRBD.PeerDisk == "UpToDate"
	})
	if stA.Peer == nil || stA.Peer.Role != "standby" || stA.RAID == nil || stA.RAID.UUID == "" || stA.Peer.RAID == nil {
		t.Fatalf("head-a's view of the pair: %+v", stA)
	}
	uuids := map[string]string{"head-a": stA.RAID.UUID, "head-b": stA.Peer.RAID.UUID}
	t.Logf("fresh pair up: head-a active, RAID10 %s / %s, DRBD %s %s/%s", uuids["head-a"], uuids["head-b"],
		stA.DRBD.Connection, stA.DRBD.Disk, stA.DRBD.PeerDisk)

	// `tandem status` on the standby shows both heads and every layer.
	out := guest(t, ctx, b, "tandem", "status")
	// md says "active" rather than "clean" while writes are in flight
	// (DRBD's replication on the standby too), "clean" once idle.
	for _, want := range []string{`head-b \(this head\)\s+standby\s+ready\s+Secondary Connected UpToDate/UpToDate\s+(clean|active) \[4/4\] \[UUUU\]`,
		`head-a\s+active\s+ready\s+Primary Connected UpToDate/UpToDate`, `vip\s+active\s+stopped\s+running`, `raid10\s+both\s+running\s+running`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("tandem status on head-b does not match %q:\n%s", want, out)
		}
	}

	// 2. The client mounts through the VIP and writes across switchovers.
	plan, err := qemu.PlanClient(labSite(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.ClientUp(ctx, plan.Addr); err != nil {
		t.Fatal(err)
	}
	mounts := []struct{ name, dir, cmd, opts string }{
		{"NFSv3", "/tmp/v3", "mount.nfs", "vers=3,hard,proto=tcp,nolock"},
		{"NFSv4.2", "/tmp/v42", "mount.nfs4", "vers=4.2,hard,proto=tcp"},
	}
	for _, m := range mounts {
		guest(t, ctx, client, "busybox", "mkdir", "-p", m.dir)
		guest(t, ctx, client, m.cmd, "10.0.0.10:/srv/tandem/vm", m.dir, "-o", m.opts)
	}
	mounted := guest(t, ctx, client, "busybox", "cat", "/proc/mounts")
	for _, want := range []string{"/tmp/v3 nfs rw", "vers=3", "/tmp/v42 nfs4 rw", "vers=4.2", "hard"} {
		if !strings.Contains(mounted, want) {
			t.Fatalf("client mounts lack %q:\n%s", want, mounted)
		}
	}
	const every = 20 * time.Second
	dur := every*switchovers + 15*time.Second
	for _, m := range mounts {
		startWorkload(t, ctx, client, m.dir, dur)
	}
	started := time.Now()
	var at []time.Duration // when each switchover began, from the workloads' start
	active := "head-a"
	for i := range switchovers {
		sleepCtx(ctx, every-5*time.Second)
		peer := map[string]string{"head-a": "head-b", "head-b": "head-a"}[active]
		from := active // the command works on either head: try both, from both
		if (i/2)%2 == 1 {
			from = peer
		}
		at = append(at, time.Since(started))
		res, err := heads[from].Agent().Run(ctx, "tandem", "switchover")
		if err != nil || res.Exit != 0 {
			t.Fatalf("switchover %d (run on %s): exit %d, %v: %s", i+1, from, res.Exit, err, res.Stderr)
		}
		if want := peer + " is active"; !strings.Contains(string(res.Stdout), want) {
			t.Fatalf("switchover %d: %q, want %q", i+1, res.Stdout, want)
		}
		t.Logf("switchover %d (run on %s): %s", i+1, from, strings.TrimSpace(string(res.Stdout)))
		active = peer
	}
	reports := map[string]*workload.Report{}
	for _, m := range mounts {
		r := waitWorkload(t, ctx, client, m.dir, dur+3*time.Minute)
		reports[m.name] = r
		t.Logf("%s: %s", m.name, r)
		if !r.Clean() || r.Acked == 0 {
			t.Errorf("%s: the client saw errors or lost records across the switchovers: %+v", m.name, r)
		}
		for i, s := range switchoverStalls(r, at) {
			t.Logf("%s: switchover %d: longest stall %.2f s", m.name, i+1, s.Seconds())
		}
	}

	// 3. No switchover while the standby is not connected.
	standby := heads[map[string]string{"head-a": "head-b", "head-b": "head-a"}[active]]
	guest(t, ctx, standby, "drbdadm", "-c", "/run/tandem/drbd/r0.res", "disconnect", "r0")
	res, err := heads[active].Agent().Run(ctx, "tandem", "switchover")
	if err != nil || res.Exit == 0 || !strings.Contains(string(res.Stderr), "refused") {
		t.Errorf("switchover with DRBD disconnected: exit %d, %v, %q; want a refusal", res.Exit, err, res.Stderr)
	} else {
		t.Logf("refused as it should be: %s", strings.TrimSpace(string(res.Stderr)))
	}
	guest(t, ctx, standby, "drbdadm", "-c", "/run/tandem/drbd/r0.res", "connect", "r0")
	waitStatus(t, ctx, heads[active], func(s status.Status) bool {
		return s.DRBD != nil && s.DRBD.Connection == "Connected" && s.DRBD.PeerDisk == "UpToDate"
	})

	// 4. Both heads reboot; the stack comes back on head-a, as it was.
	marks := map[string]int{"head-a": a.Console.Len(), "head-b": b.Console.Len()}
	for _, vm := range []*qemu.VM{a, b} {
		if res, err := vm.Agent().Run(ctx, "tandem", "reboot"); err != nil || res.Exit != 0 {
			t.Fatalf("%s: tandem reboot: %v %s", vm.Name, err, res.Stderr)
		}
	}
	if _, err := a.Console.WaitForAfter(ctx, marks["head-a"], activeRE); err != nil {
		t.Fatal(err)
	}
	for name, vm := range heads {
		if err := vm.WaitAgentPort(ctx); err != nil {
			t.Fatal(err)
		}
		after := vm.Console.Text()[marks[name]:]
		for _, bad := range []string{"created new array", "creating it (first activation)", "creating the volume group", "making a new XFS filesystem"} {
			if strings.Contains(after, bad) {
				t.Errorf("%s re-created a layer after the reboot: %q", name, bad)
			}
		}
		if !strings.Contains(after, "assembled existing array (not created)") {
			t.Errorf("%s: no \"assembled existing array\" after the reboot", name)
		}
	}
	mustLogAfter(t, a, marks["head-a"], "activated existing ", "mounted existing filesystem (not created)")
	stA = waitStatus(t, ctx, a, func(s status.Status) bool { return s.Role == "active" && s.Peer != nil && s.Peer.RAID != nil })
	if stA.RAID.UUID != uuids["head-a"] || stA.Peer.RAID.UUID != uuids["head-b"] {
		t.Errorf("RAID10 UUIDs changed across the reboot: %s/%s, were %s/%s", stA.RAID.UUID, stA.Peer.RAID.UUID, uuids["head-a"], uuids["head-b"])
	}
	for _, m := range mounts {
		r := reports[m.name]
		res, err := client.Agent().Run(ctx, "tandem", "workload", "--verify", r.File, "--acked", fmt.Sprint(r.Acked))
		if err != nil || res.Exit != 0 {
			t.Errorf("%s after both heads rebooted: %v: %s%s", m.name, err, res.Stdout, res.Stderr)
		} else {
			t.Logf("%s after both heads rebooted: %s", m.name, strings.TrimSpace(string(res.Stdout)))
		}
	}

	// 5. A data disk pulled from the active head: degraded, still serving.
	startWorkload(t, ctx, client, "/tmp/v3", 40*time.Second)
	sleepCtx(ctx, 5*time.Second)
	if err := a.RemoveDisk("data3"); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.RAID != nil && s.RAID.Degraded > 0 && slices.ContainsFunc(s.Services, func(l status.Service) bool {
			return l.Name == "raid10" && l.State == "degraded"
		})
	})
	out = guest(t, ctx, a, "tandem", "status")
	if !strings.Contains(out, "DEGRADED") || !regexp.MustCompile(`raid10\s+both\s+degraded`).MatchString(out) {
		t.Errorf("status does not say the array is degraded:\n%s", out)
	}
	t.Logf("disk pulled: raid %s %s, %d of %d missing", st.RAID.State, st.RAID.Health, st.RAID.Degraded, st.RAID.Disks)
	r := waitWorkload(t, ctx, client, "/tmp/v3", 3*time.Minute)
	if !r.Clean() || r.Acked == 0 {
		t.Errorf("writes during the degraded array: %s", r)
	}
	if st := nodeStatus(t, ctx, a); st.Role != "active" {
		t.Errorf("head-a is %s after losing a disk; a degraded array keeps serving", st.Role)
	}
}

// startWorkload runs `tandem workload` on dir in the client's
// background, so the agent stays free; waitWorkload collects its report.
func startWorkload(t *testing.T, ctx context.Context, client *qemu.VM, dir string, d time.Duration) {
	t.Helper()
	base := reportBase(dir)
	guest(t, ctx, client, "busybox", "sh", "-c", fmt.Sprintf(
		"busybox mkdir -p %[1]s/w && busybox rm -f %[2]s.json && "+
			"(tandem workload --dir %[1]s/w --duration %[3]s --json > %[2]s.tmp 2> %[2]s.err < /dev/null & "+
			"echo $! > %[2]s.pid; wait $!; busybox mv %[2]s.tmp %[2]s.json) > /dev/null 2>&1 &",
		dir, base, d))
}

// stopWorkload ends the workload on dir early: it stops writing, checks
// what it wrote and reports (waitWorkload).
func stopWorkload(t *testing.T, ctx context.Context, client *qemu.VM, dir string) {
	t.Helper()
	guest(t, ctx, client, "busybox", "sh", "-c", "kill -TERM $(busybox cat "+reportBase(dir)+".pid)")
}

// finishWorkload stops the NFSv3 workload on dir, waits for its report
// and fails the test unless the client saw no error and lost nothing.
func finishWorkload(t *testing.T, ctx context.Context, client *qemu.VM, dir string) *workload.Report {
	t.Helper()
	stopWorkload(t, ctx, client, dir)
	r := waitWorkload(t, ctx, client, dir, 3*time.Minute)
	t.Logf("NFSv3: %s", r)
	if !r.Clean() || r.Acked == 0 {
		t.Errorf("the client saw errors or lost records: %s (first error: %s)", r, r.FirstError)
	}
	return r
}

func reportBase(dir string) string { return "/tmp/report" + strings.ReplaceAll(dir, "/", "-") }

func waitWorkload(t *testing.T, ctx context.Context, client *qemu.VM, dir string, within time.Duration) *workload.Report {
	t.Helper()
	base := reportBase(dir)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := run(ctx, client, "busybox", "cat", base+".json")
		if err == nil && res.Exit == 0 && len(res.Stdout) > 0 {
			var r workload.Report
			if err := json.Unmarshal(res.Stdout, &r); err != nil {
				t.Fatalf("workload report %q: %v", res.Stdout, err)
			}
			return &r
		}
		sleepCtx(ctx, 2*time.Second)
	}
	res, _ := run(ctx, client, "busybox", "cat", base+".err")
	t.Fatalf("the workload on %s gave no report within %s; stderr:\n%s", dir, within, res.Stdout)
	return nil
}

// mustLog fails unless each line fragment is on vm's console.
func mustLog(t *testing.T, vm *qemu.VM, want ...string) { t.Helper(); mustLogAfter(t, vm, 0, want...) }

func mustLogAfter(t *testing.T, vm *qemu.VM, mark int, want ...string) {
	t.Helper()
	text := vm.Console.Text()[mark:]
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s's console lacks %q", vm.Name, w)
		}
	}
}

func mustNotLog(t *testing.T, vm *qemu.VM, bad ...string) {
	t.Helper()
	text := vm.Console.Text()
	for _, w := range bad {
		if strings.Contains(text, w) {
			t.Errorf("%s's console has %q", vm.Name, w)
		}
	}
}

// waitStatus polls `tandem status --json` until ok holds (3 minutes).
func waitStatus(t testing.TB, ctx context.Context, vm *qemu.VM, ok func(status.Status) bool) status.Status {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last status.Status
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := run(ctx, vm, "tandem", "status", "--json")
		// A fresh value each time: Unmarshal leaves a field the new JSON
		// omits (omitempty) as the last answer had it.
		var st status.Status
		if err == nil && res.Exit == 0 && json.Unmarshal(res.Stdout, &st) == nil {
			if last = st; ok(st) {
				return st
			}
		}
		sleepCtx(ctx, time.Second)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	t.Fatalf("%s: status never reached the expected state; last:\n%s", vm.Name, b)
	return last
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// switchoverStalls is the longest stall that began after each
// switchover started (offsets from the workload's start) and before the
// next one; host and guest clocks only share the workload's start.
func switchoverStalls(r *workload.Report, at []time.Duration) []time.Duration {
	out := make([]time.Duration, len(at))
	for _, s := range r.Stalls {
		off := s.From.Sub(r.Start)
		for i := len(at) - 1; i >= 0; i-- {
			if off >= at[i]-2*time.Second { // the agent's round trip skews the host's mark
				out[i] = max(out[i], s.Took)
				break
			}
		}
	}
	return out
}
