package scenarios_test

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/site"
)

var soakFlag = flag.Duration("soak", 30*time.Minute, "how long BenchmarkIdleSoak leaves the pair idle")

// BenchmarkIdleSoak counts false alarms of the membership layer: the full
// lab with the witness sits idle for -soak (30 minutes) under TCG, and
// every role change, lost peer, lost path and unanswered witness is
// counted from both heads' consoles. Each one is false: nothing failed.
// It also reports the longest heartbeat gap each head saw from its live
// peer, per path and on any path: the margin left under the dead time.
//
//	go test -run '^$' -bench IdleSoak -benchtime 1x -timeout 60m ./qemu/scenarios
func BenchmarkIdleSoak(b *testing.B) {
	for range b.N {
		soak(b)
	}
}

func soak(b *testing.B) {
	ctx, lab, sc := startHALab(b, *soakFlag+20*time.Minute)
	a, hb := lab.VM("head-a"), lab.VM("head-b")
	pairReady(b, ctx, a)
	marks := map[*qemu.VM]int{a: a.Console.Len(), hb: hb.Console.Len()}
	b.Logf("pair up; idle for %v", *soakFlag)
	sleepCtx(ctx, *soakFlag)
	if ctx.Err() != nil {
		b.Fatal(ctx.Err())
	}
	events := map[string]*regexp.Regexp{
		"role changes":       regexp.MustCompile(`tandem: (takeover|failover|switchover|quorum lost|two primaries|stop|start) →`),
		"peer lost":          regexp.MustCompile(`heartbeat: peer lost`),
		"path down":          regexp.MustCompile(`heartbeat: path down`),
		"witness unanswered": regexp.MustCompile(`the witness does not answer`),
		"layer failures":     regexp.MustCompile(`monitor \S+ (failed|timeout|timed out|degraded)`),
	}
	total := map[string]int{}
	for vm, mark := range marks {
		text := vm.Console.Text()[mark:]
		for name, re := range events {
			found := re.FindAllStringIndex(text, -1)
			total[name] += len(found)
			if len(found) > 0 {
				b.Logf("%s: %d × %s", vm.Name, len(found), name)
			}
			for _, at := range found[:min(len(found), 5)] { // which, and why
				line := text[at[0]:]
				if i := strings.IndexByte(line, '\n'); i >= 0 {
					line = line[:i]
				}
				b.Logf("  %s: %s", vm.Name, line)
			}
		}
	}
	st := pairReady(b, ctx, a) // still the same pair, whole
	if len(st.HA.Failovers) != 1 {
		b.Errorf("head-a recorded %d role changes; want only its first start", len(st.HA.Failovers))
	}
	b.ReportMetric(float64(total["role changes"]), "false-failovers")
	b.ReportMetric(float64(total["peer lost"]), "peer-lost")
	b.ReportMetric(float64(total["path down"]), "path-down")
	b.ReportMetric(float64(total["witness unanswered"]), "witness-unanswered")
	b.ReportMetric(float64(total["layer failures"]), "layer-failures")
	b.ReportMetric(soakFlag.Minutes(), "minutes")
	reportLongestGaps(b, ctx, sc, a, hb)
}

// reportLongestGaps reports, from each head's status, the longest the
// peer went unheard while alive since it booted, per path and on any
// path ("any"), and the longest of all: the margin left under the dead
// time.
func reportLongestGaps(b *testing.B, ctx context.Context, sc *site.Config, vms ...*qemu.VM) {
	_, dead, _ := membershipTiming(sc)
	var longest time.Duration
	for _, vm := range vms {
		st := nodeStatus(b, ctx, vm)
		if st.HA == nil || st.HA.Heartbeat.Peer == nil {
			b.Errorf("%s: no heartbeat peer in its status", vm.Name)
			continue
		}
		hb := st.HA.Heartbeat
		gaps := map[string]float64{"any": hb.Peer.LongestGapMS}
		for _, p := range hb.Paths {
			gaps[p.Name] = p.LongestGapMS
		}
		for name, ms := range gaps {
			gap := time.Duration(ms * float64(time.Millisecond))
			longest = max(longest, gap)
			b.Logf("%s: longest heartbeat gap on %s: %.2f s; dead time %.1f s", vm.Name, name, gap.Seconds(), dead.Seconds())
			b.ReportMetric(gap.Seconds(), fmt.Sprintf("s-longest-gap-%s-%s", vm.Name, name))
		}
	}
	b.ReportMetric(longest.Seconds(), "s-longest-gap")
	b.ReportMetric(dead.Seconds(), "s-dead-time")
}
