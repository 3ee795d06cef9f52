package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Firmware paths of Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Config describes one VM.
type Config struct {
	Name string
	// Dir holds the VM's overlay, firmware variables and console log.
	Dir string
	// Image boots through OVMF from a copy-on-write overlay of this disk image.
	Image string
	// Kernel/Initrd/Append boot directly instead (faster; no UEFI).
	Kernel, Initrd, Append string
	MemoryMB               int
	CPUs                   int
	// DataDisks adds this many blank virtio disks of DataDiskSize bytes.
	DataDisks    int
	DataDiskSize int64
	// Interactive connects the serial console to this terminal instead of a log.
	Interactive bool
	Extra       []string
}

// VM is a running QEMU.
type VM struct {
	Name    string
	Console *Console
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Start boots a VM. Stop it with Stop; a cancelled ctx also kills it.
func Start(ctx context.Context, c Config) (*VM, error) {
	if c.Name == "" {
		c.Name = "vm"
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 1024
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	args := []string{
		"-name", c.Name, "-accel", Accel(), "-machine", "q35", "-cpu", "max",
		"-m", strconv.Itoa(c.MemoryMB), "-smp", strconv.Itoa(c.CPUs),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-device", "i6300esb", "-action", "watchdog=reset",
	}
	if c.Image != "" {
		overlay := filepath.Join(c.Dir, c.Name+"-boot.qcow2")
		abs, err := filepath.Abs(c.Image)
		if err != nil {
			return nil, err
		}
		if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", abs, overlay).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("qemu: overlay of %s: %v: %s", c.Image, err, out)
		}
		vars := filepath.Join(c.Dir, c.Name+"-OVMF_VARS.fd")
		if err := copyFile(OVMFVars, vars); err != nil {
			return nil, fmt.Errorf("qemu: OVMF (apt-get install ovmf): %w", err)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,file="+vars,
			"-drive", "if=none,id=boot,format=qcow2,file="+overlay,
			"-device", "virtio-blk-pci,drive=boot,serial=tandem-boot,bootindex=0")
	} else {
		args = append(args, "-kernel", c.Kernel, "-initrd", c.Initrd, "-append", c.Append)
	}
	for i := 0; i < c.DataDisks; i++ {
		p := filepath.Join(c.Dir, fmt.Sprintf("%s-data%d.raw", c.Name, i))
		if err := os.Truncate(p, c.DataDiskSize); err != nil {
			f, cerr := os.Create(p)
			if cerr != nil {
				return nil, fmt.Errorf("qemu: data disk: %w", cerr)
			}
			f.Close()
			if err := os.Truncate(p, c.DataDiskSize); err != nil {
				return nil, fmt.Errorf("qemu: data disk: %w", err)
			}
		}
		id := fmt.Sprintf("data%d", i)
		args = append(args, "-drive", "if=none,format=raw,id="+id+",file="+p,
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,serial=%s-%s", id, c.Name, id))
	}
	vm := &VM{Name: c.Name, done: make(chan struct{})}
	if c.Interactive {
		args = append(args, "-serial", "mon:stdio")
	} else {
		con, err := newConsole(filepath.Join(c.Dir, c.Name+"-console.log"))
		if err != nil {
			return nil, err
		}
		vm.Console = con
		args = append(args, "-serial", "stdio", "-monitor", "none")
	}
	args = append(args, c.Extra...)
	cmd := exec.Command("qemu-system-x86_64", args...)
	// Own process group, and die with the parent: no QEMU outlives its test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !c.Interactive, Pdeathsig: syscall.SIGKILL}
	if c.Interactive {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = vm.Console, vm.Console
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm.cmd = cmd
	go func() {
		vm.err = cmd.Wait()
		if vm.Console != nil {
			vm.Console.closeWith(fmt.Errorf("qemu %s exited: %v", c.Name, vm.err))
		}
		close(vm.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			vm.Kill()
		case <-vm.done:
		}
	}()
	return vm, nil
}

// Wait blocks until QEMU exits.
func (vm *VM) Wait() error { <-vm.done; return vm.err }

// Kill stops QEMU at once (a power pull) and waits for it.
func (vm *VM) Kill() {
	if vm.cmd != nil && vm.cmd.Process != nil {
		_ = vm.cmd.Process.Kill()
	}
	select {
	case <-vm.done:
	case <-time.After(10 * time.Second):
	}
}

// Exited reports whether QEMU has exited.
func (vm *VM) Exited() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
