// Package pid1 is Tandem's PID 1. A tiny main calls Main; all policy is
// here. Boot runs as lists of named steps (earlySteps, rootSteps) and then
// hands over to continueAfterRoot. PID 1 never exits: any fatal error puts
// the node into maintenance, which logs the reason and keeps reaping.
package pid1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/ha/supervisor"
	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/services/stack"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
	"tandem.dev/tandem/wizard"
)

// Boot is the state the steps share and later stages inherit.
type Boot struct {
	Start    time.Time
	Manifest *manifest.Manifest
	Cmdline  Cmdline
	Slot     string // "a" or "b"
	RootDev  string // e.g. /dev/vda2
	Log      *slog.Logger
	Level    *slog.LevelVar
	Reaper   *Reaper
	// Signals carries the signals PID 1 catches (all but SIGCHLD, which the
	// reaper takes). Idle logs them; the supervisor will act on them.
	Signals <-chan os.Signal

	// Set by the steps after the root (see after.go).
	Board      *board.Board
	Site       *site.Config
	SiteSource string // where the site config came from
	Node       string // this head's node name in the site config

	out *outputs

	// stepMu is held while a boot step runs; shutdown takes it so that it
	// starts between two steps, and stopping makes the rest skip.
	stepMu   sync.Mutex
	stopping atomic.Bool
	events   sync.Once
	shutReq  chan shutdownRequest

	// mu guards the fields below. Lock order: stepMu, then mu. mu is a
	// leaf: never held while calling the HA supervisor, a layer or I/O
	// (the supervisor calls back into Boot through host{}, which takes mu).
	mu          sync.Mutex
	state       status.State
	reason      error // set once in maintenance or unconfigured
	steps       []status.Step
	readyMS     int64
	sup         *supervise.Supervisor
	stopRun     context.CancelFunc // ends the supervisor's monitor loop
	mgmt        *network.Management
	details     map[string]func() string // per service, for status
	stack       *stack.Stack             // this head's layers, once the services run
	ha          *supervisor.Supervisor   // once the services run; it owns the role
	siteRaw     []byte                   // the site config as read, even if invalid
	mounts      []string                 // mounted after the root, unmounted in reverse
	watchdog    *watchdog
	labAgent    LabAgent       // from Options; nil: none
	lab         bool           // the lab agent runs: status says LAB IMAGE
	wizardShown wizard.Console // the block the console shows last
	wizardRan   bool           // this boot ran the pairing wizard (awaitPairing)
}

// Options are what the one binary hands PID 1.
type Options struct {
	// LabAgent serves the lab's guest agent on lab boards (nil: never).
	LabAgent LabAgent
}

// caught are the signals whose Go default would end the process; for PID 1
// that is a kernel panic, so all of them are caught.
var caught = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGPWR, unix.SIGALRM, unix.SIGPIPE, unix.SIGTSTP,
	unix.SIGTTIN, unix.SIGTTOU, unix.SIGVTALRM, unix.SIGPROF, unix.SIGXCPU,
	unix.SIGXFSZ, unix.SIGSTKFLT, unix.SIGIO,
}

// continueAfterRoot runs once the root is mounted and early boot is done:
// the state partition, site config, network and supervisor (after.go).
// An error puts the node into maintenance.
var continueAfterRoot = (*Boot).afterRoot

// Main is PID 1. It never returns.
func Main(opts Options) {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "tandem: init must run as PID 1")
		os.Exit(1)
	}
	if raw, ok := os.LookupEnv(resumeEnv); ok {
		resumeMain(raw, opts) // this image re-executed itself after the root (reexec.go)
	}
	b := newBoot()
	b.labAgent = opts.LabAgent
	defer func() {
		if r := recover(); r != nil {
			b.Maintenance(fmt.Errorf("panic: %v", r))
		}
	}()
	b.run(earlySteps(), rootSteps())
}

// newBoot sets up what must exist before the first step: caught signals,
// the console, the reaper and the start banner.
func newBoot() *Boot {
	b := baseBoot(time.Now())

	// Best effort, for the banner only; the steps redo this and report.
	mountOnce(earlyMounts[0]) // /proc, for the slot
	mountDevtmpfs()           // for the manifest's console
	version, slot := "unknown", "unknown"
	if m, err := manifest.Read(manifest.Path); err == nil {
		b.Manifest = m
		if m.Version != "" {
			version = m.Version
		}
	}
	if raw, err := os.ReadFile("/proc/cmdline"); err == nil {
		c, err := ParseCmdline(string(raw))
		b.Cmdline = c
		switch {
		case err != nil:
			slot = "invalid"
		case c.Slot == "":
			slot = "a (default)"
		default:
			slot = c.Slot
		}
	}
	// The build test waits for the banner on the board's console even
	// when the boot entry names another one.
	b.openConsoles()
	b.out.writeRaw(fmt.Sprintf("PID 1 starting (version %s, slot %s)", version, slot))
	return b
}

// baseBoot is what every PID 1 image sets up first, the first one and a
// re-executed one alike: caught signals, the console, logging, the reaper.
func baseBoot(start time.Time) *Boot {
	// The kernel starts init with no PATH; every tool the layers run
	// (mdadm, drbdadm, lvm, rpc.nfsd, ...) is found through it, and the
	// daemons and handlers they start inherit it.
	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, caught...)
	b := &Boot{Start: start, Signals: sigs, Level: new(slog.LevelVar), out: &outputs{ring: newLogRing()},
		state: status.Starting, shutReq: make(chan shutdownRequest, 1)}
	if con, err := openConsole(); err == nil {
		b.out.console = newTTYWriter(con)
	} else {
		b.out.console = os.Stderr // whatever fd 2 is; better than nothing
	}
	b.Log = slog.New(newHandler(b.out, b.Level))
	slog.SetDefault(b.Log)
	b.Reaper = NewReaper(b.Log)
	go b.Reaper.Run(context.Background())
	return b
}

// run runs the step lists, then the continuation. It does not return.
func (b *Boot) run(early, root []Step) {
	if err := checkOrder(nil, append(early[:len(early):len(early)], root...)); err != nil {
		b.Maintenance(fmt.Errorf("boot steps: %w", err))
	}
	if err := runSteps(b, early); err != nil {
		b.Maintenance(fmt.Errorf("early boot: %w", err))
	}
	if err := runSteps(b, root); err != nil {
		b.Maintenance(fmt.Errorf("root: %w", err))
	}
	b.afterEarly()
}

// afterEarly continues once the root steps have run, in this image or,
// after the re-exec, in the previous one. It does not return.
func (b *Boot) afterEarly() {
	b.Log.Info("early boot done", "ms", time.Since(b.Start).Milliseconds(), "uptime", uptime())
	if err := continueAfterRoot(b); err != nil {
		b.Maintenance(err)
	}
	b.Idle()
}

func earlySteps() []Step {
	var steps []Step
	for _, m := range earlyMounts {
		steps = append(steps, Step{Name: "mount " + m.target, Run: func(*Boot) error { return mountOnce(m) }})
	}
	return append(steps,
		Step{Name: "kmsg log", After: []string{"mount /dev", "mount /proc"}, Run: (*Boot).setupKmsg},
		Step{Name: "manifest", Run: (*Boot).readManifest},
		Step{Name: "cmdline", After: []string{"mount /proc"}, Run: (*Boot).readCmdline},
		Step{Name: "console log", Optional: true, After: []string{"manifest", "cmdline", "mount /dev"}, Run: (*Boot).setupConsoles},
		Step{Name: "initramfs modules", Optional: true, After: []string{"manifest", "mount /sys"},
			Run: func(b *Boot) error { return loadModules(b.Log, "/", b.kernel(), b.Manifest.InitramfsModules) }},
	)
}

func rootSteps() []Step {
	return []Step{
		{Name: "find root", After: []string{"cmdline", "initramfs modules"}, Run: (*Boot).findRoot},
		{Name: "mount root", After: []string{"find root"}, Run: func(b *Boot) error { return mountRoot(b.RootDev) }},
		{Name: "writable paths", After: []string{"mount root", "mount /run"}, Run: func(*Boot) error { return mountWritable() }},
		{Name: "copy self", Optional: true, After: []string{"mount /run"}, Run: func(*Boot) error { return copySelf() }},
		{Name: "switch root", After: []string{"writable paths", "copy self"}, Run: (*Boot).switchRoot},
		{Name: "root mounted", After: []string{"switch root"}, Run: (*Boot).rootMounted},
		{Name: "boot modules", Optional: true, After: []string{"switch root"},
			Run: func(b *Boot) error { return loadModules(b.Log, "/", b.kernel(), b.Manifest.BootModules) }},
		{Name: "hostname", Optional: true, Run: func(*Boot) error { return unix.Sethostname([]byte("tandem")) }},
		{Name: "cli", Optional: true, After: []string{"switch root"}, Run: (*Boot).checkCLI},
		{Name: "mount table", Optional: true, After: []string{"switch root"}, Run: (*Boot).logMounts},
		// Last: the new image resumes after the root steps (reexec.go).
		{Name: "re-exec", Optional: true, After: []string{"copy self", "switch root"}, Run: (*Boot).reexec},
	}
}

func (b *Boot) setupKmsg() error {
	// Userspace writes to kmsg are rate limited by default; we are the
	// only writer, and losing boot lines is worse.
	if err := os.WriteFile("/proc/sys/kernel/printk_devkmsg", []byte("on\n"), 0); err != nil {
		b.Log.Debug("printk_devkmsg", "err", err)
	}
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	b.out.mu.Lock()
	b.out.kmsg = f
	b.out.echoBelow = consoleLoglevel()
	b.out.mu.Unlock()
	return nil
}

func (b *Boot) readManifest() error {
	m, err := manifest.Read(manifest.Path)
	if err != nil {
		return err
	}
	b.Manifest = m
	b.Log.Info("image", "version", m.Version, "kernel", m.Kernel, "board", m.Board)
	return nil
}

func (b *Boot) readCmdline() error {
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	c, err := ParseCmdline(string(raw))
	b.Cmdline = c // the consoles are valid even if a tandem.* key is not
	if err != nil {
		return err
	}
	if c.Debug {
		b.Level.Set(slog.LevelDebug)
	}
	b.Slot = c.Slot
	if b.Slot == "" {
		b.Slot = "a"
		b.Log.Warn("no tandem.slot on the kernel command line; booting slot a")
	}
	b.Log.Debug("cmdline", "raw", c.Raw)
	return nil
}

// openConsoles adds the manifest's console when the kernel does not
// already print on it. It runs before the banner and again as a step.
func (b *Boot) openConsoles() error {
	if b.Manifest == nil {
		return errors.New("no manifest")
	}
	var errs []error
	for _, p := range extraConsoles(b.Cmdline.Consoles, b.Manifest.Console) {
		if b.out.hasExtra(p) {
			continue
		}
		f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOCTTY, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.out.addExtra(f)
	}
	return errors.Join(errs...)
}

// setupConsoles is the step: it retries and reports the extra consoles.
func (b *Boot) setupConsoles() error {
	err := b.openConsoles()
	for _, p := range b.out.extraNames() {
		b.Log.Info("also logging to the manifest's console", "dev", p)
	}
	return err
}

// kernel is the release whose modules to load: the manifest's, else uname.
func (b *Boot) kernel() string {
	var u unix.Utsname
	unix.Uname(&u)
	running := unix.ByteSliceToString(u.Release[:])
	if b.Manifest == nil || b.Manifest.Kernel == "" {
		return running
	}
	if b.Manifest.Kernel != running {
		b.Log.Warn("manifest kernel differs from running kernel", "manifest", b.Manifest.Kernel, "running", running)
	}
	return b.Manifest.Kernel
}

func (b *Boot) findRoot() error {
	label, err := rootLabel(b.Slot)
	if err != nil {
		return err
	}
	dev, err := waitPartition(label, rootWait)
	if err != nil {
		return err
	}
	b.RootDev = dev
	b.Log.Info("root partition", "label", label, "dev", dev)
	return nil
}

func (b *Boot) switchRoot() error {
	freed, err := switchRoot()
	if err != nil {
		return err
	}
	b.Log.Info("initramfs freed", "entries", freed)
	return nil
}

func (b *Boot) rootMounted() error {
	ms := time.Since(b.Start).Milliseconds()
	b.Log.Info(fmt.Sprintf("root mounted (slot %s) in %d ms", b.Slot, ms), "dev", b.RootDev, "uptime", uptime())
	return nil
}

// checkCLI proves /usr/bin/tandem resolves to our copy after switch_root.
func (b *Boot) checkCLI() error {
	const cli = "/usr/bin/tandem"
	fi, err := os.Stat(cli)
	if err != nil {
		return err
	}
	target, _ := os.Readlink(cli)
	b.Log.Info("cli ready", "path", cli, "target", target, "size", fi.Size(), "mode", fi.Mode().String())
	return nil
}

// logMounts shows the mount table with tandem.debug.
func (b *Boot) logMounts() error {
	if !b.Log.Enabled(context.Background(), slog.LevelDebug) {
		return nil
	}
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		// mount ID, parent, dev, root, mount point, options, ... - fstype source
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i >= 0 && len(f) > i+2 && len(f) > 5 {
			b.Log.Debug("mount", "on", f[4], "type", f[i+1], "source", f[i+2], "opts", f[5])
		}
	}
	return nil
}

// Maintenance records reason, shows it and idles forever: nothing else is
// touched so an operator can diagnose the node. The status socket, the
// watchdog and poweroff keep working.
func (b *Boot) Maintenance(reason error) {
	b.setState(status.Maintenance, reason)
	b.logReason("MAINTENANCE: ", reason)
	b.Idle()
}

// logReason logs each line of a (multi-line) reason on its own, so every
// console line carries the "tandem: " prefix.
func (b *Boot) logReason(prefix string, reason error) {
	for _, line := range strings.Split(strings.TrimRight(reason.Error(), "\n"), "\n") {
		b.Log.Error(prefix + line)
	}
}

// MaintenanceReason is non-nil once the node is in maintenance.
func (b *Boot) MaintenanceReason() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != status.Maintenance {
		return nil
	}
	return b.reason
}

func (b *Boot) setState(s status.State, reason error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.reason = s, reason
}

// Idle never returns. Signals, the power button and the status socket are
// handled by the event loop (events.go); Idle makes sure it runs and, in
// maintenance, repeats the reason now and then for whoever attaches a
// console later. The ticker also keeps the Go runtime from declaring a
// deadlock, which would end PID 1.
func (b *Boot) Idle() {
	b.startEvents()
	tick := time.NewTicker(10 * time.Minute)
	for range tick.C {
		if err := b.MaintenanceReason(); err != nil && !b.stopping.Load() {
			b.logReason("MAINTENANCE: ", err)
		}
	}
}

// uptime is the kernel's uptime, for timing the whole boot.
func uptime() string {
	raw, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}
