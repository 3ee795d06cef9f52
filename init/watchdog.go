package pid1

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Hardware watchdog policy: the board resets when PID 1 stops petting for
// the timeout: watchdogTimeout until the site config's
// ha.watchdog_timeout_seconds applies (setTimeout). While the node runs, a
// goroutine pets every watchdogPet, so a hung kernel or a stalled Go
// runtime resets the board. A shutdown gives itself shutdownBudget; a stop
// that hangs past it stops the petting, and the watchdog resets the board.
const (
	watchdogTimeout = 30 * time.Second
	// Well under the shortest timeout the site config allows (2 s).
	watchdogPet    = 500 * time.Millisecond
	shutdownBudget = 90 * time.Second
)

type watchdog struct {
	f   *os.File
	dev string

	mu    sync.Mutex
	until time.Time // pet only before this; zero: always
	// healthy, once the HA supervisor runs: pet only while its decision
	// loop makes progress, so a stuck or dead loop ends in a reset.
	healthy func(time.Time) bool
	starved bool // the last pet was withheld for the loop (logged once)
	log     *slog.Logger
}

// startWatchdog opens the board's watchdog (which arms it) and pets it.
func (b *Boot) startWatchdog() error {
	dev := b.Manifest.Watchdog
	if dev == "" {
		b.Log.Info("watchdog: none on this board")
		return nil
	}
	path, err := watchdogNode(dev, 2*time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	fd := int(f.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(watchdogTimeout/time.Second)); err != nil {
		b.Log.Warn("watchdog: cannot set the timeout; keeping the driver's", "dev", path, "err", err)
	}
	timeout, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		timeout = -1
	}
	w := &watchdog{f: f, dev: path, log: b.Log}
	w.pet()
	go w.loop()
	b.mu.Lock()
	b.watchdog = w
	b.mu.Unlock()
	b.Log.Info("watchdog: armed", "dev", path, "timeout_s", timeout, "pet", watchdogPet)
	return nil
}

// watchdogNode returns a device node for dev (e.g. /dev/watchdog0),
// creating it from sysfs' major:minor when devtmpfs has not (yet).
func watchdogNode(dev string, wait time.Duration) (string, error) {
	name := filepath.Base(dev)
	sys := filepath.Join("/sys/class/watchdog", name, "dev")
	deadline := time.Now().Add(wait)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		raw, err := os.ReadFile(sys)
		if err == nil {
			var maj, min uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(string(raw)), "%d:%d", &maj, &min); err != nil {
				return "", fmt.Errorf("%s: %q: %w", sys, raw, err)
			}
			err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min)))
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return "", fmt.Errorf("mknod %s: %w", dev, err)
			}
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no watchdog %s (is its driver loaded?): %w", dev, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *watchdog) loop() {
	for range time.Tick(watchdogPet) {
		w.pet()
	}
}

func (w *watchdog) pet() {
	if w.shouldPet(time.Now()) {
		unix.IoctlWatchdogKeepalive(int(w.f.Fd()))
	}
}

// shouldPet: no bound has passed (a shutdown or a lost quorum overran
// it), and the HA loop, if it runs, is making progress.
func (w *watchdog) shouldPet(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.until.IsZero() && now.After(w.until) {
		return false // let the board reset
	}
	if w.healthy != nil && !w.healthy(now) {
		if !w.starved && w.log != nil {
			w.log.Error("watchdog: the HA loop makes no progress; petting stops: the board resets unless the loop recovers within the watchdog timeout")
		}
		w.starved = true
		return false
	}
	if w.starved && w.log != nil {
		// A stall of the whole machine (seen under emulation) looks the
		// same for a moment; say that it passed.
		w.log.Warn("watchdog: the HA loop makes progress again; petting resumes")
	}
	w.starved = false
	return true
}

// watchLoop makes the petting depend on the HA loop's progress (nil:
// not any more, e.g. while a shutdown stops the loop under its own
// bound).
func (w *watchdog) watchLoop(healthy func(time.Time) bool) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.healthy = healthy
	w.mu.Unlock()
}

// setTimeout asks the driver for d and returns the timeout in force:
// drivers round or clamp, and the takeover delay must use the real one.
func (w *watchdog) setTimeout(d time.Duration, log *slog.Logger) time.Duration {
	fd := int(w.f.Fd())
	want := int((d + time.Second - 1) / time.Second)
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, want); err != nil {
		log.Warn("watchdog: cannot set the site's timeout", "dev", w.dev, "want_s", want, "err", err)
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil || got <= 0 {
		log.Warn("watchdog: cannot read the timeout back; assuming the site's", "dev", w.dev, "err", err)
		return d
	}
	if got != want {
		log.Warn("watchdog: the driver set another timeout than ha.watchdog_timeout_seconds", "dev", w.dev, "want_s", want, "got_s", got)
	}
	w.pet() // restart the count with the new timeout
	return time.Duration(got) * time.Second
}
