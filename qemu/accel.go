// Package qemu boots Tandem images in QEMU for tests and for `tandem lab`:
// it picks the accelerator, captures the serial console, and always kills
// what it started. A lab's segments are UDP sockets on loopback (see
// Hub); the host joins the management segment only from a network
// namespace of the lab process's own (LabConfig.HostNIC, Lab.Forward),
// so nothing in the host's namespace can send to the lab's addresses.
package qemu

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

var (
	accelOnce sync.Once
	accel     string
)

// Accel returns "tcg" unless KVM was asked for (TANDEM_ACCEL=kvm) and a
// probe with a timeout shows it works: nested KVM hangs on our CI machines,
// and a hung accelerator must cost seconds, not the whole run.
func Accel() string {
	accelOnce.Do(func() {
		accel = "tcg"
		if os.Getenv("TANDEM_ACCEL") != "kvm" {
			return
		}
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return
		}
		if probeKVM(10 * time.Second) {
			accel = "kvm"
		}
	})
	return accel
}

// probeKVM starts QEMU with KVM and an empty kernel: when KVM initialises,
// QEMU fails fast on the kernel; when it hangs, the timeout kills it.
func probeKVM(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-M", "q35", "-m", "64",
		"-display", "none", "-nodefaults", "-no-reboot", "-serial", "none",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", "/dev/null")
	out, err := cmd.CombinedOutput()
	return ctx.Err() == nil && (err == nil || !strings.Contains(string(out), "kvm"))
}
