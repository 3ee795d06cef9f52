package nfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/tool"
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
	var timeout time.Duration
	if _, ok := ctx.Deadline(); !ok {
		timeout = defaultTimeout
	}
	r, err := tool.Run(ctx, tool.Cmd{Path: name, Args: args, Timeout: timeout, Env: toolEnv, WaitDelay: 2 * time.Second})
	return result{Stdout: r.Stdout, Stderr: r.Stderr, Exit: r.Exit, Err: err}
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

// Sentinel errors a tool failure maps to, besides services'
// ErrToolMissing and ErrToolFailed (a failure no rule knows).
var (
	ErrNoNFSD        = services.Sentinel("kernel nfsd not available", services.ErrNoKernel)
	ErrExportPath    = errors.New("export path cannot be exported")
	ErrPortInUse     = services.Sentinel("NFS port already in use", services.ErrInUse)
	ErrScope         = errors.New("cannot set the NFSv4 server scope")
	ErrVersion       = errors.New("NFS version not supported")
	ErrNotReplicated = errors.New("replicated filesystem not mounted")
)

var rules = tool.Rules{
	{Phrase: "Unable to access /proc/fs/nfsd", Err: ErrNoNFSD, Kind: services.Missing},
	{Phrase: "nfsd module", Err: ErrNoNFSD, Kind: services.Missing},
	{Phrase: "Failed to stat", Err: ErrExportPath, Kind: services.Config},
	{Phrase: "does not support NFS export", Err: ErrExportPath, Kind: services.Config},
	{Phrase: "requires fsid= for NFS export", Err: ErrExportPath, Kind: services.Config},
	{Phrase: "Address already in use", Err: ErrPortInUse, Kind: services.Failed},
	{Phrase: "unable to bind", Err: ErrPortInUse, Kind: services.Failed},
	{Phrase: "unable to set any sockets for nfsd", Err: ErrPortInUse, Kind: services.Failed},
	{Phrase: "Unable to set server scope", Err: ErrScope, Kind: services.Failed},
	{Phrase: "Unsupported version", Err: ErrVersion, Kind: services.Config},
	{Phrase: "unsupported minor version", Err: ErrVersion, Kind: services.Config},
	{Phrase: "no version specified", Err: ErrVersion, Kind: services.Config},
	{Phrase: "executable file not found", Err: services.ErrToolMissing, Kind: services.Missing},
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
			return errorf(op, services.Missing, "%w: %s: %w", services.ErrToolMissing, cmd, r.Err)
		}
		return errorf(op, kind, "%s: %w", cmd, r.Err)
	}
	detail := fmt.Errorf("%s: exit %d: %s", cmd, r.Exit, strings.ReplaceAll(text, "\n", " | "))
	return rules.ServiceError(Name, op, text, detail, services.ErrToolFailed)
}
