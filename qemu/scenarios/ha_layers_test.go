package scenarios_test

import (
	"context"
	"flag"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/status"
)

// r4Faults picks some of R4's faults, by name, for a quicker run:
// go test ./qemu/scenarios -run TestFailoverLayerFailures -args -r4.faults=vip,lv
var r4Faults = flag.String("r4.faults", "", "comma-separated subset of TestFailoverLayerFailures's faults (default: all)")

// layerFault is one of R4's faults, injected on the active head.
type layerFault struct {
	name  string // for -r4.faults
	story string // for the log
	// layer is the service whose monitor must see it; its interval
	// bounds the detection.
	layer    string
	interval time.Duration
	inject   []string // run as root in the active head
	// reconnect: DRBD's monitor reconnects (not a restart, and no
	// failure counted toward the migration threshold).
	reconnect bool
}

// R4 (docs/ha.md): each layer of the served stack is failed by hand on
// the active head while the client writes through the VIP over a hard
// NFSv3 mount.
//
//  1. The full lab boots with the witness on the client; head-a serves.
//  2. One after the other: nfsd is stopped, rpc.mountd is killed, the
//     filesystem is frozen (every write blocks), the VIP is deleted, the
//     service interface is downed, the LV is suspended (device-mapper
//     holds its I/O, as a killed lvm command leaves it), DRBD is
//     disconnected.
//  3. Each is seen by its layer's monitor within two of that layer's
//     monitor intervals and handled as the policy says: a local restart
//     of the layer and what sits on it, with the same head active, while
//     the layer is below ha.migration_threshold failures within
//     ha.failure_timeout_seconds; DRBD's monitor reconnects. The pair is
//     whole again (pairReady) before the next fault.
//  4. nfsd is stopped again until the NFS layer reaches its migration
//     threshold: the head gives up on it and fails over; head-b serves.
//  5. The client saw no error and lost nothing; its stall around each
//     fault is logged.
func TestFailoverLayerFailures(t *testing.T) {
	ctx, lab, sc := startHALab(t, 35*time.Minute)
	mon := sc.HA.Monitor
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	threshold := sc.HA.MigrationThreshold
	window := time.Duration(sc.HA.FailureTimeoutSeconds) * time.Second
	mnt := sc.Storage.Filesystem.Mountpoint
	export := sc.Services.NFS.Exports[0].Path
	res := sc.Storage.DRBD.Resource
	iface := func(node string) string {
		if sc.VIP.Interface != "" {
			return sc.VIP.Interface
		}
		return sc.Node(node).Management.Interface
	}

	client := lab.VM("client")

	// 1. The pair serves; the client writes for the whole story.
	active, standby := lab.VM("head-a"), lab.VM("head-b")
	pairReady(t, ctx, active)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", sc.VIP.Prefix().Addr().String()+":"+export, "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 40*time.Minute) // stopped at the end
	wstart := time.Now()                                     // the workload's start, as the host sees it
	sleepCtx(ctx, 5*time.Second)

	// 2. The faults, one at a time.
	nfsd := layerFault{name: "nfsd", story: "nfsd is stopped", layer: "nfs", interval: ms(mon.NFS.IntervalMS),
		inject: []string{"rpc.nfsd", "0"}}
	faults := []layerFault{
		nfsd,
		{name: "mountd", story: "rpc.mountd is killed", layer: "nfs", interval: ms(mon.NFS.IntervalMS),
			inject: []string{"busybox", "sh", "-c", "busybox kill -KILL $(busybox pidof rpc.mountd)"}},
		// Frozen rather than shut down: a shut-down XFS fails the
		// writes in flight with EIO, which reaches the client before any
		// monitor can act; a frozen one holds them, as a stuck fsfreeze
		// from a backup tool does.
		{name: "fs", story: "the filesystem is made unwritable (frozen)", layer: "xfs", interval: ms(mon.Filesystem.IntervalMS),
			inject: []string{"fsfreeze", "--freeze", mnt}},
		{name: "vip", story: "the VIP is deleted", layer: "vip", interval: ms(mon.VIP.IntervalMS),
			inject: []string{"ip", "addr", "del", sc.VIP.Address, "dev", iface(active.Name)}},
		// The management network carries the VIP and one heartbeat path;
		// the replication path keeps the peer seen.
		{name: "iface", story: "the service interface is downed", layer: "mgmt", interval: ms(mon.Link.IntervalMS),
			inject: []string{"ip", "link", "set", "dev", iface(active.Name), "down"}},
		// lvchange -an refuses an open LV. A suspended table is what an
		// LV left half-way by a killed lvm command looks like: lvs no
		// longer shows it active, and its I/O waits. --nolockfs keeps
		// the filesystem out of it (that is the fault above).
		{name: "lv", story: "the LV is deactivated (device-mapper suspended)", layer: "lvm", interval: ms(mon.LVM.IntervalMS),
			inject: []string{"dmsetup", "suspend", "--nolockfs", lvm.DMName(sc.Storage.LVM.VG, sc.Storage.LVM.LV)}},
		{name: "drbd", story: "DRBD is disconnected", layer: "drbd", interval: ms(mon.DRBD.IntervalMS), reconnect: true,
			inject: []string{"drbdadm", "-c", "/run/tandem/drbd/" + res + ".res", "disconnect", res}},
	}
	if *r4Faults != "" {
		want := strings.Split(*r4Faults, ",")
		faults = slices.DeleteFunc(faults, func(f layerFault) bool { return !slices.Contains(want, f.name) })
	}

	// expect is what the policy does with one more failure of layer:
	// restart locally below the threshold, else fail over.
	failures := map[string][]time.Time{}
	expect := func(f layerFault) string {
		if f.reconnect {
			return "reconnect"
		}
		n := 1
		for _, at := range failures[f.layer] {
			if window == 0 || time.Since(at) < window {
				n++
			}
		}
		if n >= threshold {
			return "failover"
		}
		return "restart"
	}

	var done []faultRun
	run := func(f layerFault) {
		t.Helper()
		r := injectLayerFault(t, ctx, f, expect(f), active, standby)
		failures[f.layer] = append(failures[f.layer], r.at)
		if r.action == "failover" {
			active, standby = standby, active
		}
		// Each fault must meet a client that writes: wait for its
		// records to land again.
		r.resumed = clientResumed(t, ctx, active, export+"/w")
		r.from, r.to = r.at.Sub(wstart), r.resumed.Sub(wstart)
		done = append(done, r)
	}
	for _, f := range faults {
		run(f)
	}

	// 4. nfsd again, until the NFS layer passes its migration threshold.
	if *r4Faults == "" || slices.Contains(strings.Split(*r4Faults, ","), "threshold") {
		again := nfsd
		again.story = "nfsd is stopped again"
		for range threshold {
			was := active
			run(again)
			if active != was {
				break
			}
		}
		if done[len(done)-1].action != "failover" {
			t.Errorf("nfsd stopped %d times within %v: no failover", threshold, window)
		}
	}

	// 5. The client rode it all out.
	rep := finishWorkload(t, ctx, client, "/tmp/v3")
	for _, r := range done {
		s := longestStall(rep, r.from-2*time.Second, r.to)
		t.Logf("R4: %s %-48s %-9s detected %5.1f s (budget %4.1f s), handled %5.1f s, whole %5.1f s, client writing %5.1f s; client stall %.1f s",
			r.at.Format("15:04:05"), r.story, r.action, r.detect.Seconds(), r.budget.Seconds(), r.handled.Seconds(),
			r.whole.Sub(r.at).Seconds(), r.resumed.Sub(r.at).Seconds(), s.Seconds())
	}
}

// faultRun is what one injection measured.
type faultRun struct {
	story, action   string
	at, whole       time.Time     // injected; the pair whole again
	resumed         time.Time     // the client's writes land again
	detect, handled time.Duration // from the injection
	budget          time.Duration
	from, to        time.Duration // offsets from the workload's start
}

// injectLayerFault injects f on active, times its detection and checks
// that it was handled as want says: "restart", "reconnect" or
// "failover". It returns once the pair is whole again.
func injectLayerFault(t *testing.T, ctx context.Context, f layerFault, want string, active, standby *qemu.VM) faultRun {
	t.Helper()
	before := nodeStatus(t, ctx, active)
	if before.Role != "active" || before.HA == nil {
		t.Fatalf("%s: %s is %s before the fault", f.story, active.Name, before.Role)
	}
	restarts := serviceOf(before, f.layer).Restarts
	mark := active.Console.Len()
	r := faultRun{story: f.story, action: want, at: time.Now()}
	guest(t, ctx, active, f.inject...)
	// The fault lands somewhere within the agent's round trip (seconds
	// under TCG on a busy host); the console line reaches the host a
	// little after the monitor logs it.
	rt := time.Since(r.at)
	r.budget = 2*f.interval + rt + time.Second
	layerRE := regexp.QuoteMeta(f.layer)
	if f.layer == "drbd" {
		layerRE = `drbd(-primary)?` // both run DRBD's monitor on the active head
	}
	wait := func(what string, re *regexp.Regexp, within time.Duration) (string, time.Duration) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		line, err := active.Console.WaitForAfter(wctx, mark, re)
		if err != nil {
			t.Fatalf("%s: %s: no %s within %v: %v", f.story, active.Name, what, within, err)
		}
		return strings.TrimSpace(line), time.Since(r.at)
	}
	line, took := wait("monitor report", regexp.MustCompile(`monitor `+layerRE+` (failed|timeout|degraded)`), r.budget+time.Minute)
	r.detect = took
	if took > r.budget {
		t.Errorf("%s: the %s monitor saw it after %.1f s; budget two intervals (%v) + the agent's round trip (%.1f s) + 1 s",
			f.story, f.layer, took.Seconds(), 2*f.interval, rt.Seconds())
	}
	t.Logf("%s: detected after %.1f s: %s", f.story, took.Seconds(), line)

	switch want {
	case "restart":
		line, took := wait("local restart", regexp.MustCompile(`restart \S+ ok|escalate \S+:`), 3*time.Minute)
		r.handled = took
		if strings.Contains(line, "escalate") {
			t.Fatalf("%s: escalated instead of a local restart: %s", f.story, line)
		}
		t.Logf("%s: restarted locally after %.1f s: %s", f.story, took.Seconds(), line)
		st := waitStatus(t, ctx, active, func(s status.Status) bool {
			return s.Role == "active" && serviceOf(s, f.layer).Restarts > restarts && allUp(s)
		})
		if n := len(st.HA.Failovers); n != len(before.HA.Failovers) {
			t.Errorf("%s: a local restart, yet %s recorded a role change: %+v", f.story, active.Name, st.HA.Failovers[0])
		}
	case "reconnect":
		line, took := wait("reconnect", regexp.MustCompile(`StandAlone for \S+: reconnecting`), 3*time.Minute)
		r.handled = took
		t.Logf("%s: reconnected after %.1f s: %s", f.story, took.Seconds(), line)
	case "failover":
		line, took := wait("escalation", regexp.MustCompile(`escalate `+layerRE+`:`), 3*time.Minute)
		r.handled = took
		t.Logf("%s: gave up on %s after %.1f s: %s", f.story, f.layer, took.Seconds(), line)
		waitStatus(t, ctx, standby, func(s status.Status) bool {
			return s.Role == "active" && s.DRBD != nil && s.DRBD.Role == "Primary" && allUp(s)
		})
		t.Logf("%s: %s serves after %.1f s", f.story, standby.Name, time.Since(r.at).Seconds())
		old := nodeStatus(t, ctx, active)
		if old.Role == "active" || len(old.HA.Failovers) == 0 || old.HA.Failovers[0].Kind != "failover" {
			t.Errorf("%s: %s after giving up: %s, last role change %+v", f.story, active.Name, old.Role, old.HA.Failovers)
		}
		// The old head stays banned from the service for the failure
		// timeout, so it announces none rather than standby: wait for
		// the data to be whole instead of pairReady.
		waitStatus(t, ctx, standby, func(s status.Status) bool {
			return s.Role == "active" && s.DRBD.Connection == "Connected" && s.DRBD.Disk == "UpToDate" && s.DRBD.PeerDisk == "UpToDate"
		})
		r.whole = time.Now()
		return r
	}
	// Same head, whole pair, the layer healthy again (its monitor runs
	// a little after DRBD's resync ends): the next fault starts here.
	pairReady(t, ctx, active)
	waitStatus(t, ctx, active, func(s status.Status) bool { return serviceOf(s, f.layer).State == "running" })
	r.whole = time.Now()
	return r
}

// clientResumed waits until the workload's file in dir on the active
// head grows, i.e. the client's writes land there again, and returns
// when it saw that.
func clientResumed(t *testing.T, ctx context.Context, active *qemu.VM, dir string) time.Time {
	t.Helper()
	size := func() string {
		res, err := run(ctx, active, "busybox", "sh", "-c", "busybox stat -c %s "+dir+"/workload-*.dat")
		if err != nil || res.Exit != 0 {
			return ""
		}
		return strings.TrimSpace(string(res.Stdout))
	}
	first := size()
	deadline := time.Now().Add(3 * time.Minute)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if s := size(); s != "" && s != first {
			return time.Now()
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	t.Fatalf("%s: the client's writes did not land again within 3 minutes (file size %s)", active.Name, first)
	return time.Time{}
}

// serviceOf finds a layer in a status (zero if absent).
func serviceOf(s status.Status, name string) status.Service {
	for _, sv := range s.Services {
		if sv.Name == name {
			return sv
		}
	}
	return status.Service{}
}

// allUp says every layer an active head runs is up.
func allUp(s status.Status) bool {
	if len(s.Services) == 0 {
		return false
	}
	for _, sv := range s.Services {
		if sv.State != "running" && sv.State != "degraded" {
			return false
		}
	}
	return true
}

// longestStall is the longest client stall that began within [from, to]
// (offsets from the workload's start; host and guest clocks share only
// that start, and the guest's is a little early).
func longestStall(r *workload.Report, from, to time.Duration) time.Duration {
	var longest time.Duration
	for _, s := range r.Stalls {
		if a := s.From.Sub(r.Start); a >= from && a <= to {
			longest = max(longest, s.Took)
		}
	}
	return longest
}
