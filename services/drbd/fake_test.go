package drbd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRun answers tool calls from a script keyed by the command line
// (without drbdadm's "-c <file>"), and records every call.
type fakeRun struct {
	mu    sync.Mutex
	calls []string
	resp  map[string][]result // consumed in order; the last one repeats
}

func newFake() *fakeRun { return &fakeRun{resp: map[string][]result{}} }

func (f *fakeRun) on(cmd string, r ...result) *fakeRun {
	f.resp[cmd] = append(f.resp[cmd], r...)
	return f
}

func ok(stdout string) result { return result{Stdout: stdout} }

func failed(exit int, stderr string) result {
	return result{Stderr: stderr, Exit: exit, Err: fmt.Errorf("exit status %d", exit)}
}

func (f *fakeRun) Run(_ context.Context, name string, args ...string) result {
	if len(args) >= 2 && args[0] == "-c" {
		args = args[2:]
	}
	key := name + " " + strings.Join(args, " ")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, key)
	q := f.resp[key]
	switch len(q) {
	case 0:
		return result{}
	case 1:
		return q[0]
	}
	f.resp[key] = q[1:]
	return q[0]
}

func (f *fakeRun) called(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// fakeStream serves one scripted events2 stream, then blocks until ctx ends.
type fakeStream struct{ lines string }

func (s fakeStream) Stream(ctx context.Context, name string, args ...string) (io.Reader, func() error, error) {
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, s.lines)
		<-ctx.Done()
		pw.Close()
	}()
	return pr, func() error { return ctx.Err() }, nil
}

func labConfig(t *testing.T, self string) Config {
	t.Helper()
	return Config{
		Resource: "r0", Minor: 0, Port: 7789, Protocol: "C", ResyncRateMiB: 100, Self: self,
		Nodes: [2]Node{
			{Name: "head-a", Disk: "/dev/md/tandem", Address: mustAddr("10.10.0.11")},
			{Name: "head-b", Disk: "/dev/md/tandem", Address: mustAddr("10.10.0.12")},
		},
		Secret:         strings.Repeat("ab", 24),
		HandlerCommand: DefaultHandlerCommand,
		ConfDir:        t.TempDir(), StateDir: t.TempDir(),
	}
}

func newTest(t *testing.T, cfg Config, f *fakeRun, lines string) *Resource {
	t.Helper()
	r, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r.run, r.stream = f, fakeStream{lines}
	r.libDir = filepath.Join(t.TempDir(), "var-lib-drbd")
	r.procDRBD = filepath.Join(t.TempDir(), "no-proc-drbd")
	r.readAt = func(string, int64, int) ([]byte, error) { return make([]byte, 8192), nil }
	r.pollEvery = time.Millisecond
	r.settleFor = 50 * time.Millisecond
	t.Cleanup(r.unwatch)
	return r
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	return err == nil
}

// want is the role the resource was last asked for.
func (r *Resource) want() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wantPrimary
}
