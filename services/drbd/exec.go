package drbd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"tandem.dev/tandem/services/tool"
)

// result is what one run of an external tool left behind.
type result struct {
	Stdout, Stderr string
	Exit           int   // -1 if the tool did not run or was killed
	Err            error // nil on exit 0
}

// runner runs one external tool to completion. Tests replace it.
type runner interface {
	Run(ctx context.Context, name string, args ...string) result
}

// streamer starts a long-running tool (the events2 stream) and returns
// its stdout; wait returns when it has exited.
type streamer interface {
	Stream(ctx context.Context, name string, args ...string) (out io.Reader, wait func() error, err error)
}

// defaultTimeout bounds a tool call whose ctx has no earlier deadline:
// drbdadm can hang on a kernel that waits for a peer.
const defaultTimeout = 60 * time.Second

// execRunner runs tools for real.
type execRunner struct{}

var toolEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin:/lib/drbd", "LANG=C", "LC_ALL=C"}

// command is a long-running tool (Stream); Run goes through tool.Run.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	// drbdadm forks drbdsetup-84 and drbdmeta: kill the whole group on
	// timeout, or a hung child keeps our pipes open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = toolEnv
	return cmd
}

func (execRunner) Run(ctx context.Context, name string, args ...string) result {
	var timeout time.Duration
	if _, ok := ctx.Deadline(); !ok {
		timeout = defaultTimeout
	}
	// stdin is /dev/null: never wait for a "type yes" prompt. drbdadm
	// forks drbdsetup-84 and drbdmeta: kill the whole group on timeout,
	// or a hung child keeps our pipes open.
	r, err := tool.Run(ctx, tool.Cmd{Path: name, Args: args, Timeout: timeout, Env: toolEnv, WaitDelay: 2 * time.Second, KillGroup: true})
	return result{Stdout: r.Stdout, Stderr: r.Stderr, Exit: r.Exit, Err: err}
}

func (execRunner) Stream(ctx context.Context, name string, args ...string) (io.Reader, func() error, error) {
	cmd := command(ctx, name, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		return nil
	}
	return out, wait, nil
}
