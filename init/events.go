package pid1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/status"
)

// shutdownRequest is a poweroff or reboot and what asked for it.
type shutdownRequest struct {
	op  string // status.OpPoweroff or status.OpReboot
	why string
}

// signalOps maps the signals PID 1 acts on to a shutdown; the rest are
// logged and ignored. Ctrl-Alt-Del arrives as SIGINT once the kernel's own
// immediate reboot is off, and means reboot, as in every init.
var signalOps = map[os.Signal]string{
	unix.SIGTERM: status.OpPoweroff,
	unix.SIGUSR2: status.OpPoweroff,
	unix.SIGPWR:  status.OpPoweroff,
	unix.SIGINT:  status.OpReboot,
}

// setupEvents turns Ctrl-Alt-Del into a signal and starts the event loop.
func (b *Boot) setupEvents() error {
	b.startEvents()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		return fmt.Errorf("ctrl-alt-del off: %w", err)
	}
	return nil
}

func (b *Boot) startEvents() {
	b.events.Do(func() { go b.eventLoop() })
}

// eventLoop turns signals and requests into a shutdown. A panic while
// handling one event is logged and the loop goes on.
func (b *Boot) eventLoop() {
	for {
		func() {
			defer func() {
				if r := recover(); r != nil {
					b.Log.Error("event loop panic", "panic", fmt.Sprint(r))
				}
			}()
			select {
			case s := <-b.Signals:
				if op, ok := signalOps[s]; ok {
					b.shutdown(shutdownRequest{op, "signal " + s.String()})
				} else {
					b.Log.Info("signal ignored", "signal", s.String())
				}
			case r := <-b.shutReq:
				b.shutdown(r)
			}
		}()
	}
}

// requestShutdown asks the event loop for a poweroff or reboot.
func (b *Boot) requestShutdown(op, why string) error {
	if op != status.OpPoweroff && op != status.OpReboot {
		return fmt.Errorf("unknown shutdown %q", op)
	}
	if b.stopping.Load() {
		return errors.New("already shutting down")
	}
	select {
	case b.shutReq <- shutdownRequest{op, why}:
		return nil
	default:
		return errors.New("a shutdown is already pending")
	}
}

// shutdownSteps stop the node. Each is optional: a step that fails must
// not keep the node from powering off.
func shutdownSteps() []Step {
	return []Step{
		{Name: "stop services", Optional: true, Run: (*Boot).stopServices},
		{Name: "stop processes", Optional: true, After: []string{"stop services"}, Run: func(b *Boot) error { return killAll(b) }},
		{Name: "sync", Optional: true, After: []string{"stop processes"}, Run: func(*Boot) error { unix.Sync(); return nil }},
		{Name: "unmount", Optional: true, After: []string{"sync"}, Run: (*Boot).unmountAll},
	}
}

// shutdown stops everything top-down, syncs, unmounts and powers off or
// reboots. It does not return.
func (b *Boot) shutdown(r shutdownRequest) {
	if b.stopping.Swap(true) {
		return
	}
	b.Log.Info(fmt.Sprintf("shutdown: %s requested (%s)", r.op, r.why))
	b.mu.Lock()
	b.state = status.Stopping
	wd := b.watchdog
	b.mu.Unlock()
	boundShutdown(wd, time.Now())
	// Let the boot step under way finish; no later step starts.
	b.stepMu.Lock()
	runStepList(b, shutdownSteps(), false)
	unix.Sync()
	cmd, word := unix.LINUX_REBOOT_CMD_POWER_OFF, "powering off"
	if r.op == status.OpReboot {
		cmd, word = unix.LINUX_REBOOT_CMD_RESTART, "rebooting"
	}
	b.Log.Info(word)
	b.drainConsoles()
	err := unix.Reboot(cmd)
	// Still here: nothing else to do but say so and wait for the watchdog
	// or a person.
	b.Log.Error("reboot syscall failed", "err", err)
	select {}
}

// boundShutdown: a stop that hangs past the budget ends in a watchdog
// reset. An earlier bound (a lost quorum's) stays: a shutdown never
// lengthens it. The HA loop stops during the shutdown, so the petting
// no longer waits on its progress.
func boundShutdown(wd *watchdog, now time.Time) {
	wd.BoundBy(now.Add(shutdownBudget))
	wd.watchLoop(nil)
}

// drainConsoles waits, briefly, for the consoles to send their buffers: a
// console stuck on flow control must not block a poweroff.
func (b *Boot) drainConsoles() {
	drained := make(chan struct{})
	go func() { b.out.drain(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
}

func (b *Boot) stopServices() error {
	b.mu.Lock()
	sup, stopRun, mgmt := b.sup, b.stopRun, b.mgmt
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBudget-15*time.Second)
	defer cancel()
	if sup == nil {
		if mgmt == nil {
			return nil
		}
		// Maintenance: only the best-effort management network is up.
		if err := mgmt.Stop(ctx); err != nil {
			return err
		}
		b.Log.Info("stop "+mgmt.Name()+" ok", "op", "stop", "resource", mgmt.Name())
		return nil
	}
	if h := b.haSup(); h != nil {
		hctx, cancel := context.WithTimeout(ctx, handOverBudget)
		h.HandOverForShutdown(hctx)
		cancel()
	}
	if stopRun != nil {
		stopRun() // no monitor restarts while we stop
	}
	return sup.Stop(ctx)
}

// handOverBudget bounds the handover before a planned poweroff or reboot.
const handOverBudget = time.Minute

// killAll asks every other process to end, then kills what is left.
// Kernel threads ignore both.
func killAll(b *Boot) error {
	if others(b) == 0 {
		return nil
	}
	// Killing the rescue shell hangs the console up, which throws away
	// what is still buffered: send it first, and reopen afterwards.
	b.drainConsoles()
	defer b.out.reopenConsoles()
	// SIGHUP first: interactive shells (the rescue shell) ignore SIGTERM
	// but end on a hangup, as when a terminal goes away.
	unix.Kill(-1, unix.SIGHUP)
	unix.Kill(-1, unix.SIGTERM)
	if waitNoOthers(b, 3*time.Second) {
		return nil
	}
	unix.Kill(-1, unix.SIGKILL)
	if waitNoOthers(b, 2*time.Second) {
		return nil
	}
	return fmt.Errorf("%d processes survived SIGKILL", others(b))
}

func waitNoOthers(b *Boot, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if others(b) == 0 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// others counts live user processes other than PID 1 (zombies are dead:
// the reaper collects them).
func others(b *Boot) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... flags is field 9; comm may hold spaces.
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 7 {
			continue
		}
		flags, _ := strconv.ParseUint(f[6], 10, 64)
		const pfKthread = 0x00200000
		if flags&pfKthread != 0 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		n++
	}
	b.Reaper.ReapOnce()
	return n
}

// unmountAll closes the persistent log and unmounts what PID 1 mounted
// after the root, then the writable overlays. The state partition must
// end clean: if it is busy it is remounted read-only instead.
func (b *Boot) unmountAll() error {
	b.mu.Lock()
	mounts := append([]string(nil), b.mounts...)
	b.mu.Unlock()
	b.Log.Info("unmounting", "paths", strings.Join(append(reversed(mounts), "/var", "/etc", "/tmp"), " "))
	b.out.ring.close()
	var errs []error
	for _, m := range reversed(mounts) {
		if err := mount.Unmount(m, false, false); err != nil {
			if rerr := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
				errs = append(errs, fmt.Errorf("%s: %w (and read-only remount: %v)", m, err, rerr))
				continue
			}
			errs = append(errs, fmt.Errorf("%s: %w (remounted read-only)", m, err))
		}
	}
	// The overlays' upper dirs are tmpfs: nothing to save, but a clean
	// unmount shows nothing still holds them.
	for _, w := range writable {
		if err := mount.Unmount(w.path, false, false); err != nil {
			mount.Unmount(w.path, false, true)
			errs = append(errs, fmt.Errorf("%s: %w (detached)", w.path, err))
		}
	}
	return errors.Join(errs...)
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}
