package scenarios_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
)

// BenchmarkStackReplication measures, in one lab run on a fresh pair:
// each head's time to ready; the replication link's raw TCP throughput
// (tandem linktest over the bond); sequential direct writes through XFS on
// LVM on DRBD with the peer connected (protocol C) and disconnected
// (local RAID10 only); and 4 KiB write+fsync latency both ways. It is
// a benchmark, so it runs only with -bench:
//
//	go test -run '^$' -bench StackReplication -benchtime 1x -timeout 30m ./qemu/scenarios
func BenchmarkStackReplication(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	lab := benchLab(b, ctx)
	a, hb := lab.VM("head-a"), lab.VM("head-b")
	for _, vm := range []*qemu.VM{a, hb} {
		line, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: ready \(node \S+, (\d+) ms since PID 1 start\)`))
		if err != nil {
			b.Fatal(err)
		}
		ms, _ := strconv.Atoi(regexp.MustCompile(`(\d+) ms since`).FindStringSubmatch(line)[1])
		b.ReportMetric(float64(ms)/1000, vm.Name+"-ready-s")
	}
	line, err := a.Console.WaitFor(ctx, regexp.MustCompile(`tandem: role: active after (\d+) ms`))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("head-a: %s", line)
	for _, vm := range []*qemu.VM{a, hb} {
		if err := vm.WaitAgentPort(ctx); err != nil {
			b.Fatal(err)
		}
	}
	sh := func(vm *qemu.VM, script string) string {
		res, err := vm.Agent().Run(ctx, "busybox", "sh", "-c", script)
		if err != nil || res.Exit != 0 {
			b.Fatalf("%s: %s: %v %s", vm.Name, script, err, res.Stderr)
		}
		return string(res.Stdout) + string(res.Stderr)
	}
	// Wait for the RAID10 resyncs: they would steal the disks' time.
	for _, vm := range []*qemu.VM{a, hb} {
		sh(vm, "while busybox grep -q 'resync\\|recovery' /proc/mdstat; do busybox sleep 2; done")
	}

	// The link: 256 MiB over TCP from head-a to head-b's replication address.
	sh(hb, "(tandem linktest --listen 10.10.0.12:5001 < /dev/null > /dev/null 2>&1 &) ; true")
	time.Sleep(2 * time.Second)
	out := sh(a, "tandem linktest --to 10.10.0.12:5001 --mib 256")
	m := regexp.MustCompile(`: ([\d.]+) MB/s`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("linktest: %q", out)
	}
	link, _ := strconv.ParseFloat(m[1], 64)

	write := func() float64 {
		return 128 * (1 << 20) / realSeconds(b, sh(a, "busybox time busybox dd if=/dev/zero of=/srv/tandem/bench.dat bs=1M count=128 oflag=direct 2>&1; busybox rm -f /srv/tandem/bench.dat")) / 1e6
	}
	// 4 KiB write + fsync, one at a time: the workload tool's records.
	latency := func() time.Duration {
		out := sh(a, "busybox mkdir -p /srv/tandem/bench && tandem workload --dir /srv/tandem/bench --duration 10s --json; busybox rm -rf /srv/tandem/bench")
		var r workload.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.Acked == 0 {
			b.Fatalf("workload: %v: %s", err, out)
		}
		return r.End.Sub(r.Start) / time.Duration(r.Acked)
	}
	repl, replLat := write(), latency()
	drbdadm := "drbdadm -c /run/tandem/drbd/r0.res "
	sh(hb, drbdadm+"disconnect r0")
	local, localLat := write(), latency()
	sh(hb, drbdadm+"connect r0")
	b.ReportMetric(link, "link-MB/s")
	b.ReportMetric(repl, "drbd-MB/s")
	b.ReportMetric(local, "local-MB/s")
	b.ReportMetric(repl/link, "drbd/link")
	b.ReportMetric(float64(replLat.Microseconds()), "drbd-4k-fsync-us")
	b.ReportMetric(float64(localLat.Microseconds()), "local-4k-fsync-us")
	b.Logf("link %.1f MB/s; writes through DRBD (protocol C) %.1f MB/s = %.2f of the link; unreplicated %.1f MB/s; 4 KiB write+fsync %v replicated, %v local",
		link, repl, repl/link, local, replLat, localLat)
	if st := nodeStatus(b, ctx, a); st.Role != "active" || st.DRBD == nil {
		b.Fatalf("head-a after the run: %+v", st)
	}
}

// realSeconds reads busybox time's "real\t0m 3.05s" line.
func realSeconds(b *testing.B, out string) float64 {
	m := regexp.MustCompile(`real\s+(\d+)m\s*([\d.]+)s`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no time summary in %q", out)
	}
	min, _ := strconv.ParseFloat(m[1], 64)
	sec, _ := strconv.ParseFloat(m[2], 64)
	if min*60+sec == 0 {
		b.Fatalf("a zero time in %q", out)
	}
	return min*60 + sec
}

func benchLab(b *testing.B, ctx context.Context) *qemu.Lab {
	b.Helper()
	img := testimage.Default(b)
	lab, err := qemu.NewLab(ctx, qemu.LabConfig{Topology: qemu.Pair, Image: img.Path, SiteTOML: labSite(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lab.Close() })
	return lab
}
