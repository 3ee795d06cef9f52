// Package tool runs the external programs the layers wrap (mdadm, lvm,
// mkfs.xfs, drbdadm, exportfs, ...) the one way Tandem runs them: with a
// deadline, stdin from /dev/null (a question reads EOF and the tool gives
// up instead of going ahead), stdout and stderr captured, and a bounded
// wait for a child stuck in the kernel. Each layer turns stderr into
// sentinels with a Rules table: services' common ones (ErrInUse,
// ErrNotFound, ...) or its own, which wrap them (services.Sentinel).
package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"tandem.dev/tandem/services"
)

// Cmd is one run of a program.
type Cmd struct {
	Path string
	Args []string
	// Name names the program in messages; default the base of Path.
	Name string
	// Timeout caps the run (the caller's earlier deadline still wins).
	// Zero: ctx alone.
	Timeout time.Duration
	// Env is the whole environment; nil inherits ours.
	Env []string
	// Stdin; nil is /dev/null.
	Stdin io.Reader
	// WaitDelay bounds the wait for the pipes after the program is killed
	// (a child in D state cannot be). Default 5 seconds.
	WaitDelay time.Duration
	// KillGroup runs the program in its own process group and kills the
	// whole group on timeout (tools that fork helpers holding our pipes).
	KillGroup bool
}

// Result is what one run left behind.
type Result struct {
	Stdout, Stderr string
	Exit           int // -1 if the program did not run or was killed
	Elapsed        time.Duration
}

// ExitError: the program ran and exited non-zero (Exit -1: killed by a
// signal).
type ExitError struct {
	Name string
	Args []string
	Exit int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s %s: exit status %d", e.Name, strings.Join(e.Args, " "), e.Exit)
}

// Run runs c to completion. The error is nil on exit 0; an *ExitError on
// another exit status (Result holds the output); on a deadline it wraps
// ctx.Err(); when the program could not be started it wraps the start
// error (Missing reports a missing binary).
func Run(ctx context.Context, c Cmd) (Result, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	name := c.Name
	if name == "" {
		name = filepath.Base(c.Path)
	}
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = c.Env
	cmd.Stdin = c.Stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = c.WaitDelay
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = 5 * time.Second
	}
	if c.KillGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	}
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Exit: -1, Elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Exit = 0
		return r, nil
	case ctx.Err() != nil:
		return r, fmt.Errorf("%s %s: no answer in %s: %w", name, strings.Join(c.Args, " "), r.Elapsed.Round(time.Millisecond), ctx.Err())
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
		return r, &ExitError{Name: name, Args: c.Args, Exit: r.Exit}
	}
	return r, fmt.Errorf("%s %s: %w", name, strings.Join(c.Args, " "), err)
}

// Missing reports whether err says the program is not installed.
func Missing(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist)
}

// Rule maps a phrase in a tool's output to a sentinel (and, for layers
// that report *services.Error, the Kind).
type Rule struct {
	Phrase string
	Err    error
	Kind   services.Kind
}

// Rules is an ordered table: the first rule whose phrase occurs wins,
// so the more specific phrase comes first.
type Rules []Rule

// Match returns the first rule whose phrase occurs in text.
func (rs Rules) Match(text string) (Rule, bool) {
	for _, r := range rs {
		if strings.Contains(text, r.Phrase) {
			return r, true
		}
	}
	return Rule{}, false
}

// Classify returns the sentinel of the first matching rule, or fallback.
func (rs Rules) Classify(text string, fallback error) error {
	if r, ok := rs.Match(text); ok {
		return r.Err
	}
	return fallback
}

// Lines joins the non-empty lines of s into one, trimmed, each passed
// through clean (nil: as is), for messages on the console.
func Lines(s string, clean func(string) string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if clean != nil {
			l = clean(l)
		}
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// ServiceError is the *services.Error for a failed run of a layer's tool:
// the first rule matching text gives the sentinel and Kind, else fallback
// and services.Failed; detail (the command, exit status and output) is
// wrapped behind the sentinel.
func (rs Rules) ServiceError(resource, op, text string, detail, fallback error) error {
	r, ok := rs.Match(text)
	if !ok {
		r = Rule{Err: fallback, Kind: services.Failed}
	}
	return &services.Error{Resource: resource, Op: op, Kind: r.Kind, Err: fmt.Errorf("%w: %w", r.Err, detail)}
}

// Failure is a classified tool run that failed; the layers' errors wrap
// it, so errors.Is finds the sentinel and the message names the command.
type Failure struct {
	Tool   string // "mdadm", "lvm"
	Args   []string
	Exit   int
	Stderr string
	Err    error // a sentinel from the layer's Rules
	// Clean tidies each stderr line for the message (e.g. drops "mdadm:").
	Clean func(string) string
}

func (e *Failure) Error() string {
	msg := Lines(e.Stderr, e.Clean)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Exit)
	}
	return fmt.Sprintf("%s %s: %v: %s", e.Tool, strings.Join(e.Args, " "), e.Err, msg)
}

func (e *Failure) Unwrap() error { return e.Err }
