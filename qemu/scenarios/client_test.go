package scenarios_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/workload"
)

// The full lab: two heads and a client. The client runs the workload tool
// against a local disk and reports a clean run; then head-b loses power
// and head-a sees it gone: its replication bond loses every link.
func TestFullLabClientAndPowerPull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, SiteTOML: labSite(t)})
	if _, err := lab.WaitAll(ctx, earlyBootDone); err != nil {
		t.Fatal(err)
	}
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	for _, vm := range []*qemu.VM{a, client} {
		if err := vm.WaitAgentPort(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The client's scratch disk, found by its serial, never by vdX order.
	dev := strings.TrimSpace(guest(t, ctx, client, "busybox", "sh", "-c",
		`for d in /sys/block/*; do [ "$(busybox cat $d/serial 2>/dev/null)" = client-data0 ] && echo /dev/${d##*/}; done; true`))
	if dev == "" {
		t.Fatal("client: no disk with serial client-data0")
	}
	guest(t, ctx, client, "mkfs.ext4", "-q", "-F", dev)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/w")
	guest(t, ctx, client, "busybox", "mount", "-t", "ext4", dev, "/tmp/w")
	out := guest(t, ctx, client, "tandem", "workload", "--dir", "/tmp/w", "--duration", "8s", "--json")
	var r workload.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("workload report %q: %v", out, err)
	}
	t.Logf("client workload on a local disk: %s", r.String())
	if !r.Clean() || r.Acked == 0 {
		t.Errorf("workload not clean: %+v", r)
	}

	// The witness host (the client, 10.0.0.2 as site.lab.toml says) is
	// reachable from both heads over the management segment.
	plan, err := qemu.PlanClient(labSite(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.ClientUp(ctx, plan.Addr); err != nil {
		t.Fatal(err)
	}

	// A power pull on head-b: head-a's bond (ARP-monitored) goes down.
	for _, vm := range []*qemu.VM{a, b} {
		if _, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: ready \(node `+vm.Name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, vm := range []*qemu.VM{a, b} {
		if err := vm.WaitAgentPort(ctx); err != nil {
			t.Fatal(err)
		}
		if res, err := run(ctx, vm, "ping", "-c", "2", "-W", "2", "10.0.0.2"); err != nil || res.Exit != 0 {
			t.Errorf("%s cannot reach the witness host 10.0.0.2: %v %s", vm.Name, err, res.Stdout)
		}
	}
	if err := b.Quit(); err != nil {
		t.Fatal(err)
	}
	pulled := time.Now()
	for {
		st := guest(t, ctx, a, "busybox", "cat", "/proc/net/bonding/bond0")
		if strings.Contains(st, "MII Status: down") && !strings.Contains(st, "Currently Active Slave: eth") {
			t.Logf("head-a saw head-b gone %.1fs after the power pull (bond0 has no live link)", time.Since(pulled).Seconds())
			break
		}
		if time.Since(pulled) > 30*time.Second {
			t.Fatalf("head-a still sees a live replication link 30 s after head-b's power pull:\n%s", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if res, err := run(ctx, a, "ping", "-c", "2", "-W", "1", "10.10.0.12"); err != nil || res.Exit == 0 {
		t.Errorf("head-a still reaches head-b's replication address after the power pull (%v)", err)
	}
}
