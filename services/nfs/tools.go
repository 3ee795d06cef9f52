package nfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"tandem.dev/tandem/services"
)

// result is what one run of an external tool left behind.
type result struct {
	Stdout, Stderr string
	Exit           int // -1 if it did not run or was killed
	Err            error
}

// runner runs one tool to completion (exportfs, rpc.nfsd, sm-notify).
type runner interface {
	Run(ctx context.Context, name string, args ...string) result
}

// proc is a daemon we started and own.
type proc interface {
	Pid() int
	Signal(os.Signal) error
	Done() <-chan struct{}
}

// starter starts a long-running daemon in the foreground.
type starter interface {
	Start(name string, args ...string) (proc, error)
}

const defaultTimeout = 30 * time.Second

var toolEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C"}

type execRunner struct{}

func (execRunner) Run(ctx context.Context, name string, args ...string) result {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = toolEnv
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String(), Exit: -1, Err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Exit = 0
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("%s: %w", name, ctx.Err())
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	}
	return r
}

type execProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *execProc) Pid() int                 { return p.cmd.Process.Pid }
func (p *execProc) Signal(s os.Signal) error { return p.cmd.Process.Signal(s) }
func (p *execProc) Done() <-chan struct{}    { return p.done }

type execStarter struct{}

func (execStarter) Start(name string, args ...string) (proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = toolEnv
	// Its own session: a signal to our process group must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &execProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }() // reap at once: PID 1's reaper leaves it to us
	return p, nil
}

// Sentinel errors a tool failure maps to.
var (
	ErrNoNFSD        = errors.New("kernel nfsd not available")
	ErrExportPath    = errors.New("export path cannot be exported")
	ErrPortInUse     = errors.New("NFS port already in use")
	ErrScope         = errors.New("cannot set the NFSv4 server scope")
	ErrVersion       = errors.New("NFS version not supported")
	ErrToolMissing   = errors.New("nfs-utils program missing")
	ErrTool          = errors.New("nfs-utils tool failed")
	ErrNotReplicated = errors.New("replicated filesystem not mounted")
)

var rules = []struct {
	substr string
	err    error
	kind   services.Kind
}{
	{"Unable to access /proc/fs/nfsd", ErrNoNFSD, services.Missing},
	{"nfsd module", ErrNoNFSD, services.Missing},
	{"Failed to stat", ErrExportPath, services.Config},
	{"does not support NFS export", ErrExportPath, services.Config},
	{"requires fsid= for NFS export", ErrExportPath, services.Config},
	{"Address already in use", ErrPortInUse, services.Failed},
	{"unable to bind", ErrPortInUse, services.Failed},
	{"unable to set any sockets for nfsd", ErrPortInUse, services.Failed},
	{"Unable to set server scope", ErrScope, services.Failed},
	{"Unsupported version", ErrVersion, services.Config},
	{"unsupported minor version", ErrVersion, services.Config},
	{"no version specified", ErrVersion, services.Config},
	{"executable file not found", ErrToolMissing, services.Missing},
}

// classify turns a failed run into a *services.Error.
func classify(op string, r result, cmd string) error {
	if r.Err == nil {
		return nil
	}
	text := strings.TrimSpace(r.Stderr + "\n" + r.Stdout)
	if r.Exit < 0 {
		kind := services.KindOf(r.Err)
		if errors.Is(r.Err, exec.ErrNotFound) {
			return &services.Error{Resource: Name, Op: op, Kind: services.Missing, Err: fmt.Errorf("%w: %s: %w", ErrToolMissing, cmd, r.Err)}
		}
		return &services.Error{Resource: Name, Op: op, Kind: kind, Err: fmt.Errorf("%s: %w", cmd, r.Err)}
	}
	detail := fmt.Errorf("%s: exit %d: %s", cmd, r.Exit, strings.ReplaceAll(text, "\n", " | "))
	for _, rule := range rules {
		if strings.Contains(text, rule.substr) {
			return &services.Error{Resource: Name, Op: op, Kind: rule.kind, Err: fmt.Errorf("%w: %w", rule.err, detail)}
		}
	}
	return &services.Error{Resource: Name, Op: op, Kind: services.Failed, Err: fmt.Errorf("%w: %w", ErrTool, detail)}
}
