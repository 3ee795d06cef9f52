package scenarios_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tandem.dev/tandem/internal/labagent"
	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
)

var earlyBootDone = regexp.MustCompile(`tandem: early boot done`)

// startLab boots a topology of the default image. When the test fails it
// keeps every console and prints the heads' last errors and every VM's
// QEMU command line; afterwards it checks that no QEMU of the lab is left.
func startLab(t *testing.T, ctx context.Context, topo qemu.Topology) *qemu.Lab {
	return startLabWith(t, ctx, qemu.LabConfig{Topology: topo})
}

// startLabWith is startLab with more of the lab's config (a site.toml).
func startLabWith(t testing.TB, ctx context.Context, c qemu.LabConfig) *qemu.Lab {
	t.Helper()
	requireQEMU(t)
	c.Image, c.Log = testimage.Default(t).Path, testLogger(t)
	lab, err := qemu.NewLab(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("\n" + lab.FailureReport(failedDir(t), 4))
		}
		lab.Close()
		noQEMULeft(t, lab.Dir)
	})
	return lab
}

// failedDir is where a failed test keeps its lab's consoles.
func failedDir(t testing.TB) string {
	return filepath.Join(os.TempDir(), "tandem-failed", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
}

// noQEMULeft fails if any process still names the lab's dir.
func noQEMULeft(t testing.TB, dir string) {
	t.Helper()
	out, _ := exec.Command("pgrep", "-af", regexp.QuoteMeta(dir)).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("processes left after the lab closed:\n%s", s)
	}
}

// testLogger logs to t until the test ends (later lines are dropped).
func testLogger(t testing.TB) *slog.Logger {
	var over atomic.Bool
	t.Cleanup(func() { over.Store(true) })
	return slog.New(slog.NewTextHandler(logWriter{t, &over}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type logWriter struct {
	t    testing.TB
	over *atomic.Bool
}

func (w logWriter) Write(p []byte) (int, error) {
	if !w.over.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// A pair boots, and the QMP faults work on it: link cuts, a disk pull,
// a reset, a power pull, and the power button.
func TestPair(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	lab := startLab(t, ctx, qemu.Pair)
	took, err := lab.WaitAll(ctx, earlyBootDone)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pair booted to early boot done: head-a %.1fs, head-b %.1fs after NewLab; %.1fs with the image build (accelerator %s)",
		took["head-a"].Seconds(), took["head-b"].Seconds(), time.Since(start).Seconds(), qemu.Accel())
	a, b := lab.VM("head-a"), lab.VM("head-b")

	t.Run("set_link", func(t *testing.T) {
		tests := []struct {
			netdev    string
			up        bool
			wantClass string
		}{
			{"rep0", false, ""},
			{"rep0", true, ""},
			{"rep1", false, ""},
			{"rep1", true, ""},
			{"mgmt", false, ""},
			{"mgmt", true, ""},
			{"rep7", false, "DeviceNotFound"},
		}
		for _, tc := range tests {
			err := a.SetLink(tc.netdev, tc.up)
			var qe *qemu.QMPError
			switch {
			case tc.wantClass == "" && err != nil:
				t.Errorf("SetLink(%s, %v): %v", tc.netdev, tc.up, err)
			case tc.wantClass != "" && (!errors.As(err, &qe) || qe.Class != tc.wantClass):
				t.Errorf("SetLink(%s, %v) = %v, want a %s error", tc.netdev, tc.up, err, tc.wantClass)
			}
		}
	})

	t.Run("remove disk", func(t *testing.T) {
		since := time.Now()
		if err := a.RemoveDisk("data3"); err != nil {
			t.Fatal(err)
		}
		t.Logf("data3 unplugged in %.2fs", time.Since(since).Seconds())
	})

	t.Run("reset", func(t *testing.T) {
		since, mark := time.Now(), b.Console.Len()
		if err := b.Reset(); err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if _, err := b.WaitEvent(ectx, "RESET", since); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Console.WaitForAfter(ectx, mark, regexp.MustCompile(`tandem: PID 1 starting`)); err != nil {
			t.Fatal(err)
		}
		t.Logf("head-b back in PID 1 %.1fs after the reset", time.Since(since).Seconds())
		if b.Exited() {
			t.Fatal("QEMU exited on reset")
		}
	})

	t.Run("power pull", func(t *testing.T) {
		if err := b.Quit(); err != nil {
			t.Fatal(err)
		}
		if !b.Exited() {
			t.Fatal("head-b still running after Quit")
		}
		if a.Exited() {
			t.Fatal("head-a went down with head-b")
		}
	})

	// Init handles the ACPI power button: the guest powers off and QEMU
	// exits (no -no-shutdown).
	t.Run("powerdown", func(t *testing.T) {
		since := time.Now()
		if err := a.Powerdown(); err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if _, err := a.WaitEvent(ectx, "POWERDOWN", since); err != nil {
			t.Fatal(err)
		}
		select {
		case <-a.Done():
			t.Logf("head-a powered off %.1fs after the button", time.Since(since).Seconds())
		case <-ectx.Done():
			t.Fatal("head-a still running 60s after the power button")
		}
	})
}

// The guest agent answers, and the pair's wiring works from inside the
// guests: each head pings the other over mgmt (through the hub), rep0 and
// rep1, and a cut rep0 drops its carrier and its traffic only.
//
// It needs init to start the agent (init/agent.go calls labagent.Start with
// the manifest's lab channel); without that the port exists and nobody
// opens it, and the test fails after 20 s saying so.
func TestAgentRunsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lab := startLab(t, ctx, qemu.Pair)
	if _, err := lab.WaitAll(ctx, earlyBootDone); err != nil {
		t.Fatal(err)
	}
	a, b := lab.VM("head-a"), lab.VM("head-b")
	for _, vm := range []*qemu.VM{a, b} {
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		err := vm.WaitAgentPort(pctx)
		pcancel()
		if err != nil {
			t.Fatalf("%v (does init call labagent.Start yet?)", err)
		}
	}
	start := time.Now()
	if got, want := strings.TrimSpace(guest(t, ctx, a, "busybox", "uname", "-r")), testimage.Default(t).Kernel; got != want {
		t.Fatalf("uname -r in head-a = %q, want %q", got, want)
	}
	t.Logf("a command round trip took %v", time.Since(start))

	// Addresses: 10.99.<link>.<1 for head-a, 2 for head-b>/24.
	links := []struct {
		netdev string
		subnet int
	}{{"mgmt", 9}, {"rep0", 0}, {"rep1", 1}}
	dev := map[string]string{} // "head-a/rep0" → eth1
	for i, vm := range []*qemu.VM{a, b} {
		for _, l := range links {
			nic := lab.State().VMs[i].NICs
			var mac string
			for _, n := range nic {
				if n.ID == l.netdev {
					mac = n.MAC
				}
			}
			name := ifaceByMAC(t, ctx, vm, mac)
			dev[vm.Name+"/"+l.netdev] = name
			guest(t, ctx, vm, "ip", "addr", "add", fmt.Sprintf("10.99.%d.%d/24", l.subnet, i+1), "dev", name)
			guest(t, ctx, vm, "ip", "link", "set", "dev", name, "up")
		}
	}
	ping := func(l int) (int, string) {
		res, err := run(ctx, a, "ping", "-c", "2", "-i", "0.2", "-W", "2", fmt.Sprintf("10.99.%d.2", l))
		if err != nil {
			t.Fatal(err)
		}
		return res.Exit, string(res.Stdout) + string(res.Stderr)
	}
	carrier := func(netdev string) string {
		return strings.TrimSpace(guest(t, ctx, a, "busybox", "cat", "/sys/class/net/"+dev["head-a/"+netdev]+"/carrier"))
	}
	for _, l := range links {
		if exit, out := ping(l.subnet); exit != 0 {
			t.Errorf("head-a cannot ping head-b over %s:\n%s", l.netdev, out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if err := a.SetLink("rep0", false); err != nil {
		t.Fatal(err)
	}
	if c := carrier("rep0"); c != "0" {
		t.Errorf("rep0 carrier in head-a after set_link off = %q, want 0", c)
	}
	if exit, _ := ping(0); exit == 0 {
		t.Error("ping over rep0 still works with its link cut")
	}
	if exit, out := ping(1); exit != 0 {
		t.Errorf("rep1 broke with rep0:\n%s", out)
	}
	if err := a.SetLink("rep0", true); err != nil {
		t.Fatal(err)
	}
	if c := carrier("rep0"); c != "1" {
		t.Errorf("rep0 carrier after set_link on = %q, want 1", c)
	}
	// The kernel takes up to a second to see the carrier (linkwatch), and
	// the neighbour entry failed while the link was cut.
	back := time.Now()
	for {
		exit, out := ping(0)
		if exit == 0 {
			t.Logf("rep0 carried traffic again %.1fs after set_link on", time.Since(back).Seconds())
			break
		}
		if time.Since(back) > 10*time.Second {
			t.Fatalf("rep0 did not come back within 10s: ping exit %d:\n%s", exit, out)
		}
	}
}

func run(ctx context.Context, vm *qemu.VM, argv ...string) (labagent.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return vm.Agent().Run(ctx, argv...)
}

// guest runs a command that must succeed and returns its stdout.
func guest(t testing.TB, ctx context.Context, vm *qemu.VM, argv ...string) string {
	t.Helper()
	res, err := run(ctx, vm, argv...)
	if err != nil {
		t.Fatalf("%s: %s: %v", vm.Name, strings.Join(argv, " "), err)
	}
	if res.Exit != 0 {
		t.Fatalf("%s: %s: exit %d: %s", vm.Name, strings.Join(argv, " "), res.Exit, res.Stderr)
	}
	return string(res.Stdout)
}

// ifaceByMAC names the guest interface with this MAC: the lab's MACs are
// stable, interface names are not.
func ifaceByMAC(t testing.TB, ctx context.Context, vm *qemu.VM, mac string) string {
	t.Helper()
	name := strings.TrimSpace(guest(t, ctx, vm, "busybox", "sh", "-c",
		`for i in /sys/class/net/*; do [ "$(busybox cat $i/address 2>/dev/null)" = "$0" ] && echo ${i##*/}; done; true`, mac))
	if name == "" {
		t.Fatalf("%s: no interface with MAC %s", vm.Name, mac)
	}
	return name
}
