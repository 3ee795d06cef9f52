package qemu_test

import (
	"flag"
	"regexp"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
)

var soakFlag = flag.Duration("soak", 30*time.Minute, "how long BenchmarkIdleSoak leaves the pair idle")

// BenchmarkIdleSoak counts false alarms of the membership layer: the full
// lab with the witness sits idle for -soak (30 minutes) under TCG, and
// every role change, lost peer, lost path and unanswered witness is
// counted from both heads' consoles. Each one is false: nothing failed.
//
//	go test -run '^$' -bench IdleSoak -benchtime 1x -timeout 60m ./qemu
func BenchmarkIdleSoak(b *testing.B) {
	for range b.N {
		soak(b)
	}
}

func soak(b *testing.B) {
	ctx, lab, _ := startHALab(b, *soakFlag+20*time.Minute)
	a, hb := lab.VM("head-a"), lab.VM("head-b")
	pairReady(b, ctx, a)
	marks := map[*qemu.VM]int{a: a.Console.Len(), hb: hb.Console.Len()}
	b.Logf("pair up; idle for %v", *soakFlag)
	sleepCtx(ctx, *soakFlag)
	if ctx.Err() != nil {
		b.Fatal(ctx.Err())
	}
	events := map[string]*regexp.Regexp{
		"role changes":       regexp.MustCompile(`HA: (takeover|failover|switchover|quorum lost|two primaries|stop|start) →`),
		"peer lost":          regexp.MustCompile(`heartbeat: peer lost`),
		"path down":          regexp.MustCompile(`heartbeat: path down`),
		"witness unanswered": regexp.MustCompile(`HA: the witness does not answer`),
		"layer failures":     regexp.MustCompile(`level=(WARN|ERROR).*(monitor failed|restarting)`),
	}
	total := map[string]int{}
	for vm, mark := range marks {
		text := vm.Console.Text()[mark:]
		for name, re := range events {
			n := len(re.FindAllStringIndex(text, -1))
			total[name] += n
			if n > 0 {
				b.Logf("%s: %d × %s", vm.Name, n, name)
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
}
