package pid1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reaper reaps zombies nobody waits for: orphans the kernel reparents to
// PID 1. It must not steal the exit status of children that Go code waits
// for itself (os/exec), so it only peeks (WNOWAIT) and reaps a zombie that
//   - was not started through Start (long-lived children whose Wait may come
//     late, e.g. supervised daemons), and
//   - has stayed a zombie for Grace (exec.Cmd.Run and friends wait at once).
type Reaper struct {
	Grace time.Duration
	log   *slog.Logger

	mu    sync.Mutex
	owned map[int]bool
	cand  int // zombie seen first at since, not yet reaped
	since time.Time
}

// NewReaper returns a reaper; call Run to start it.
func NewReaper(log *slog.Logger) *Reaper {
	return &Reaper{Grace: 2 * time.Second, log: log, owned: map[int]bool{}}
}

// Start starts cmd and keeps the reaper off it until Wait.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	r.mu.Lock() // a fast child must not exit and get reaped before it is owned
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.owned[cmd.Process.Pid] = true
	return nil
}

// Wait waits for a cmd started with Start and releases it.
func (r *Reaper) Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	r.mu.Lock()
	delete(r.owned, cmd.Process.Pid)
	r.mu.Unlock()
	return err
}

// Run reaps on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-timer.C:
		}
		if retry := r.safeReapOnce(); retry > 0 {
			timer.Reset(retry)
		}
	}
}

// safeReapOnce keeps a bug in the reaper from ending PID 1.
func (r *Reaper) safeReapOnce() (retry time.Duration) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("reaper panic", "panic", fmt.Sprint(p))
			retry = time.Second
		}
	}()
	return r.ReapOnce()
}

// ReapOnce reaps every eligible zombie and returns when to look again if a
// zombie is still within its grace period (0: nothing pending).
func (r *Reaper) ReapOnce() time.Duration {
	for {
		r.mu.Lock()
		pid, err := peekZombie()
		if err != nil || pid <= 0 {
			r.cand = 0
			r.mu.Unlock()
			return 0
		}
		if r.owned[pid] {
			// waitid shows one zombie at a time; its owner will Wait soon.
			r.mu.Unlock()
			return r.Grace + time.Second
		}
		if pid != r.cand {
			r.cand, r.since = pid, time.Now()
		}
		if wait := r.Grace - time.Since(r.since); wait > 0 {
			r.mu.Unlock()
			return wait
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		r.cand = 0
		r.mu.Unlock()
		if errors.Is(err, unix.ECHILD) || (err == nil && got == 0) {
			continue // someone else waited for it meanwhile
		}
		if err != nil {
			r.log.Warn("reaper: wait4", "pid", pid, "err", err)
			return time.Second
		}
		r.log.Debug("reaped orphan", "pid", got, "status", describeStatus(ws))
	}
}

// peekZombie returns the pid of one exited child without reaping it, or 0.
func peekZombie() (int, error) {
	var si unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		return 0, err
	}
	// x/sys/unix hides si_pid: it is the first field of the union after
	// si_signo, si_errno, si_code, which is 8-byte aligned on 64-bit.
	off := uintptr(12)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(&si), off))), nil
}

func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return "status " + strconv.Itoa(int(ws))
}
