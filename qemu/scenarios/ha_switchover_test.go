package scenarios_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
	"tandem.dev/tandem/status"
)

// failoverStallMax is the failover's target for the client's longest
// stall (docs/benchmarks.md): after a power cut that stops a switchover
// halfway, the client may stall no longer than after a power pull.
const failoverStallMax = 10 * time.Second

// switchoverEndpointDies is step 5 of TestFailoverActiveHeadKilled: the
// operator runs `tandem switchover` on the active head under the
// client's writes, and as the target starts the stack, first the target
// loses power (the old head takes the service back, as in a failover),
// then, once the pair is whole again, the source does (the target goes
// on and serves). After each case the dead head is powered on and the
// pair resyncs. done gathers the workload reports whose records must
// all read back.
func switchoverEndpointDies(t *testing.T, ctx context.Context, lab *qemu.Lab, activeName, standbyName string, worst time.Duration, done *[]*workload.Report) {
	client := lab.VM("client")
	activeRE := regexp.MustCompile(`tandem: role: active after (\d+) ms`)
	startingRE := regexp.MustCompile(`tandem: role: becoming active`)
	const before = 8 * time.Second
	for i, c := range []struct {
		name        string
		targetDies  bool
		wantCommand string // in the output of `tandem switchover` on a source that lives
	}{
		{"target dies", true, " fell silent during the switchover: "},
		{"source dies", false, ""},
	} {
		source, target := lab.VM(activeName), lab.VM(standbyName)
		victim, survivor := source, target
		if c.targetDies {
			victim, survivor = target, source
		}
		dir := fmt.Sprintf("/tmp/v3/s%d", i+1)
		startWorkload(t, ctx, client, dir, worst+10*time.Minute) // stopped below, once the pair is whole again
		started := time.Now()
		sleepCtx(ctx, before)

		// The switchover runs in the source's background, so that the
		// power cut lands while it is under way.
		marks := map[string]int{source.Name: source.Console.Len(), target.Name: target.Console.Len()}
		out := fmt.Sprintf("/tmp/switchover-%d", i+1)
		at := time.Since(started)
		guest(t, ctx, source, "busybox", "sh", "-c", "busybox cat /proc/uptime > "+out+".start; "+
			"(tandem switchover > "+out+".out 2>&1 < /dev/null; echo $? > "+out+".rc; busybox cat /proc/uptime > "+out+".end) > /dev/null 2>&1 < /dev/null &")
		issued := time.Now()
		// The source has stopped its stack and the target starts it: one
		// of the two loses power now.
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, err := target.Console.WaitForAfter(wctx, marks[target.Name], startingRE)
		wcancel()
		if err != nil {
			t.Fatalf("%s: %s did not start the stack within a minute of the switchover: %v", c.name, target.Name, err)
		}
		killed := time.Now() // the guest stops at the QMP quit; Quit returns once QEMU has exited
		if err := victim.Quit(); err != nil {
			t.Fatal(err)
		}
		cut := killed.Sub(started)
		t.Logf("%s: %s lost power %.1f s after `tandem switchover` on %s, as %s began to start the stack",
			c.name, victim.Name, killed.Sub(issued).Seconds(), source.Name, target.Name)
		if after := target.Console.Text()[marks[target.Name]:]; activeRE.MatchString(after) {
			t.Errorf("%s: %s had already started the stack when the power was cut: not a switchover cut halfway", c.name, target.Name)
		}

		// The survivor serves, within a failover's time.
		wctx, wcancel = context.WithTimeout(ctx, worst+time.Minute)
		line, err := survivor.Console.WaitForAfter(wctx, marks[survivor.Name], activeRE)
		wcancel()
		if err != nil {
			t.Fatalf("%s: %s did not serve within %v of the power cut: %v", c.name, survivor.Name, worst+time.Minute, err)
		}
		took := time.Since(killed)
		st := waitStatus(t, ctx, survivor, func(s status.Status) bool {
			return s.Role == "active" && s.HA != nil && s.HA.Vote.Held && !s.HA.Heartbeat.Alive && len(s.HA.Failovers) > 0 &&
				s.DRBD != nil && s.DRBD.Role == "Primary"
		})
		f := st.HA.Failovers[0]
		t.Logf("%s: %s active %.1f s after the power cut (console: active after %s ms); its %s, %.1f s: %s",
			c.name, survivor.Name, took.Seconds(), activeRE.FindStringSubmatch(line)[1], f.Kind, float64(f.TotalMS)/1000, failoverSteps(f))
		if !f.OK {
			t.Errorf("%s: %s's last role change failed: %+v", c.name, survivor.Name, f)
		}
		// A survivor that stops the stack again after the cut stalls the
		// client twice; the stall bound below judges it.
		if n := strings.Count(survivor.Console.Text()[marks[survivor.Name]:], "role: releasing the active role"); n > map[bool]int{true: 1, false: 0}[c.targetDies] {
			t.Logf("%s: %s stopped the stack again after the power cut:\n%s", c.name, survivor.Name, grepLines(survivor.Console.Text()[marks[survivor.Name]:], "role: "))
		}
		if c.targetDies {
			res := waitCommand(t, ctx, source, out)
			if res.exit == 0 || !strings.Contains(res.out, target.Name+c.wantCommand) {
				t.Errorf("%s: tandem switchover on %s: exit %d, %q; want it to report that %s fell silent", c.name, source.Name, res.exit, res.out, target.Name)
			}
			t.Logf("%s: tandem switchover on %s: exit %d after %.1f s: %s", c.name, source.Name, res.exit, res.took.Seconds(), strings.TrimSpace(res.out))
		}

		// The dead head comes back and resyncs, as after a power pull.
		back, err := lab.PowerOn(victim.Name)
		if err != nil {
			t.Fatal(err)
		}
		pairReady(t, ctx, survivor)
		wctx, wcancel = context.WithTimeout(ctx, time.Minute)
		if _, err := back.Console.WaitFor(wctx, regexp.MustCompile(`warmed the takeover path`)); err != nil {
			t.Errorf("%s: %s did not warm its takeover path: %v", c.name, back.Name, err)
		}
		wcancel()
		for _, vm := range []*qemu.VM{survivor, back} {
			mark := marks[vm.Name]
			if vm == back {
				mark = 0
			}
			if m := splitBrain.FindString(vm.Console.Text()[mark:]); m != "" {
				t.Errorf("%s: %s: %s", c.name, vm.Name, strings.TrimSpace(m))
			}
		}
		stopWorkload(t, ctx, client, dir)
		r := waitWorkload(t, ctx, client, dir, 3*time.Minute)
		if !r.Clean() || r.Acked == 0 {
			t.Errorf("%s: the client saw errors or lost records: %s (first error: %s)", c.name, r, r.FirstError)
		}
		// The stall began with the switchover's planned stop; what the
		// power cut adds is judged against a failover (cut → next write).
		stall := longestStallAfter(r, at)
		if stall == nil {
			t.Fatalf("%s: no stall at the switchover (%v into the run): %+v", c.name, at, r.Stalls)
		}
		afterCut := stall.To.Sub(r.Start) - cut
		t.Logf("%s: client stall %.1f s, %.1f s of it after the power cut; NFSv3: %s", c.name, stall.Took.Seconds(), afterCut.Seconds(), r)
		if afterCut > failoverStallMax {
			t.Errorf("%s: the client stalled %.1f s after the power cut, longer than a failover may (%v)", c.name, afterCut.Seconds(), failoverStallMax)
		}
		*done = append(*done, r)
		for _, old := range *done {
			res, err := client.Agent().Run(ctx, "tandem", "workload", "--verify", old.File, "--acked", fmt.Sprint(old.Acked))
			if err != nil || res.Exit != 0 {
				t.Errorf("%s: verifying %s: %v %s%s", c.name, old.File, err, res.Stdout, res.Stderr)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		activeName, standbyName = survivor.Name, victim.Name
	}
}

// longestStallAfter is the longest stall of r that began after at (an
// offset from the workload's start), less the agent's round trip.
func longestStallAfter(r *workload.Report, at time.Duration) *workload.Stall {
	var out *workload.Stall
	for i, s := range r.Stalls {
		if s.From.Sub(r.Start) >= at-2*time.Second && (out == nil || s.Took > out.Took) {
			out = &r.Stalls[i]
		}
	}
	return out
}

// commandResult is a background command's exit status and output.
type commandResult struct {
	exit int
	out  string
	took time.Duration // by the guest's clock
}

// waitCommand waits (a minute at most) for a command started in vm's
// background with its output in base.out, its exit status in base.rc and
// the guest's uptime at its start and end in base.start and base.end.
func waitCommand(t *testing.T, ctx context.Context, vm *qemu.VM, base string) commandResult {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		res, err := run(ctx, vm, "busybox", "cat", base+".end")
		if err != nil || res.Exit != 0 || len(res.Stdout) == 0 {
			sleepCtx(ctx, 500*time.Millisecond)
			continue
		}
		rc := strings.TrimSpace(guest(t, ctx, vm, "busybox", "cat", base+".rc"))
		n, err := strconv.Atoi(rc)
		if err != nil {
			t.Fatalf("%s: %s.rc: %q", vm.Name, base, rc)
		}
		return commandResult{exit: n, out: guest(t, ctx, vm, "busybox", "cat", base+".out"),
			took: uptime(t, string(res.Stdout)) - uptime(t, guest(t, ctx, vm, "busybox", "cat", base+".start"))}
	}
	t.Fatalf("%s: the command logging to %s.out did not end within a minute", vm.Name, base)
	return commandResult{}
}

// uptime reads the first field of /proc/uptime.
func uptime(t *testing.T, s string) time.Duration {
	t.Helper()
	f := strings.Fields(s)
	if len(f) == 0 {
		t.Fatalf("uptime: %q", s)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("uptime: %q: %v", s, err)
	}
	return time.Duration(v * float64(time.Second))
}
