package drbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
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

func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	// drbdadm forks drbdsetup-84 and drbdmeta: kill the whole group on
	// timeout, or a hung child keeps our pipes open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin:/lib/drbd", "LANG=C", "LC_ALL=C"}
	return cmd
}

func (execRunner) Run(ctx context.Context, name string, args ...string) result {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var out, errb bytes.Buffer
	cmd := command(ctx, name, args...)
	cmd.Stdin = strings.NewReader("") // never wait for a "type yes" prompt
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String(), Exit: -1, Err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Exit = 0
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	}
	return r
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
