package scenarios_test

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"syscall"
	"testing"
	"time"

	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
)

func TestMain(m *testing.M) {
	// On Ctrl-C, stop every QEMU and remove the labs' dirs before dying.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		qemu.CloseAll()
		testimage.Cleanup()
		os.Exit(130)
	}()
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}

// requireQEMU: with -short a scenario may skip; otherwise (and always in
// CI) a missing QEMU or OVMF is a failure, never a silent skip.
func requireQEMU(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU scenario; runs without -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not found: run scripts/setup")
	}
	if _, err := os.Stat(qemu.OVMFCode); err != nil {
		t.Fatalf("OVMF firmware missing (%v): run scripts/setup", err)
	}
}

// boot starts vm and, if the test fails, prints its last console lines
// and its QEMU command line.
func boot(t *testing.T, ctx context.Context, c qemu.Config) *qemu.VM {
	t.Helper()
	vm, err := qemu.Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if !t.Failed() {
			return
		}
		if vm.Console != nil {
			t.Logf("last 50 console lines of %s:\n%s", vm.Name, vm.Console.Tail(50))
		}
		t.Logf("QEMU command line of %s (files in %s):\n%s", vm.Name, vm.Dir, vm.CommandLine())
	})
	return vm
}

// The flashable image boots through real UEFI firmware: OVMF loads
// systemd-boot from the ESP, systemd-boot the kernel and initramfs of
// slot A, and Tandem's PID 1 reports in on the serial console.
func TestDefaultImageBootsThroughOVMF(t *testing.T) {
	requireQEMU(t)
	img := testimage.Default(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := time.Now()
	vm := boot(t, ctx, qemu.Config{Name: "head", Dir: testimage.VMDir(t), Image: img.Path, DataDisks: 4, DataDiskSize: 64 << 20})

	line, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: PID 1 starting \(version `+regexp.QuoteMeta(img.Version)+`, slot a\)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after %.1fs (accelerator %s)", line, time.Since(start).Seconds(), qemu.Accel())

	line, err = vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: root mounted \(slot a\)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after %.1fs", line, time.Since(start).Seconds())
}
