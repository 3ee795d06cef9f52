package scenarios_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// One head booted through OVMF from the default image, as an integrator
// would provision it: site.toml on TANDEM-CFG, a management NIC and two
// replication links, four data disks. Under UEFI the boot entries are
// fixed, so the head learns that it is head-a from the SMBIOS system
// serial (see init/identify.go).

const nodeName = "head-a" // the VM name: data disk serials head-a-data0..3, as site.lab.toml says

func labSite(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "site.lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// headConfig is one head with its NICs on loopback UDP ports of a
// reserved block. The replication links point at ports nobody uses: the
// bond only needs their carrier here.
func headConfig(t *testing.T, img string, siteTOML []byte) qemu.Config {
	t.Helper()
	ports, err := qemu.ReservePorts()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ports.Release)
	var nics []qemu.NIC
	for i, id := range []string{"mgmt", "rep0", "rep1"} {
		local, _ := ports.Next()
		remote, err := ports.Next()
		if err != nil {
			t.Fatal(err)
		}
		nics = append(nics, qemu.NIC{ID: id, MAC: fmt.Sprintf("52:54:00:1a:0a:%02x", i),
			Backend: fmt.Sprintf("socket,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", remote, local)})
	}
	return qemu.Config{
		Name: nodeName, Dir: testimage.VMDir(t), Image: img,
		DataDisks: 4, DataDiskSize: 64 << 20, NICs: nics,
		AgentChannel: qemu.LabChannel, SiteTOML: siteTOML,
		Extra: []string{"-smbios", "type=1,serial=head-a"},
	}
}

var readyRE = regexp.MustCompile(`tandem: ready \(node head-a, (\d+) ms since PID 1 start\) rss_kib=(\d+) uptime=`)

// nodeStatus runs `tandem status --json` in the guest.
func nodeStatus(t testing.TB, ctx context.Context, vm *qemu.VM) status.Status {
	t.Helper()
	if err := vm.WaitAgentPort(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := vm.Agent().Run(ctx, "tandem", "status", "--json")
	if err != nil || res.Exit != 0 {
		t.Fatalf("tandem status: exit %d, err %v: %s", res.Exit, err, res.Stderr)
	}
	var st status.Status
	if err := json.Unmarshal(res.Stdout, &st); err != nil {
		t.Fatalf("tandem status --json: %v: %s", err, res.Stdout)
	}
	return st
}

// waitExit waits for QEMU to exit on its own (the guest powered off).
func waitExit(t *testing.T, ctx context.Context, vm *qemu.VM) {
	t.Helper()
	select {
	case <-vm.Done():
	case <-ctx.Done():
		t.Fatalf("QEMU still runs: the guest did not power off")
	}
}

// The default image reaches ready, keeps its state across a clean and a
// hard reboot without formatting again, and powers off cleanly with the
// services stopped top-down.
func TestNodeReadyRebootPoweroff(t *testing.T) {
	requireQEMU(t)
	img := testimage.Default(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := headConfig(t, img.Path, labSite(t))
	c.Reboot = true // the reboots happen inside one QEMU, on one overlay
	start := time.Now()
	vm := boot(t, ctx, c)

	line, err := vm.Console.WaitFor(ctx, readyRE)
	if err != nil {
		t.Fatal(err)
	}
	m := readyRE.FindStringSubmatch(line)
	ms, _ := strconv.Atoi(m[1])
	rss, _ := strconv.Atoi(m[2])
	t.Logf("first boot: ready %.1fs after QEMU start; PID 1 start → ready %d ms (guest clock); PID 1 RSS %.1f MiB",
		time.Since(start).Seconds(), ms, float64(rss)/1024)
	if !strings.Contains(vm.Console.Text(), "tandem: state: formatted") {
		t.Error("first boot did not format the blank state partition")
	}
	// systemd-boot counted this boot as a try (+3 → +2-1); once ready,
	// PID 1 marks the slot good so that it never falls back to slot B.
	blessed, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`boot: slot a marked good \(tandem-a\+2-1\.conf → tandem-a\.conf\)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(blessed)
	st := nodeStatus(t, ctx, vm)
	// PID 1 re-executed its copy after switch_root: the initramfs's /init
	// is no longer pinned.
	if exe := strings.TrimSpace(guest(t, ctx, vm, "busybox", "readlink", "/proc/1/exe")); exe != manifest.SelfPath {
		t.Errorf("/proc/1/exe = %q, want %s", exe, manifest.SelfPath)
	}
	if st.State != status.Ready || st.Node != "head-a" || st.Config != site.OnConfigPartition {
		t.Errorf("status: state %s node %q config %q", st.State, st.Node, st.Config)
	}
	// The lab agent answers, so the head must say it is a lab image.
	if !st.Lab {
		t.Error("status does not say LAB IMAGE, yet the lab agent runs")
	}
	// Alone, the head runs the layers both heads run and waits for its
	// peer before anything active starts. DRBD is up but unconnected
	// (degraded once monitored); the ARP-monitored bond has no peer.
	var names []string
	for _, s := range st.Services {
		state := s.State
		if state == "degraded" {
			state = "running"
		}
		names = append(names, s.Name+"="+state)
	}
	if got, want := strings.Join(names, " "), "mgmt=running bond=running raid10=running drbd=running drbd-primary=stopped lvm=stopped xfs=stopped nfs=stopped vip=stopped"; got != want {
		t.Errorf("services:\n got %s\nwant %s", got, want)
	}
	if st.Role != "standby" || st.PeerError == "" {
		t.Errorf("alone, the head is %q with peer error %q; want standby and the unreachable peer named", st.Role, st.PeerError)
	}
	if !strings.Contains(vm.Console.Text(), "raid10: recorded array UUID") {
		t.Error("the new array's UUID was not recorded on the state partition")
	}

	// A clean reboot, then a hard reset: the state survives both.
	for _, how := range []string{"tandem reboot", "system_reset"} {
		mark := vm.Console.Len()
		if how == "tandem reboot" {
			res, err := vm.Agent().Run(ctx, "tandem", "reboot")
			if err != nil || res.Exit != 0 {
				t.Fatalf("tandem reboot: exit %d, err %v: %s", res.Exit, err, res.Stderr)
			}
		} else if err := vm.Reset(); err != nil {
			t.Fatal(err)
		}
		if _, err := vm.Console.WaitForAfter(ctx, mark, regexp.MustCompile(`tandem: state: mounted \(existing\)`)); err != nil {
			t.Fatalf("after %s: %v", how, err)
		}
		if _, err := vm.Console.WaitForAfter(ctx, mark, readyRE); err != nil {
			t.Fatalf("after %s: %v", how, err)
		}
		after := vm.Console.Text()[mark:]
		if strings.Contains(after, "state: formatted") {
			t.Errorf("after %s the state partition was formatted again", how)
		}
		if !strings.Contains(after, "assembled existing array (not created)") || strings.Contains(after, "created new array") {
			t.Errorf("after %s the RAID10 array was not assembled as it was", how)
		}
		if _, err := vm.Console.WaitForAfter(ctx, mark, regexp.MustCompile(`boot: slot already marked good`)); err != nil {
			t.Errorf("after %s: %v", how, err)
		}
		if how == "tandem reboot" && !strings.Contains(vm.Console.Text()[mark:], "tandem: rebooting") {
			t.Errorf("tandem reboot did not shut down cleanly")
		}
		t.Logf("after %s: %s", how, readyRE.FindString(after))
	}

	// The ACPI power button: services stop top-down, QEMU exits.
	mark := vm.Console.Len()
	if err := vm.Powerdown(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, ctx, vm)
	out := vm.Console.Text()[mark:]
	order := []string{"shutdown: poweroff requested (power button)", "stop vip ok", "stop drbd-primary ok", "stop drbd ok", "stop raid10 ok", "stop bond ok", "stop mgmt ok", "unmount: ok", "tandem: powering off"}
	at := 0
	for _, want := range order {
		i := strings.Index(out[at:], want)
		if i < 0 {
			t.Fatalf("shutdown: %q missing or out of order (want %q):\n%s", want, order, out)
		}
		at += i + len(want)
	}
	if strings.Contains(out[at:], "tandem: ") {
		t.Errorf("tandem printed after \"powering off\":\n%s", out[at:])
	}
}

// A bad site.toml puts the node into maintenance: the exact
// file:line:col message is on the console and in `tandem status`, and
// the data disks are untouched.
func TestNodeBadSiteConfig(t *testing.T) {
	requireQEMU(t)
	img := testimage.Default(t)
	good := labSite(t)
	vipLine := []byte(`address = "10.0.0.10/24"`)
	if !bytes.Contains(good, vipLine) {
		t.Fatalf("site.lab.toml changed: no %s", vipLine)
	}
	tests := []struct {
		name string
		site []byte
		// netUp: the management network still comes up (semantic errors
		// leave it decodable; a syntax error does not).
		netUp bool
		// reason, for a config that parses: what maintenance must say.
		reason string
	}{
		{"syntax", bytes.Replace(good, vipLine, []byte(`address = "10.0.0.10/24`), 1), false, ""},
		{"semantic", bytes.Replace(good, vipLine, []byte(`address = "10.0.0.11/24"`), 1), true, ""},
		// A serial that no disk has: the array cannot be found or made.
		{"wrong disk", bytes.Replace(good, []byte(`"serial:head-a-data3"`), []byte(`"serial:head-a-data9"`), 1), true, "serial:head-a-data9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, perr := site.Parse(site.OnConfigPartition, tt.site)
			var want []string
			switch {
			case tt.reason != "" && perr != nil:
				t.Fatalf("the config should parse: %v", perr)
			case tt.reason != "":
				perr = errors.New(tt.reason)
			case perr == nil:
				t.Fatal("the bad config parses")
			default:
				want = strings.Split(perr.Error(), "\n")
			}
			t.Logf("expected: %s", perr)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			c := headConfig(t, img.Path, tt.site)
			sums := fillDataDisks(t, c)
			vm := boot(t, ctx, c)
			for _, line := range want {
				if _, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`(?m)tandem: ERROR MAINTENANCE: `+regexp.QuoteMeta(line)+`\r?$`)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.reason != "" {
				line, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: ERROR MAINTENANCE: .*`+regexp.QuoteMeta(tt.reason)))
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("console: %s", line)
			}
			netRE := regexp.MustCompile(`maintenance: management network (up for diagnosis|stays down)`)
			line, err := vm.Console.WaitFor(ctx, netRE)
			if err != nil {
				t.Fatal(err)
			}
			if up := strings.Contains(line, "up for diagnosis"); up != tt.netUp {
				t.Errorf("management network: %q, want up=%v", line, tt.netUp)
			}
			st := nodeStatus(t, ctx, vm)
			if st.State != status.Maintenance || !strings.Contains(st.Reason, perr.Error()) {
				t.Errorf("status: state %s, reason %q; want maintenance with %q", st.State, st.Reason, perr)
			}
			if strings.Contains(vm.Console.Text(), "tandem: ready") {
				t.Error("a node with a bad config became ready")
			}
			if err := vm.Powerdown(); err != nil {
				t.Fatal(err)
			}
			waitExit(t, ctx, vm)
			for p, sum := range sums {
				if got := fileSum(t, p); got != sum {
					t.Errorf("%s changed: sha256 %s, was %s", filepath.Base(p), got, sum)
				}
			}
		})
	}
}

// fillDataDisks pre-creates the VM's data disks with random data at both
// ends (where signatures and metadata live) and returns their sha256.
func fillDataDisks(t *testing.T, c qemu.Config) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for i := range c.DataDisks {
		p := filepath.Join(c.Dir, fmt.Sprintf("%s-data%d.raw", c.Name, i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, c.DataDiskSize - 1<<20} {
			if _, err := f.WriteAt(randBytes(1<<20), off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		sums[p] = fileSum(t, p)
	}
	return sums
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
