package labagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Start runs Serve in the background when the manifest names a lab
// channel, and does nothing for "" (production boards). It returns at once.
func Start(ctx context.Context, channel string, log *slog.Logger) {
	if channel == "" {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	go func() {
		if err := Serve(ctx, channel, log); err != nil && ctx.Err() == nil {
			log.Error("lab agent stopped", "channel", channel, "err", err)
		}
	}()
}

// Serve opens the virtio-serial port named port and runs the requests it
// receives until ctx ends. It waits for the port to appear (the
// virtio_console module may load after Serve starts), and survives the
// host side connecting and disconnecting any number of times.
func Serve(ctx context.Context, port string, log *slog.Logger) error {
	var (
		path string
		err  error
	)
	p := ports{sys: "/sys/class/virtio-ports", dev: "/dev", mknod: unix.Mknod}
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		if path, err = p.find(port); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer f.Close()
	go func() { <-ctx.Done(); f.Close() }()
	log.Info("lab agent listening", "port", port, "dev", path)
	return serve(ctx, f, log, 200*time.Millisecond)
}

// serve runs requests from rw. On a virtio-serial port, a read returns
// EOF while no host is connected (and at once again after that), so an
// EOF means "wait and read again", not "done": idle says how long. A
// partial line from a host that went away is dropped with its reader.
func serve(ctx context.Context, rw io.ReadWriter, log *slog.Logger, idle time.Duration) error {
	var wmu sync.Mutex
	reply := func(r Result) {
		b, err := json.Marshal(r)
		if err != nil {
			b, _ = json.Marshal(Result{ID: r.ID, Exit: -1, Error: err.Error()})
		}
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := rw.Write(append(b, '\n')); err != nil && ctx.Err() == nil {
			log.Warn("lab agent: reply lost", "id", r.ID, "err", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		sc := bufio.NewScanner(rw)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		sc.Split(wholeLines)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var req Request
			if err := json.Unmarshal(line, &req); err != nil {
				log.Warn("lab agent: bad request", "err", err)
				res := Result{ID: req.ID, Exit: -1, Error: "bad request: " + err.Error()}
				wg.Add(1)
				go func() { defer wg.Done(); reply(res) }()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				reply(run(ctx, req, log))
			}()
		}
		err := sc.Err()
		switch {
		case ctx.Err() != nil:
		case err == nil: // EOF: the host is not (or no longer) connected
			select {
			case <-ctx.Done():
			case <-time.After(idle):
			}
		case errors.Is(err, bufio.ErrTooLong):
			log.Warn("lab agent: request too long; dropped", "max", maxLine)
		default:
			return fmt.Errorf("agent: read: %w", err)
		}
	}
	return nil
}

// wholeLines is bufio.ScanLines without the final unterminated line: at
// EOF the host went away, and half a request is not a request.
func wholeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), nil, nil
	}
	return 0, nil, nil
}

// run executes one request. Each command gets its own process group, so
// that a timeout also kills what it started.
func run(ctx context.Context, req Request, log *slog.Logger) Result {
	start := time.Now()
	res := Result{ID: req.ID, Exit: -1}
	if len(req.Argv) == 0 {
		res.Error = "empty argv"
		return res
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env := append([]string{"PATH=" + basePath, "HOME=/root", "TERM=dumb"}, req.Env...)
	// exec.Command looks argv[0] up in our own PATH, and PID 1 (the agent's
	// process) has none: look it up in the command's.
	prog, err := lookPath(req.Argv[0], env)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	cmd := exec.CommandContext(ctx, prog, req.Argv[1:]...)
	cmd.Args[0] = req.Argv[0]
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A daemon that inherited our pipes must not hold the reply forever.
	cmd.WaitDelay = 2 * time.Second
	if req.Stdin != nil {
		cmd.Stdin = bytes.NewReader(req.Stdin)
	}
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	res.Duration = time.Since(start)
	res.Stdout, res.Stderr = stdout.bytes(), stderr.bytes()
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.Exit = 0
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode() // -1 when killed by a signal
		res.TimedOut = ctx.Err() == context.DeadlineExceeded
	default:
		res.Error = err.Error()
		res.TimedOut = ctx.Err() == context.DeadlineExceeded
	}
	log.Debug("lab agent ran", "argv", strings.Join(req.Argv, " "), "exit", res.Exit, "ms", res.Duration.Milliseconds())
	return res
}

const basePath = "/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath finds name in the last PATH= of env.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := basePath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in %s", name, path)
}

// capped is a buffer that keeps the first MaxOutput bytes.
type capped struct {
	buf     bytes.Buffer
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	room := MaxOutput - c.buf.Len()
	if room < len(p) {
		c.dropped += len(p) - max(room, 0)
		p = p[:max(room, 0)]
	}
	c.buf.Write(p)
	return n, nil
}

func (c *capped) bytes() []byte {
	if c.dropped > 0 {
		fmt.Fprintf(&c.buf, "\n[lab agent: %d bytes dropped]\n", c.dropped)
	}
	return c.buf.Bytes()
}

// ports finds virtio-serial ports by name without udev.
type ports struct {
	sys, dev string // /sys/class/virtio-ports, /dev
	mknod    func(path string, mode uint32, dev int) error
}

// find returns the device path of the port named name: the udev symlink
// if there is one, else /dev/vportNpM from sysfs, made with mknod from its
// dev file when devtmpfs has not made it.
func (p ports) find(name string) (string, error) {
	if link := filepath.Join(p.dev, "virtio-ports", name); exists(link) {
		return link, nil
	}
	entries, err := os.ReadDir(p.sys)
	if err != nil {
		return "", fmt.Errorf("virtio-serial port %s: %w", name, err)
	}
	for _, e := range entries {
		got, err := os.ReadFile(filepath.Join(p.sys, e.Name(), "name"))
		if err != nil || strings.TrimSpace(string(got)) != name {
			continue
		}
		node := filepath.Join(p.dev, e.Name())
		if exists(node) {
			return node, nil
		}
		raw, err := os.ReadFile(filepath.Join(p.sys, e.Name(), "dev"))
		if err != nil {
			return "", fmt.Errorf("virtio-serial port %s: %w", name, err)
		}
		maj, mnr, ok := strings.Cut(strings.TrimSpace(string(raw)), ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(mnr, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return "", fmt.Errorf("virtio-serial port %s: bad dev %q", name, raw)
		}
		if err := p.mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil {
			return "", fmt.Errorf("virtio-serial port %s: mknod %s: %w", name, node, err)
		}
		return node, nil
	}
	return "", fmt.Errorf("virtio-serial port %s: not found in %s", name, p.sys)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
