package scenarios_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
)

var (
	pingReply   = regexp.MustCompile(`icmp_seq=(\d+)`)
	activeSlave = regexp.MustCompile(`Currently Active Slave: (\S+)`)
)

// The replication bond keeps a ping stream going when its active link is
// cut: the pair boots with the lab site config, head-a pings head-b's
// replication address every 100 ms over the bond, and the active slave's
// link is cut in the middle of the stream. The gap is logged.
func TestBondSurvivesLinkCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Pair, SiteTOML: labSite(t)})
	if _, err := lab.WaitAll(ctx, regexp.MustCompile(`tandem: ready \(node head-`)); err != nil {
		t.Fatal(err)
	}
	a := lab.VM("head-a")
	if err := a.WaitAgentPort(ctx); err != nil {
		t.Fatal(err)
	}
	// The lab wires eth1 to rep0 and eth2 to rep1. Cut whichever is active.
	netdev := map[string]string{"eth1": "rep0", "eth2": "rep1"}
	active := func() string {
		m := activeSlave.FindStringSubmatch(guest(t, ctx, a, "busybox", "cat", "/proc/net/bonding/bond0"))
		if m == nil {
			return ""
		}
		return m[1]
	}
	var was string
	for wait := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		if was = active(); netdev[was] != "" {
			break
		}
		if time.Since(wait) > 30*time.Second {
			t.Fatalf("bond0 has no active slave 30 s after ready (%q)", was)
		}
	}

	const count = 60 // 6 s at 100 ms
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.Agent().Run(ctx, "ping", "-c", strconv.Itoa(count), "-i", "0.1", "-W", "1", "10.10.0.12")
		done <- result{string(res.Stdout), err}
	}()
	time.Sleep(2 * time.Second)
	if err := a.SetLink(netdev[was], false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("ping finished %.1fs after the cut", time.Since(cut).Seconds())

	got := map[int]bool{}
	for _, m := range pingReply.FindAllStringSubmatch(r.out, -1) {
		n, _ := strconv.Atoi(m[1])
		got[n] = true
	}
	// The longest run of missing replies, between the first and last sent.
	longest, run := 0, 0
	for seq := 1; seq <= count; seq++ {
		if got[seq] {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	t.Logf("bond failover: %d/%d replies, longest gap %d missing replies (≈ %d ms at 100 ms intervals)",
		len(got), count, longest, longest*100)
	if len(got) < count-10 || longest > 10 {
		t.Errorf("the stream broke for more than 1 s across the cut:\n%s", r.out)
	}
	if now := active(); now == was || netdev[now] == "" {
		t.Errorf("bond0's active slave is %q after cutting %s (%s)", now, was, netdev[was])
	}
	if err := a.SetLink(netdev[was], true); err != nil {
		t.Fatal(err)
	}
}
