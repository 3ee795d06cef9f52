package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Topology names a lab layout.
type Topology string

const (
	// Node is one head: 4 data disks, a management NIC, and two
	// replication links whose far ends nobody holds (the bond only needs
	// their carrier to come up).
	Node Topology = "node"
	// Pair is two heads, each with 4 data disks, a management NIC on the
	// shared segment, and two replication links to the other head.
	Pair Topology = "pair"
	// Full is the pair plus a client VM on the shared segment, which also
	// hosts the witness (see Lab.Witness).
	Full Topology = "full"
)

// LabChannel is the virtio-serial port name of the guest agent; it must
// match the qemu-x86_64 board's lab_channel.
const LabChannel = "org.tandem.lab.0"

// StateFile is the lab's description in its Dir, for `tandem lab exec`
// and `tandem lab fault` in other processes.
const StateFile = "lab.json"

// LabConfig describes a lab.
type LabConfig struct {
	Image    string
	Topology Topology
	// Dir holds everything of the lab; "" makes a temp dir that Close removes.
	Dir string
	// UEFI boots through OVMF (proves the flashable path; ≈ 5 s slower
	// under TCG) instead of a direct PVH boot of the image's slot-a kernel.
	UEFI bool
	// SiteTOML, when set, lands on every VM's TANDEM-CFG partition.
	SiteTOML     []byte
	MemoryMB     int   // per head; default 1024
	DataDiskSize int64 // default 256 MiB
	// DHCP, when set, runs a DHCP server in the hub, on the management
	// segment only (see DHCPServer); Lab.Hub.DHCP() has its lease log.
	DHCP *DHCPConfig
	// HostNIC gives the host a port on the management segment, inside a
	// network namespace of the lab process's own (see hostnic.go): the
	// only way the host reaches a VM's web page (Lab.Forward). It needs
	// root and /dev/net/tun; without them NewLab fails.
	HostNIC bool
	// HostAddr is the host port's address; default: the segment's
	// second-to-last address (10.0.0.253/24 in the default subnet), a
	// fixed one because the DHCP pool, the site's heads and the VIP must
	// not own it (NewLab refuses a clash).
	HostAddr netip.Prefix
	Log      *slog.Logger
}

// Lab is a running topology. Everything in it stops on Close, on the
// cancellation of NewLab's ctx, or (QEMU) when this process dies.
type Lab struct {
	Dir      string
	Topology Topology
	VMs      []*VM
	Hub      *Hub
	// Witness says where the tiebreaker runs. In Full it is the client VM:
	// a third host on the shared segment whose failures are independent
	// of either head's; no host-side process is reachable from guests
	// without a host network, which the lab does not have.
	Witness string

	ctx       context.Context // NewLab's: PowerOn's VMs live as long as the first ones
	mu        sync.Mutex      // VMs and state, which PowerOn changes
	state     LabState
	ports     *PortBlock
	host      *segNS // the host port, nil without HostNIC
	siteTOML  []byte // for MgmtAddr
	closed    bool   // under mu: the state file is gone for good
	removeDir bool
	log       *slog.Logger
	closeOnce sync.Once
}

// LabState is what StateFile holds.
type LabState struct {
	Name     string    `json:"name"`
	Topology Topology  `json:"topology"`
	PID      int       `json:"pid"` // the process that runs the lab (and its hub)
	Dir      string    `json:"dir"`
	Image    string    `json:"image"`
	Hub      string    `json:"hub"`
	Witness  string    `json:"witness,omitempty"`
	Started  time.Time `json:"started"`
	VMs      []VMState `json:"vms"`
	// HostNIC is the host port's address on the management segment
	// (LabConfig.HostNIC); "" when the lab has none.
	HostNIC string `json:"host_nic,omitempty"`
	// Forwards are the loopback ports that reach the segment (Lab.Forward).
	Forwards []ForwardState `json:"forwards,omitempty"`
}

// ForwardState is one of Lab.Forward's ports.
type ForwardState struct {
	Addr string `json:"addr"` // 127.0.0.1:port
	To   string `json:"to"`   // address:port on the segment
}

// VMState describes one VM of a lab.
type VMState struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	PID     int    `json:"pid"`
	Console string `json:"console"`
	// QMP is the control socket (the lab process holds the other one).
	QMP   string   `json:"qmp"`
	Agent string   `json:"agent"`
	NICs  []NIC    `json:"nics"`
	Disks []string `json:"disks"`
}

// labVM is one VM of a topology. MACs are 52:54:00:1a:<vm>:<nic>, so a
// head's NICs are the same in every lab run.
type labVM struct {
	name, role string
	macVM      byte
	mem        int
	disks      int
	reps       bool
}

func plan(t Topology) ([]labVM, error) {
	headA := labVM{name: "head-a", role: "head", macVM: 0x0a, disks: 4}
	headB := labVM{name: "head-b", role: "head", macVM: 0x0b, disks: 4}
	client := labVM{name: "client", role: "client, witness", macVM: 0x0c, mem: 768, disks: 1} // a local scratch disk for the workload tool
	switch t {
	case Node:
		return []labVM{headA}, nil
	case Pair:
		headA.reps, headB.reps = true, true
		return []labVM{headA, headB}, nil
	case Full:
		headA.reps, headB.reps = true, true
		return []labVM{headA, headB, client}, nil
	}
	return nil, fmt.Errorf("qemu: unknown topology %q (node, pair, full)", t)
}

var (
	liveLabsMu sync.Mutex
	liveLabs   = map[*Lab]bool{}
)

// NewLab boots a topology. It returns once every QEMU runs (not booted:
// wait with WaitAll).
func NewLab(ctx context.Context, c LabConfig) (_ *Lab, err error) {
	vms, err := plan(c.Topology)
	if err != nil {
		return nil, err
	}
	if c.Image == "" {
		return nil, errors.New("qemu: lab: no image")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 1024
	}
	if c.DataDiskSize == 0 {
		c.DataDiskSize = 256 << 20
	}
	l := &Lab{Topology: c.Topology, log: c.Log, ctx: ctx, siteTOML: c.SiteTOML}
	if c.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", "tandem-lab-"); err != nil {
			return nil, fmt.Errorf("qemu: lab: %w", err)
		}
		l.removeDir = true
	} else {
		if l.Dir, err = filepath.Abs(c.Dir); err != nil {
			return nil, fmt.Errorf("qemu: lab: %w", err)
		}
		if err := os.MkdirAll(l.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("qemu: lab: %w", err)
		}
	}
	defer func() {
		if err != nil { // the returns name nil, not l
			l.Close()
		}
	}()
	if l.ports, err = ReservePorts(); err != nil {
		return nil, err
	}
	image, err := filepath.Abs(c.Image)
	if err != nil {
		return nil, fmt.Errorf("qemu: lab: %w", err)
	}
	var boot DirectBoot
	if !c.UEFI {
		if boot, err = ExtractBoot(image, "a", l.Dir, ""); err != nil {
			return nil, err
		}
	}

	// Wiring: every VM's mgmt NIC talks to the hub; rep0/rep1 are direct
	// UDP links between the heads, one port at each end.
	hubPort, _ := l.ports.Next()
	members := map[string]int{}
	nics := map[string][]NIC{}
	for _, v := range vms {
		p, err := l.ports.Next()
		if err != nil {
			return nil, err
		}
		members[v.name] = p
		nics[v.name] = append(nics[v.name], NIC{ID: "mgmt", MAC: mac(v.macVM, 0),
			Backend: fmt.Sprintf("socket,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", hubPort, p)})
	}
	if c.Topology == Node {
		// Loose ends: ports of the lab's block that no one listens on.
		v := vms[0]
		for k := 0; k < 2; k++ {
			local, _ := l.ports.Next()
			remote, err := l.ports.Next()
			if err != nil {
				return nil, err
			}
			nics[v.name] = append(nics[v.name], NIC{ID: fmt.Sprintf("rep%d", k), MAC: mac(v.macVM, byte(k+1)),
				Backend: fmt.Sprintf("socket,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", remote, local)})
		}
	} else {
		a, b := vms[0], vms[1]
		for k := 0; k < 2; k++ {
			pa, _ := l.ports.Next()
			pb, err := l.ports.Next()
			if err != nil {
				return nil, err
			}
			id := fmt.Sprintf("rep%d", k)
			nics[a.name] = append(nics[a.name], NIC{ID: id, MAC: mac(a.macVM, byte(k+1)),
				Backend: fmt.Sprintf("socket,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", pb, pa)})
			nics[b.name] = append(nics[b.name], NIC{ID: id, MAC: mac(b.macVM, byte(k+1)),
				Backend: fmt.Sprintf("socket,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", pa, pb)})
		}
	}
	hostPort := 0
	if c.HostNIC {
		if hostPort, err = l.ports.Next(); err != nil {
			return nil, err
		}
		members[HostMember] = hostPort
	}
	if l.Hub, err = NewHub(hubPort, members, c.Log.With("hub", hubPort)); err != nil {
		return nil, err
	}
	if c.DHCP != nil {
		srv, err := NewDHCPServer(*c.DHCP, c.Log.With("hub", hubPort))
		if err != nil {
			return nil, err
		}
		l.Hub.SetDHCP(srv)
	}
	if c.HostNIC {
		addr, err := hostNICAddr(c.HostAddr, l.Hub.DHCP(), c.SiteTOML)
		if err != nil {
			return nil, err
		}
		if l.host, err = newSegNS(HostMember, l.Hub.Addr(), hostPort, hostNICMAC, addr, c.Log.With("hub", hubPort)); err != nil {
			return nil, fmt.Errorf("%w (LabConfig.HostNIC needs root and /dev/net/tun)", err)
		}
	}
	go l.Hub.Run(ctx)
	if c.Topology == Full {
		l.Witness = "client"
	}

	l.state = LabState{Name: filepath.Base(l.Dir), Topology: c.Topology, PID: os.Getpid(), Dir: l.Dir,
		Image: image, Hub: l.Hub.Addr().String(), Witness: l.Witness, Started: time.Now()}
	if l.host != nil {
		l.state.HostNIC = l.host.addr.String()
	}
	for _, v := range vms {
		mem := c.MemoryMB
		if v.mem != 0 {
			mem = v.mem
		}
		vm, err := Start(ctx, Config{
			Name: v.name, Dir: l.Dir, Image: image,
			Kernel: boot.Kernel, Initrd: boot.Initrd, Append: boot.Append,
			// Init takes a system serial equal to a site config node name
			// as its identity: the same in UEFI and direct boots.
			Extra:    []string{"-smbios", "type=1,serial=" + v.name},
			MemoryMB: mem, DataDisks: v.disks, DataDiskSize: c.DataDiskSize,
			NICs: nics[v.name], AgentChannel: LabChannel, Reboot: true,
			SiteTOML: c.SiteTOML, Log: c.Log,
		})
		if err != nil {
			return nil, fmt.Errorf("qemu: lab %s: %w", c.Topology, err)
		}
		l.VMs = append(l.VMs, vm)
		vs := VMState{Name: v.name, Role: v.role, PID: vm.PID(), Console: vm.Console.Path(),
			QMP: vm.ControlSocket, Agent: vm.AgentSocket, NICs: nics[v.name]}
		for d := 0; d < v.disks; d++ {
			vs.Disks = append(vs.Disks, fmt.Sprintf("data%d", d))
		}
		l.state.VMs = append(l.state.VMs, vs)
	}
	if err := writeAtomic(filepath.Join(l.Dir, StateFile), must(json.MarshalIndent(l.state, "", "  "))); err != nil {
		return nil, fmt.Errorf("qemu: lab state: %w", err)
	}
	liveLabsMu.Lock()
	liveLabs[l] = true
	liveLabsMu.Unlock()
	context.AfterFunc(ctx, func() { l.Close() })
	c.Log.Info("lab started", "topology", c.Topology, "dir", l.Dir, "ports", fmt.Sprintf("%d-%d", l.ports.Base, l.ports.Base+blockSize-1), "pvh", boot.PVH)
	return l, nil
}

func mac(vm, nic byte) string { return fmt.Sprintf("52:54:00:1a:%02x:%02x", vm, nic) }

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err) // marshalling our own plain struct cannot fail
	}
	return b
}

// VM returns the VM named name (head-a, head-b, client), or nil. After
// PowerOn it is the new QEMU.
func (l *Lab) VM(name string) *VM {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, vm := range l.VMs {
		if vm.Name == name {
			return vm
		}
	}
	return nil
}

// vms is a snapshot of l.VMs.
func (l *Lab) vms() []*VM {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.VMs)
}

// State is what the state file says.
func (l *Lab) State() LabState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state
	st.VMs, st.Forwards = slices.Clone(st.VMs), slices.Clone(st.Forwards) // PowerOn and Forward change them in place
	return st
}

// PowerOn boots a VM of the lab that has exited (after Quit, or a
// poweroff) again with the same disks and NICs (VM.PowerOn), and makes it
// the lab's VM of that name.
func (l *Lab) PowerOn(name string) (*VM, error) {
	old := l.VM(name)
	if old == nil {
		return nil, fmt.Errorf("qemu: lab: no VM %q", name)
	}
	vm, err := old.PowerOn(l.ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.VMs {
		if l.VMs[i] == old {
			l.VMs[i] = vm
		}
	}
	for i := range l.state.VMs {
		if l.state.VMs[i].Name == name {
			l.state.VMs[i].PID = vm.PID()
		}
	}
	return vm, l.saveStateLocked()
}

// saveStateLocked rewrites the state file; l.mu is held. A closed lab's
// file stays gone.
func (l *Lab) saveStateLocked() error {
	if l.closed || l.Dir == "" {
		return nil
	}
	if err := writeAtomic(filepath.Join(l.Dir, StateFile), must(json.MarshalIndent(l.state, "", "  "))); err != nil {
		return fmt.Errorf("qemu: lab state: %w", err)
	}
	return nil
}

// WaitAll waits until every VM's console matches re and returns how long
// each took from the start of the lab.
func (l *Lab) WaitAll(ctx context.Context, re *regexp.Regexp) (map[string]time.Duration, error) {
	var (
		mu   sync.Mutex
		took = map[string]time.Duration{}
		errs []error
		wg   sync.WaitGroup
	)
	for _, vm := range l.vms() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := vm.Console.WaitFor(ctx, re)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", vm.Name, err))
				return
			}
			took[vm.Name] = time.Since(l.state.Started)
		}()
	}
	wg.Wait()
	return took, errors.Join(errs...)
}

// FailureReport keeps every VM's whole console in dir and returns a short
// digest: where the files are, the last n error lines of each head, and
// last, each VM's QEMU command line. The digest is short so that a test's
// own failure message stays near the end of the output, where CI
// excerpts look.
func (l *Lab) FailureReport(dir string, n int) string {
	var b strings.Builder
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(&b, "cannot keep the consoles: %v\n", err)
	}
	for _, vm := range l.vms() {
		if vm.Console == nil {
			continue
		}
		text := vm.Console.Text()
		kept := filepath.Join(dir, vm.Name+".console")
		if err := os.WriteFile(kept, []byte(text), 0o644); err != nil {
			kept = vm.Console.Path()
		}
		fmt.Fprintf(&b, "--- %s: whole console in %s\n", vm.Name, kept)
		if !strings.HasPrefix(vm.Name, "head-") {
			continue
		}
		var errs []string
		for line := range strings.Lines(text) {
			if strings.Contains(line, "ERROR") || strings.Contains(line, "panic") {
				errs = append(errs, strings.TrimRight(line, "\r\n"))
			}
		}
		for _, e := range errs[max(len(errs)-n, 0):] {
			b.WriteString("    " + e + "\n")
		}
	}
	b.WriteString(l.commandLines())
	return b.String()
}

// commandLines renders every VM's QEMU command, one line each, to rerun a
// VM by hand. Its disks and sockets are in the lab's Dir, which Close
// removes if NewLab made it; the hub, which links the management NICs,
// is this process's.
func (l *Lab) commandLines() string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- QEMU command lines (files in %s):\n", l.Dir)
	for _, vm := range l.vms() {
		b.WriteString(vm.CommandLine() + "\n")
	}
	return b.String()
}

// Close stops every VM and the hub, frees the ports, and removes the
// lab's dir if NewLab made it. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		liveLabsMu.Lock()
		delete(liveLabs, l)
		liveLabsMu.Unlock()
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		var wg sync.WaitGroup
		for _, vm := range l.vms() {
			wg.Add(1)
			go func() { defer wg.Done(); vm.Kill() }()
		}
		wg.Wait()
		if l.host != nil {
			l.host.Close()
		}
		if l.Hub != nil {
			l.Hub.Close()
		}
		l.ports.Release()
		if l.removeDir {
			os.RemoveAll(l.Dir)
		} else if l.Dir != "" {
			os.Remove(filepath.Join(l.Dir, StateFile))
		}
	})
	return nil
}

// CloseAll closes every lab and kills every VM of this process; for
// signal handlers, so that Ctrl-C leaves no QEMU and no temp dir.
func CloseAll() {
	liveLabsMu.Lock()
	labs := make([]*Lab, 0, len(liveLabs))
	for l := range liveLabs {
		labs = append(labs, l)
	}
	liveLabsMu.Unlock()
	for _, l := range labs {
		l.Close()
	}
	KillAll()
}

// ReadLabState reads the state file of the lab in dir.
func ReadLabState(dir string) (*LabState, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("qemu: lab state: %w", err)
	}
	var s LabState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("qemu: lab state %s: %w", dir, err)
	}
	return &s, nil
}

// powerOnRequest is the file another process (tandem lab fault VM
// poweron) creates in a lab's Dir to have the lab's own process, which
// alone can start its QEMUs, power a VM on again.
func powerOnRequest(dir, vm string) string { return filepath.Join(dir, "poweron-"+vm) }

// RequestPowerOn asks the process that runs the lab in dir to power vm
// on again (see ServePowerOn).
func RequestPowerOn(dir, vm string) error {
	return writeAtomic(powerOnRequest(dir, vm), []byte(time.Now().Format(time.RFC3339Nano)+"\n"))
}

// ServePowerOn carries out RequestPowerOn's requests until ctx ends,
// calling started with each VM it starts (or the error).
func (l *Lab) ServePowerOn(ctx context.Context, started func(name string, vm *VM, err error)) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, vm := range l.vms() {
			req := powerOnRequest(l.Dir, vm.Name)
			if _, err := os.Stat(req); err != nil {
				continue
			}
			os.Remove(req)
			nvm, err := l.PowerOn(vm.Name)
			started(vm.Name, nvm, err)
		}
	}
}
