package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"tandem.dev/tandem/internal/labagent"
	"tandem.dev/tandem/qemu"
)

const labUsage = `usage:
  tandem lab node|pair|full [--image out/tandem.img] [--site site.toml | --unconfigured] [--name NAME] [--uefi] [--host-nic]
      (full also sets the client up: its address, the witness, and prints the NFS mount;
      --host-nic gives the host a port on the management segment, in the lab's own
      network namespace: root only; --unconfigured boots heads with no site config,
      a DHCP server and the host port, and prints each head's pairing wizard: its
      127.0.0.1 URL, setup code and certificate fingerprint)
  tandem lab forward [--lab NAME] VM|ADDR[:PORT]
      print a 127.0.0.1 address that reaches VM's (or ADDR's) PORT (default 443)
      on the management segment, while the lab runs (needs --host-nic)
  tandem lab exec [--lab NAME] [--timeout 5m] VM -- COMMAND [ARG...]
  tandem lab fault [--lab NAME] VM link NETDEV off|on
  tandem lab fault [--lab NAME] VM kill|poweron|reset|powerdown
  tandem lab fault [--lab NAME] VM remove-disk data0..data3
  tandem lab list`

// runLab boots a QEMU lab, or acts on a running one through the state
// file in its dir (see labsRoot).
func runLab(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{errors.New(labUsage)}
	}
	switch args[0] {
	case string(qemu.Node), string(qemu.Pair), string(qemu.Full):
		return labUp(ctx, qemu.Topology(args[0]), args[1:])
	case "lab": // an alias of full
		return labUp(ctx, qemu.Full, args[1:])
	case "exec":
		return labExec(ctx, args[1:])
	case "fault":
		return labFault(ctx, args[1:])
	case "forward":
		return labForward(ctx, args[1:])
	case "list", "ls":
		return labList()
	}
	return usageError{fmt.Errorf("unknown lab command %q\n%s", args[0], labUsage)}
}

// labsRoot is the well-known place of running labs: one dir per lab,
// with its sockets, consoles and lab.json.
func labsRoot() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tandem-lab")
	}
	name := fmt.Sprint(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return filepath.Join(os.TempDir(), "tandem-lab-"+name)
}

// labOptions are tandem lab node|pair|full's flags.
type labOptions struct {
	image, sitePath, name                string
	uefi, hostNIC, unconfigured, verbose bool
	mem                                  int
}

// parseLabFlags reads and checks the flags; euid is the caller's, since
// --unconfigured needs root for its host port.
func parseLabFlags(topo qemu.Topology, args []string, euid int) (labOptions, error) {
	var o labOptions
	fs := flag.NewFlagSet("lab "+string(topo), flag.ContinueOnError)
	fs.StringVar(&o.image, "image", "out/tandem.img", "the image to boot (tandem build)")
	fs.StringVar(&o.sitePath, "site", "", "put this site.toml on every VM's TANDEM-CFG partition")
	fs.StringVar(&o.name, "name", string(topo), "lab name, to run several labs side by side")
	fs.BoolVar(&o.uefi, "uefi", false, "boot through OVMF instead of a direct kernel boot (slower)")
	fs.IntVar(&o.mem, "m", 1024, "memory per head in MiB")
	fs.BoolVar(&o.hostNIC, "host-nic", false, "give the host a port on the management segment for tandem lab forward (root only)")
	fs.BoolVar(&o.unconfigured, "unconfigured", false, "boot the heads with no site config, a DHCP server on the management segment and the host port; print each head's pairing wizard (root only)")
	fs.BoolVar(&o.verbose, "v", false, "log QEMU command lines")
	if err := fs.Parse(args); err != nil {
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if o.unconfigured {
		if o.sitePath != "" {
			return o, usageError{errors.New("--unconfigured boots heads with no site config: drop --site (or drop --unconfigured)")}
		}
		if euid != 0 {
			return o, errors.New("--unconfigured needs root: the host reaches the heads' wizards through a port on the management segment in the lab's own network namespace (--host-nic); run it as root, e.g. with sudo")
		}
		o.hostNIC = true
	}
	return o, nil
}

func labUp(ctx context.Context, topo qemu.Topology, args []string) error {
	o, err := parseLabFlags(topo, args, os.Geteuid())
	if err != nil {
		return err
	}
	var site []byte
	if o.sitePath != "" {
		if site, err = os.ReadFile(o.sitePath); err != nil {
			return err
		}
	}
	var client qemu.ClientPlan
	if topo == qemu.Full {
		if client, err = qemu.PlanClient(site); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(labsRoot(), 0o700); err != nil {
		return err
	}
	dir := filepath.Join(labsRoot(), o.name)
	if st, err := qemu.ReadLabState(dir); err == nil && alive(st.PID) {
		return fmt.Errorf("lab %q is already running (pid %d); stop it or pick another --name", o.name, st.PID)
	}
	if err := os.RemoveAll(dir); err != nil { // a stale lab's leftovers
		return err
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	start := time.Now()
	var dhcp *qemu.DHCPConfig
	if o.unconfigured {
		// The heads take their management address by DHCP, as on a
		// customer's network; the pool avoids the client and the host port.
		c := qemu.WizardDHCP()
		dhcp = &c
	}
	lab, err := qemu.NewLab(ctx, qemu.LabConfig{
		Image: o.image, Topology: topo, Dir: dir, UEFI: o.uefi, SiteTOML: site, MemoryMB: o.mem, HostNIC: o.hostNIC, DHCP: dhcp, Log: log,
	})
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer os.RemoveAll(dir)
	defer lab.Close()
	printLab(os.Stdout, lab, o.name)
	var wiz *wizardPrinter
	if o.unconfigured {
		wiz = &wizardPrinter{lab: lab, out: os.Stdout, heads: map[string]bool{}, full: topo == qemu.Full}
		for _, vm := range lab.State().VMs {
			wiz.heads[vm.Name] = vm.Role == "head"
		}
		fmt.Printf("unconfigured: the heads boot with no site config and take an address by DHCP (pool %s-%s); each one's wizard is printed below once its console shows it\n",
			dhcp.PoolFirst, dhcp.PoolLast)
	}
	if topo == qemu.Full {
		go setUpClient(ctx, lab, client, labFlag(lab, o.name))
	}

	follow := func(vm *qemu.VM, since time.Time) {
		if wiz != nil && wiz.heads[vm.Name] {
			go wiz.watch(ctx, vm)
		}
		go func() {
			if _, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: early boot done`)); err == nil {
				fmt.Printf("%s: early boot done after %.1fs\n", vm.Name, time.Since(since).Seconds())
			}
		}()
		go func() {
			if _, err := vm.Console.WaitFor(ctx, regexp.MustCompile(`tandem: role: active after`)); err == nil {
				fmt.Printf("%s: active after %.1fs: it serves the VIP\n", vm.Name, time.Since(since).Seconds())
			}
		}()
		go func() {
			<-vm.Done()
			if ctx.Err() == nil {
				fmt.Printf("%s: QEMU exited: %v (console %s); tandem lab fault %s poweron starts it again\n", vm.Name, vm.Wait(), vm.Console.Path(), vm.Name)
			}
		}()
	}
	for _, vm := range lab.VMs {
		follow(vm, start)
	}
	go lab.ServePowerOn(ctx, func(name string, vm *qemu.VM, err error) {
		if err != nil {
			fmt.Printf("%s: power on: %v\n", name, err)
			return
		}
		fmt.Printf("%s: powered on\n", name)
		follow(vm, time.Now())
	})
	if o.hostNIC {
		go lab.ServeForwards(ctx, func(target, addr string, err error) {
			if err != nil {
				fmt.Printf("forward %s: %v\n", target, err)
				return
			}
			fmt.Printf("forward %s: %s\n", target, addr)
		})
	}
	<-ctx.Done()
	fmt.Println("\nstopping the lab")
	return nil
}

func printLab(w io.Writer, lab *qemu.Lab, name string) {
	st := lab.State()
	fmt.Fprintf(w, "lab %q: %s, accelerator %s, dir %s\n", name, st.Topology, qemu.Accel(), st.Dir)
	for _, vm := range st.VMs {
		fmt.Fprintf(w, "  %-7s %s\n", vm.Name, vm.Role)
		fmt.Fprintf(w, "          console  tail -f %s\n", vm.Console)
		var nics []string
		for _, n := range vm.NICs {
			nics = append(nics, n.ID+" "+n.MAC)
		}
		fmt.Fprintf(w, "          nics     %s\n", strings.Join(nics, ", "))
		if len(vm.Disks) > 0 {
			fmt.Fprintf(w, "          disks    %s (serials %s-data0...)\n", strings.Join(vm.Disks, " "), vm.Name)
		}
	}
	if st.Witness != "" {
		fmt.Fprintf(w, "  witness runs on %s\n", st.Witness)
	}
	lf := labFlag(lab, name)
	first := st.VMs[0]
	var netdevs []string
	for _, n := range first.NICs {
		netdevs = append(netdevs, n.ID)
	}
	fmt.Fprintf(w, "run a command:  tandem lab exec%s %s -- busybox uname -a   (the image has busybox, ip, ping; no shell links)\n", lf, first.Name)
	fmt.Fprintf(w, "faults:         tandem lab fault%s %s link %s off|on   (netdevs: %s)\n", lf, first.Name, netdevs[len(netdevs)-1], strings.Join(netdevs, " "))
	fmt.Fprintf(w, "                tandem lab fault%s %s kill|poweron|reset|powerdown|remove-disk data3\n", lf, first.Name)
	if st.HostNIC != "" {
		fmt.Fprintf(w, "web pages:      tandem lab forward%s %s:443   (prints a 127.0.0.1 address; the host port is %s in the lab's own namespace)\n", lf, first.Name, st.HostNIC)
	}
	fmt.Fprintln(w, "stop:           Ctrl-C (stops every VM and removes the lab dir)")
}

// labFlag is the --lab of the lab's commands: none for a lab named as
// its topology.
func labFlag(lab *qemu.Lab, name string) string {
	if name == string(lab.Topology) {
		return ""
	}
	return " --lab " + qemu.ShellJoin([]string{name})
}

// setUpClient readies the full lab's client as the HA scenarios do
// (qemu.Lab.SetUpClient) and prints the command that mounts the export.
func setUpClient(ctx context.Context, lab *qemu.Lab, p qemu.ClientPlan, lf string) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// Leave the client's agent to tandem lab exec.
	defer lab.VM("client").ReleaseAgent()
	if err := lab.SetUpClient(sctx, p); err != nil {
		if ctx.Err() == nil {
			fmt.Printf("client: not set up: %v\n", err)
		}
		return
	}
	fmt.Printf("client: %s up on the service network after %.1fs", p.Addr, time.Since(start).Seconds())
	if p.Witness != nil {
		fmt.Printf("; the witness serves there (log %s)", qemu.WitnessLog)
	}
	fmt.Println()
	if m := p.MountNFSv3("/mnt"); m != nil {
		fmt.Printf("mount the export through the VIP once a head is active:\n  tandem lab exec%s client -- %s\n", lf, qemu.ShellJoin(m))
		fmt.Printf("  tandem lab exec%s client -- tandem workload --dir /mnt --duration 60s\n", lf)
	}
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// findLab returns the state of the named lab, or of the only running one.
func findLab(name string) (*qemu.LabState, error) {
	if name != "" {
		st, err := qemu.ReadLabState(filepath.Join(labsRoot(), name))
		if err != nil || !alive(st.PID) {
			return nil, fmt.Errorf("no lab %q is running (see tandem lab list)", name)
		}
		return st, nil
	}
	labs := runningLabs()
	switch len(labs) {
	case 0:
		return nil, errors.New("no lab is running; start one with: tandem lab pair")
	case 1:
		return labs[0], nil
	}
	var names []string
	for _, l := range labs {
		names = append(names, l.Name)
	}
	return nil, fmt.Errorf("several labs are running (%s): pick one with --lab", strings.Join(names, ", "))
}

func runningLabs() []*qemu.LabState {
	entries, _ := os.ReadDir(labsRoot())
	var labs []*qemu.LabState
	for _, e := range entries {
		if st, err := qemu.ReadLabState(filepath.Join(labsRoot(), e.Name())); err == nil && alive(st.PID) {
			labs = append(labs, st)
		}
	}
	sort.Slice(labs, func(i, j int) bool { return labs[i].Name < labs[j].Name })
	return labs
}

func findVM(st *qemu.LabState, name string) (*qemu.VMState, error) {
	var names []string
	for i := range st.VMs {
		if st.VMs[i].Name == name {
			return &st.VMs[i], nil
		}
		names = append(names, st.VMs[i].Name)
	}
	return nil, fmt.Errorf("lab %s has no VM %q (%s)", st.Name, name, strings.Join(names, ", "))
}

func labList() error {
	labs := runningLabs()
	if len(labs) == 0 {
		fmt.Println("no lab is running")
		return nil
	}
	for _, st := range labs {
		var vms []string
		for _, vm := range st.VMs {
			state := "down"
			if alive(vm.PID) {
				state = "up"
			}
			vms = append(vms, vm.Name+" "+state)
		}
		fmt.Printf("%-8s %-5s pid %-7d since %s  %s  (%s)\n", st.Name, st.Topology, st.PID,
			st.Started.Format(time.TimeOnly), strings.Join(vms, ", "), st.Dir)
	}
	return nil
}

// labExec runs a command in a guest through the agent and exits with its
// exit status.
func labExec(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab exec", flag.ContinueOnError)
	labName := fs.String("lab", "", "lab name (default: the only running lab)")
	timeout := fs.Duration("timeout", labagent.DefaultTimeout, "kill the command after this long")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return usageError{errors.New("usage: tandem lab exec [--lab NAME] VM -- COMMAND [ARG...]")}
	}
	vmName, argv := rest[0], rest[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError{errors.New("no command to run")}
	}
	st, err := findLab(*labName)
	if err != nil {
		return err
	}
	vm, err := findVM(st, vmName)
	if err != nil {
		return err
	}
	req := labagent.Request{Argv: argv, Timeout: *timeout}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		if req.Stdin, err = io.ReadAll(os.Stdin); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+10*time.Second)
	defer cancel()
	c := labagent.NewClient(vm.Agent)
	defer c.Close()
	res, err := c.Do(ctx, req)
	os.Stdout.Write(res.Stdout)
	os.Stderr.Write(res.Stderr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w (is the agent running in %s? tail %s)", err, vm.Name, vm.Console)
		}
		return err
	}
	if res.Exit != 0 {
		os.Exit(res.Exit & 0xff)
	}
	return nil
}

// labForward asks the lab's process for a loopback port to a VM's web
// page (the host has no other way onto the segment) and prints it.
func labForward(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab forward", flag.ContinueOnError)
	labName := fs.String("lab", "", "lab name (default: the only running lab)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("usage: tandem lab forward [--lab NAME] VM|ADDR[:PORT]")}
	}
	st, err := findLab(*labName)
	if err != nil {
		return err
	}
	if st.HostNIC == "" {
		return fmt.Errorf("lab %s has no host port: start it with --host-nic (as root)", st.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr, to, err := qemu.RequestForward(ctx, st.Dir, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s reaches %s on the management segment until the lab stops\n", addr, to)
	fmt.Println(addr)
	return nil
}

// labPowerOn asks the lab's process to start a VM that quit again, and
// waits until it runs.
func labPowerOn(ctx context.Context, st *qemu.LabState, vm *qemu.VMState) error {
	if alive(vm.PID) {
		return fmt.Errorf("%s is running; power it off first (tandem lab fault %s kill)", vm.Name, vm.Name)
	}
	if err := qemu.RequestPowerOn(st.Dir, vm.Name); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if now, err := qemu.ReadLabState(st.Dir); err == nil {
			if nvm, err := findVM(now, vm.Name); err == nil && nvm.PID != vm.PID && alive(nvm.PID) {
				fmt.Printf("%s: poweron: done (pid %d)\n", vm.Name, nvm.PID)
				return nil
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("%s: the lab's process (pid %d) did not power it on within 30 s", vm.Name, st.PID)
}

// labFault injects a fault through the VM's control QMP socket.
func labFault(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab fault", flag.ContinueOnError)
	labName := fs.String("lab", "", "lab name (default: the only running lab)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return usageError{errors.New(labUsage)}
	}
	st, err := findLab(*labName)
	if err != nil {
		return err
	}
	vm, err := findVM(st, rest[0])
	if err != nil {
		return err
	}
	if len(rest) == 2 && rest[1] == "poweron" {
		return labPowerOn(ctx, st, vm)
	}
	if !alive(vm.PID) {
		return fmt.Errorf("%s is not running (tandem lab fault %s poweron starts it again)", vm.Name, vm.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q, err := qemu.DialQMP(ctx, vm.QMP)
	if err != nil {
		return err
	}
	defer q.Close()
	what, params := rest[1], rest[2:]
	switch {
	case what == "link" && len(params) == 2 && (params[1] == "on" || params[1] == "off"):
		err = q.SetLink(ctx, params[0], params[1] == "on")
	case what == "kill" && len(params) == 0:
		err = q.Quit(ctx)
	case what == "reset" && len(params) == 0:
		err = q.Reset(ctx, false) // lab VMs run without -no-reboot
	case what == "powerdown" && len(params) == 0:
		err = q.Powerdown(ctx)
	case what == "remove-disk" && len(params) == 1:
		since := time.Now()
		if err = q.DeviceDel(ctx, params[0]); err == nil {
			_, err = q.WaitEvent(ctx, "DEVICE_DELETED", since, nil)
		}
	default:
		return usageError{fmt.Errorf("bad fault %q\n%s", strings.Join(rest[1:], " "), labUsage)}
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s: done\n", vm.Name, strings.Join(rest[1:], " "))
	return nil
}
