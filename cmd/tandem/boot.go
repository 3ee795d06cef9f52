package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"tandem.dev/tandem/qemu"
)

// runBoot boots one image in QEMU with its serial console on this terminal.
func runBoot(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("boot", flag.ContinueOnError)
	mem := fs.Int("m", 1024, "guest memory in MiB")
	disks := fs.Int("disks", 4, "blank data disks to attach")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{fmt.Errorf("usage: tandem boot [flags] IMAGE")}
	}
	dir, err := os.MkdirTemp("", "tandem-boot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "boot: %s via OVMF, accelerator %s, %d data disks (work dir %s)\n", fs.Arg(0), qemu.Accel(), *disks, dir)
	fmt.Fprintln(os.Stderr, "boot: the serial console follows; quit QEMU with Ctrl-A then X")
	vm, err := qemu.Start(ctx, qemu.Config{
		Name: "tandem", Dir: dir, Image: fs.Arg(0), MemoryMB: *mem,
		DataDisks: *disks, DataDiskSize: 1 << 30, Interactive: true,
	})
	if err != nil {
		return err
	}
	return vm.Wait()
}
