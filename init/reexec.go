package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/status"
)

// Re-exec after switch_root. The kernel starts PID 1 from the initramfs's
// /init; switchRoot deletes that file, but a running process keeps its
// binary's inode, so the whole binary stays pinned in initramfs memory for
// the life of the node. Once the root steps are done, PID 1 therefore
// execs its own copy (manifest.SelfPath, on the root's /run, which
// /usr/bin/tandem needs anyway) and the new image resumes at the
// after-root steps.
//
// Across the exec only fds 0-2 (the console) survive. What later steps
// need is carried in the resumeEnv variable (small, so it cannot get lost
// with a file); the log lines that wait in memory for the state partition
// go through resumeLog on /run.

const (
	// resumeEnv marks a re-executed PID 1; its value is a JSON resumeState.
	resumeEnv = "TANDEM_PID1_RESUME"
	// resumeLog holds the log ring's pending lines across the exec.
	resumeLog = "/run/tandem/resume.json"
	// maxResumeEnv keeps the variable well under the kernel's 128 KiB
	// limit for one argv or environment string (MAX_ARG_STRLEN).
	maxResumeEnv = 64 << 10
)

// resumeState is what the after-root steps need from early boot.
type resumeState struct {
	// StartMono and ExecMono are CLOCK_MONOTONIC readings (ns): when the
	// first PID 1 image started, and when it called execve. The monotonic
	// clock is the kernel's, so it survives the exec.
	StartMono int64              `json:"start_mono"`
	ExecMono  int64              `json:"exec_mono"`
	Cmdline   Cmdline            `json:"cmdline"`
	Slot      string             `json:"slot"`
	RootDev   string             `json:"root_dev"`
	Manifest  *manifest.Manifest `json:"manifest"`
	Steps     []status.Step      `json:"steps"`
}

// pendingLog is the log ring's memory buffer as resumeLog holds it.
type pendingLog struct {
	Lines   []string `json:"lines"`
	Dropped int      `json:"dropped"`
}

// monoNow reads CLOCK_MONOTONIC, the clock behind Go's monotonic time.
func monoNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// reexec is the last root step: it execs manifest.SelfPath and does not
// return on success. On failure the step fails (it is optional) and this
// image goes on, as it did before the step existed.
func (b *Boot) reexec() error {
	return b.reexecFrom(manifest.SelfPath, resumeLog)
}

func (b *Boot) reexecFrom(exe, logPath string) error {
	if err := sameSize(exe, "/proc/self/exe"); err != nil {
		return err // a truncated copy would crash PID 1: a kernel panic
	}
	b.Log.Info("re-exec: exec " + exe)
	st := resumeState{
		StartMono: int64(monoNow() - time.Since(b.Start)),
		Cmdline:   b.Cmdline, Slot: b.Slot, RootDev: b.RootDev, Manifest: b.Manifest,
	}
	b.mu.Lock()
	st.Steps = slices.Clone(b.steps)
	b.mu.Unlock()
	// This step's own outcome is recorded by the new image.
	st.Steps = append(st.Steps, status.Step{Name: "re-exec", Optional: true})
	if err := b.out.ring.savePending(logPath); err != nil {
		return fmt.Errorf("keep the early log for the new image: %w", err)
	}
	st.ExecMono = int64(monoNow())
	env, err := resumeEnviron(os.Environ(), &st)
	if err == nil {
		argv := append([]string{exe}, os.Args[1:]...)
		err = fmt.Errorf("exec %s: %w", exe, syscall.Exec(exe, argv, env))
	}
	// Still here: this image goes on, and its ring keeps the lines.
	os.Remove(logPath)
	return err
}

// sameSize checks that the copy has the running binary's size.
func sameSize(copyPath, self string) error {
	a, err := os.Stat(copyPath)
	if err != nil {
		return err
	}
	s, err := os.Stat(self)
	if err != nil {
		return err
	}
	if a.Size() != s.Size() {
		return fmt.Errorf("%s has %d bytes, the running binary %d; not executing it", copyPath, a.Size(), s.Size())
	}
	return nil
}

// resumeEnviron returns environ without an inherited resumeEnv and with st.
func resumeEnviron(environ []string, st *resumeState) ([]string, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode resume state: %w", err)
	}
	if len(raw) > maxResumeEnv {
		return nil, fmt.Errorf("resume state is %d bytes, over %d", len(raw), maxResumeEnv)
	}
	env := slices.DeleteFunc(slices.Clone(environ), func(kv string) bool { return strings.HasPrefix(kv, resumeEnv+"=") })
	return append(env, resumeEnv+"="+string(raw)), nil
}

// decodeResume parses resumeEnv's value and derives the boot start on
// this image's clock, so "PID 1 start → ready" spans both images.
func decodeResume(raw string, now time.Time, mono time.Duration) (*resumeState, time.Time, error) {
	var st resumeState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode %s: %w", resumeEnv, err)
	}
	if st.Manifest == nil {
		return nil, time.Time{}, fmt.Errorf("%s carries no manifest", resumeEnv)
	}
	elapsed := mono - time.Duration(st.StartMono)
	if st.StartMono <= 0 || elapsed < 0 {
		return nil, time.Time{}, fmt.Errorf("%s: bad start time %d (now %d)", resumeEnv, st.StartMono, mono)
	}
	return &st, now.Add(-elapsed), nil
}

// resumeMain is Main for a re-executed PID 1. It never returns.
func resumeMain(raw string, opts Options) {
	// Children must not inherit the marker (a child is never PID 1, but
	// nothing else should see early boot's state either).
	os.Unsetenv(resumeEnv)
	now, mono := time.Now(), monoNow()
	b := baseBoot(now)
	b.labAgent = opts.LabAgent
	defer func() {
		if r := recover(); r != nil {
			b.Maintenance(fmt.Errorf("panic: %v", r))
		}
	}()
	// The old image's lines come first in the persistent log.
	pendErr := b.out.ring.loadPending(resumeLog)
	if err := b.setupKmsg(); err != nil {
		b.Log.Warn("re-exec: kmsg log", "err", err)
	}
	st, start, err := decodeResume(raw, now, mono)
	if err != nil {
		// Without the manifest nothing after the root can run; the status
		// socket still tells an operator why.
		if serr := b.serveStatus(); serr != nil {
			b.Log.Warn("re-exec: status socket", "err", serr)
		}
		b.Maintenance(fmt.Errorf("re-exec: %w", err))
	}
	b.Start, b.Cmdline, b.Slot, b.RootDev, b.Manifest = start, st.Cmdline, st.Slot, st.RootDev, st.Manifest
	if b.Cmdline.Debug {
		b.Level.Set(slog.LevelDebug)
	}
	if err := b.openConsoles(); err != nil {
		b.Log.Warn("re-exec: manifest console", "err", err)
	}
	ms := (mono - time.Duration(st.ExecMono)).Milliseconds()
	b.mu.Lock()
	b.steps = st.Steps
	if n := len(b.steps); n > 0 && b.steps[n-1].Name == "re-exec" {
		b.steps[n-1].OK, b.steps[n-1].MS = true, ms
	}
	b.mu.Unlock()
	b.Log.Info("re-exec: ok", "ms", ms, "exe", exePath())
	if pendErr != nil && !errors.Is(pendErr, os.ErrNotExist) {
		b.Log.Warn("re-exec: early log lines lost from the persistent log (the console has them)", "err", pendErr)
	}
	b.afterEarly()
}

// exePath is what /proc/self/exe points at.
func exePath() string {
	p, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return "?"
	}
	return p
}

// savePending writes the lines waiting for the state partition to path.
func (r *logRing) savePending(path string) error {
	r.mu.Lock()
	p := pendingLog{Lines: slices.Clone(r.pending), Dropped: r.dropped}
	r.mu.Unlock()
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

// loadPending puts the lines saved by savePending before anything this
// image logged, and removes the file.
func (r *logRing) loadPending(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	os.Remove(path)
	var p pendingLog
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil || r.closed {
		return errors.New("log ring already open")
	}
	lines := append(p.Lines, r.pending...)
	r.pending, r.pendLen, r.dropped = nil, 0, p.Dropped+r.dropped
	for _, l := range lines {
		if r.pendLen+len(l) > ringPendingMax {
			r.dropped++
			continue
		}
		r.pending = append(r.pending, l)
		r.pendLen += len(l)
	}
	return nil
}
