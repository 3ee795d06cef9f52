package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tandem.dev/tandem/internal/labagent"
)

// Firmware paths of Debian's ovmf package.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// qemuBinary is the emulator every VM runs.
const qemuBinary = "qemu-system-x86_64"

// qmpTimeout bounds each fault or power command of a VM: QMP answers in
// milliseconds unless QEMU is wedged, and then a test must not hang.
const qmpTimeout = 10 * time.Second

// Config describes one VM.
type Config struct {
	Name string
	// Dir holds the VM's overlay, firmware variables, sockets and console log.
	Dir string
	// Image is the boot disk, as a copy-on-write overlay. Without Kernel it
	// boots through OVMF (the real UEFI path).
	Image string
	// Kernel/Initrd/Append boot directly instead (faster; no UEFI). With
	// Image set, the image is still the boot disk (its root slots).
	Kernel, Initrd, Append string
	MemoryMB               int
	CPUs                   int
	// DataDisks adds this many blank virtio disks of DataDiskSize bytes,
	// with device ids data0... and serials <Name>-data0..., each on its
	// own PCIe root port so that RemoveDisk can unplug it.
	DataDisks    int
	DataDiskSize int64
	// NICs are virtio-net NICs in this order (eth0, eth1...).
	NICs []NIC
	// AgentChannel, when set, adds a virtio-serial port of that name wired
	// to <Dir>/<Name>.agent for the guest agent (lab boards only).
	AgentChannel string
	// Reboot makes a guest reboot or a watchdog fire reset the VM. By
	// default QEMU exits instead, so that a panicking guest ends a test
	// at once rather than boot-looping.
	Reboot bool
	// SiteTOML, when set, is written as site.toml onto the overlay's
	// TANDEM-CFG partition (headless provisioning); needs Image.
	SiteTOML []byte
	// Interactive connects the serial console to this terminal instead of a log.
	Interactive bool
	// reuse boots the disks, firmware variables and console log of an
	// earlier Start with this Config again (PowerOn).
	reuse bool
	Extra []string
	Log   *slog.Logger
}

// NIC is one guest network card and its host-side backend.
type NIC struct {
	// ID is the netdev id (mgmt, rep0, rep1): SetLink takes it. The guest
	// device's id is "nic-"+ID.
	ID  string
	MAC string
	// Backend is the -netdev without its id, e.g.
	// "socket,udp=127.0.0.1:P2,localaddr=127.0.0.1:P1". Only socket
	// netdevs on 127.0.0.1 are accepted: the lab has no other network.
	Backend string
}

// VM is a running QEMU.
type VM struct {
	Name    string
	Dir     string
	Console *Console
	// QMPSocket is the harness's QMP connection; ControlSocket is a second
	// QMP socket for other processes (tandem lab fault); AgentSocket is
	// the guest agent's chardev ("" without AgentChannel).
	QMPSocket, ControlSocket, AgentSocket string

	cfg  Config
	argv []string // QEMU's whole command line, binary first
	log  *slog.Logger
	cmd  *exec.Cmd
	qmp  *QMP
	done chan struct{}
	err  error

	agentMu sync.Mutex
	agent   *labagent.Client
}

// maxSocketPath is sun_path's limit minus the NUL.
const maxSocketPath = 107

// live holds the running VMs so that KillAll can stop them on a signal.
var live sync.Map // *VM → struct{}

// Start boots a VM. Stop it with Kill or Quit; a cancelled ctx also kills it.
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
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Kernel == "" && c.Image == "" {
		return nil, errors.New("qemu: neither an image nor a kernel to boot")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	c.Dir = dir
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm := &VM{
		Name: c.Name, Dir: c.Dir, cfg: c, log: c.Log.With("vm", c.Name), done: make(chan struct{}),
		QMPSocket:     filepath.Join(c.Dir, c.Name+".qmp"),
		ControlSocket: filepath.Join(c.Dir, c.Name+"-ctl.qmp"),
	}
	if c.AgentChannel != "" {
		vm.AgentSocket = filepath.Join(c.Dir, c.Name+".agent")
	}
	for _, p := range []string{vm.QMPSocket, vm.ControlSocket, vm.AgentSocket} {
		if len(p) > maxSocketPath {
			return nil, fmt.Errorf("qemu: socket path %s is longer than %d bytes: use a shorter Dir", p, maxSocketPath)
		}
	}
	args, err := vm.args(ctx)
	if err != nil {
		return nil, err
	}
	if c.Interactive {
		args = append(args, "-serial", "mon:stdio")
	} else {
		con, err := newConsole(filepath.Join(c.Dir, c.Name+"-console.log"), c.reuse)
		if err != nil {
			return nil, err
		}
		vm.Console = con
		args = append(args, "-serial", "stdio", "-monitor", "none")
	}
	args = append(args, c.Extra...)
	vm.argv = append([]string{qemuBinary}, args...)
	cmd := exec.Command(qemuBinary, args...)
	// Own process group, and die with the parent: no QEMU outlives its test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !c.Interactive, Pdeathsig: syscall.SIGKILL}
	if c.Interactive {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	} else {
		cmd.Stdout, cmd.Stderr = vm.Console, vm.Console
	}
	vm.log.Debug("starting qemu", "cmd", vm.CommandLine())
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm.cmd = cmd
	live.Store(vm, struct{}{})
	go func() {
		vm.err = cmd.Wait()
		live.Delete(vm)
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

	// QEMU opens its sockets before the guest runs; if it dies first
	// (bad arguments), report its output rather than a dial timeout.
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	go func() {
		select {
		case <-vm.done:
			cancel()
		case <-dctx.Done():
		}
	}()
	q, err := DialQMP(dctx, vm.QMPSocket)
	if err != nil {
		vm.Kill()
		if vm.Console != nil {
			return nil, fmt.Errorf("qemu %s: %w\n%s\ncommand: %s", c.Name, err, vm.Console.Tail(10), vm.CommandLine())
		}
		return nil, fmt.Errorf("qemu %s: %w\ncommand: %s", c.Name, err, vm.CommandLine())
	}
	vm.qmp = q
	return vm, nil
}

// args builds QEMU's command line and prepares the disks.
func (vm *VM) args(ctx context.Context) ([]string, error) {
	c := vm.cfg
	args := []string{
		"-name", c.Name, "-accel", Accel(), "-machine", "q35", "-cpu", "max",
		"-m", strconv.Itoa(c.MemoryMB), "-smp", strconv.Itoa(c.CPUs),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-device", "i6300esb", "-action", "watchdog=reset",
		"-qmp", "unix:" + vm.QMPSocket + ",server=on,wait=off",
		"-qmp", "unix:" + vm.ControlSocket + ",server=on,wait=off",
	}
	if !c.Reboot {
		args = append(args, "-no-reboot")
	}
	if c.Image != "" {
		overlay := filepath.Join(c.Dir, c.Name+"-boot.qcow2")
		if c.reuse {
			if _, err := os.Stat(overlay); err != nil {
				return nil, fmt.Errorf("qemu %s: power on: %w", c.Name, err)
			}
		} else if err := makeOverlay(ctx, c.Image, overlay, c.SiteTOML); err != nil {
			return nil, err
		}
		dev := "virtio-blk-pci,drive=boot,serial=tandem-boot"
		if c.Kernel == "" { // -kernel's option ROM holds bootindex 0 otherwise
			dev += ",bootindex=0"
		}
		args = append(args, "-drive", "if=none,id=boot,format=qcow2,file="+overlay, "-device", dev)
	} else if c.SiteTOML != nil {
		return nil, errors.New("qemu: SiteTOML needs an Image")
	}
	if c.Kernel != "" {
		args = append(args, "-kernel", c.Kernel, "-append", c.Append)
		if c.Initrd != "" {
			args = append(args, "-initrd", c.Initrd)
		}
	} else {
		vars := filepath.Join(c.Dir, c.Name+"-OVMF_VARS.fd")
		if c.reuse {
			if _, err := os.Stat(vars); err != nil {
				return nil, fmt.Errorf("qemu %s: power on: %w", c.Name, err)
			}
		} else if err := copyFile(OVMFVars, vars); err != nil {
			return nil, fmt.Errorf("qemu: OVMF (apt-get install ovmf): %w", err)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	for _, n := range c.NICs {
		if err := checkBackend(n.Backend); err != nil {
			return nil, fmt.Errorf("qemu %s: nic %s: %w", c.Name, n.ID, err)
		}
		dev := "virtio-net-pci,netdev=" + n.ID + ",id=nic-" + n.ID
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		args = append(args, "-netdev", n.Backend+",id="+n.ID, "-device", dev)
	}
	for i := 0; i < c.DataDisks; i++ {
		p := filepath.Join(c.Dir, fmt.Sprintf("%s-data%d.raw", c.Name, i))
		if c.reuse {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("qemu %s: power on: %w", c.Name, err)
			}
		} else if err := makeSparse(p, c.DataDiskSize); err != nil {
			return nil, fmt.Errorf("qemu: data disk: %w", err)
		}
		id := fmt.Sprintf("data%d", i)
		args = append(args,
			"-device", fmt.Sprintf("pcie-root-port,id=rp-%s,chassis=%d", id, i+1),
			"-drive", "if=none,format=raw,id=drive-"+id+",file="+p,
			"-device", fmt.Sprintf("virtio-blk-pci,bus=rp-%s,drive=drive-%s,id=%s,serial=%s-%s", id, id, id, c.Name, id))
	}
	if c.AgentChannel != "" {
		args = append(args,
			"-chardev", "socket,id=lab0,path="+vm.AgentSocket+",server=on,wait=off",
			"-device", "virtio-serial-pci,id=vser0",
			"-device", "virtserialport,bus=vser0.0,chardev=lab0,id=agent,name="+c.AgentChannel)
	}
	return args, nil
}

// checkBackend enforces the network rule: socket netdevs only, and every
// address they name is 127.0.0.1.
func checkBackend(b string) error {
	kind, opts, _ := strings.Cut(b, ",")
	if kind != "socket" {
		return fmt.Errorf("netdev %q: only socket netdevs on 127.0.0.1 are allowed", b)
	}
	for _, kv := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "udp", "localaddr", "listen", "connect":
			if host, _, _ := strings.Cut(v, ":"); host != "127.0.0.1" {
				return fmt.Errorf("netdev %q: %s must be on 127.0.0.1", b, k)
			}
		case "mcast", "fd":
			return fmt.Errorf("netdev %q: %s is not allowed (not loopback-only)", b, k)
		}
	}
	return nil
}

// makeOverlay creates a qcow2 overlay of image and, if site is set, writes
// it onto the overlay's config partition.
func makeOverlay(ctx context.Context, image, overlay string, site []byte) error {
	abs, err := filepath.Abs(image)
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("qemu: image: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", abs, overlay).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu: overlay of %s: %v: %s", image, err, out)
	}
	if site != nil {
		if err := writeSite(ctx, abs, overlay, site); err != nil {
			return fmt.Errorf("qemu: site.toml: %w", err)
		}
	}
	return nil
}

func makeSparse(p string, size int64) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// CommandLine is the VM's QEMU command, quoted for a POSIX shell, so
// that a failed run can be reproduced by hand (while its Dir exists).
func (vm *VM) CommandLine() string { return ShellJoin(vm.argv) }

// ShellJoin quotes each word for a POSIX shell and joins them with
// spaces: a command line to paste.
func ShellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
		if i == 0 && q[i] == a && strings.Contains(a, "=") {
			q[i] = "'" + a + "'" // a first word NAME=value would be an assignment
		}
	}
	return strings.Join(q, " ")
}

// shellQuote leaves words of plain characters alone (QEMU options stay
// readable) and single-quotes anything else.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, shellSafe) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellSafe are the characters a POSIX shell takes literally in a word
// (but '=' in the first word: see ShellJoin).
const shellSafe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-"

// Wait blocks until QEMU exits.
func (vm *VM) Wait() error { <-vm.done; return vm.err }

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Kill stops QEMU at once with SIGKILL (a power pull) and waits for it.
func (vm *VM) Kill() {
	if vm.cmd != nil && vm.cmd.Process != nil {
		_ = vm.cmd.Process.Kill()
	}
	select {
	case <-vm.done:
	case <-time.After(10 * time.Second):
	}
	vm.closeClients()
}

func (vm *VM) closeClients() {
	if vm.qmp != nil {
		vm.qmp.Close()
	}
	vm.agentMu.Lock()
	if vm.agent != nil {
		vm.agent.Close()
	}
	vm.agentMu.Unlock()
}

// KillAll kills every VM this process started and has not seen exit; for
// signal handlers (tests on Ctrl-C).
func KillAll() {
	live.Range(func(k, _ any) bool {
		k.(*VM).Kill()
		return true
	})
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

// PID is QEMU's process id.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

func (vm *VM) qmpCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), qmpTimeout)
}

// Powerdown presses the ACPI power button; the guest decides what to do.
// When it powers off, QEMU exits and Wait returns.
func (vm *VM) Powerdown() error {
	ctx, cancel := vm.qmpCtx()
	defer cancel()
	vm.log.Info("fault: ACPI power button")
	return vm.qmp.Powerdown(ctx)
}

// Reset is the reset button: the guest reboots at once, without shutdown.
func (vm *VM) Reset() error {
	ctx, cancel := vm.qmpCtx()
	defer cancel()
	vm.log.Info("fault: reset")
	return vm.qmp.Reset(ctx, !vm.cfg.Reboot)
}

// Quit is a power pull: QEMU quits without telling the guest. It returns
// once QEMU has exited.
func (vm *VM) Quit() error {
	ctx, cancel := vm.qmpCtx()
	defer cancel()
	vm.log.Info("fault: power pull (quit)")
	if err := vm.qmp.Quit(ctx); err != nil {
		return err
	}
	select {
	case <-vm.done:
		vm.closeClients()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu %s: quit: still running after %v", vm.Name, qmpTimeout)
	}
}

// PowerOn starts a VM that has exited (a Quit, or a guest poweroff) again
// from the same disks: the boot overlay with everything the guest wrote,
// the data disks, the firmware variables. Disks unplugged with RemoveDisk
// are plugged back in, as after reseating them. The console log goes on
// in the same file; the returned VM's Console starts empty. ctx governs
// the new QEMU as Start's does.
func (vm *VM) PowerOn(ctx context.Context) (*VM, error) {
	if !vm.Exited() {
		return nil, fmt.Errorf("qemu %s: power on: still running", vm.Name)
	}
	if vm.cfg.Interactive {
		return nil, fmt.Errorf("qemu %s: power on: not for interactive VMs", vm.Name)
	}
	c := vm.cfg
	c.reuse = true
	vm.log.Info("fault: power on")
	return Start(ctx, c)
}

// SetLink cuts (up=false) or restores a NIC's link by netdev id; the
// guest sees the carrier change.
func (vm *VM) SetLink(netdevID string, up bool) error {
	ctx, cancel := vm.qmpCtx()
	defer cancel()
	vm.log.Info("fault: set link", "netdev", netdevID, "up", up)
	return vm.qmp.SetLink(ctx, netdevID, up)
}

// RemoveDisk unplugs a data disk (data0...) and waits until QEMU reports
// it gone. The guest must eject it (ACPI PCI hotplug): a guest that is
// not running Linux yet leaves it plugged, and RemoveDisk times out.
func (vm *VM) RemoveDisk(id string) error {
	ctx, cancel := vm.qmpCtx()
	defer cancel()
	vm.log.Info("fault: remove disk", "id", id)
	since := time.Now()
	if err := vm.qmp.DeviceDel(ctx, id); err != nil {
		return err
	}
	_, err := vm.qmp.WaitEvent(ctx, "DEVICE_DELETED", since, func(ev Event) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(ev.Data, &d) == nil && d.Device == id
	})
	return err
}

// Events returns the QMP events seen so far, oldest first.
func (vm *VM) Events() []Event { return vm.qmp.Events() }

// WaitEvent waits for an event named name emitted at or after since.
func (vm *VM) WaitEvent(ctx context.Context, name string, since time.Time) (Event, error) {
	return vm.qmp.WaitEvent(ctx, name, since, nil)
}

// QMP is the VM's QMP client, for commands without a method here.
func (vm *VM) QMP() *QMP { return vm.qmp }

// Agent returns a client of the guest agent; it connects on first use.
// Nil when the VM has no AgentChannel.
func (vm *VM) Agent() *labagent.Client {
	if vm.AgentSocket == "" {
		return nil
	}
	vm.agentMu.Lock()
	defer vm.agentMu.Unlock()
	if vm.agent == nil {
		vm.agent = labagent.NewClient(vm.AgentSocket)
	}
	return vm.agent
}

// ReleaseAgent drops this process's connection to the guest agent: QEMU
// serves one connection at a time, and tandem lab exec in another process
// waits for it. The next Agent call connects again.
func (vm *VM) ReleaseAgent() {
	vm.agentMu.Lock()
	defer vm.agentMu.Unlock()
	if vm.agent != nil {
		vm.agent.Close()
		vm.agent = nil
	}
}

// WaitAgentPort waits until the guest has opened the agent's port (the
// VSERPORT_CHANGE event): the agent is listening.
func (vm *VM) WaitAgentPort(ctx context.Context) error {
	if vm.AgentSocket == "" {
		return fmt.Errorf("qemu %s: no agent channel", vm.Name)
	}
	_, err := vm.qmp.WaitEvent(ctx, "VSERPORT_CHANGE", time.Time{}, func(ev Event) bool {
		var d struct {
			Open bool `json:"open"`
		}
		return json.Unmarshal(ev.Data, &d) == nil && d.Open
	})
	if err != nil {
		return fmt.Errorf("qemu %s: agent port %s never opened by the guest: %w", vm.Name, vm.cfg.AgentChannel, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
