package labagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakePort behaves like a virtio-serial port seen from the guest: reads
// return EOF while no host is connected, writes wait for a host.
type fakePort struct {
	mu    sync.Mutex
	cond  *sync.Cond
	guest net.Conn // guest end of the current host connection, or nil
}

func newFakePort() *fakePort {
	p := &fakePort{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	g := p.guest
	p.mu.Unlock()
	if g == nil {
		return 0, io.EOF
	}
	n, err := g.Read(b)
	if err != nil {
		p.mu.Lock()
		if p.guest == g {
			p.guest = nil
		}
		p.mu.Unlock()
		return n, io.EOF
	}
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	for p.guest == nil {
		p.cond.Wait()
	}
	g := p.guest
	p.mu.Unlock()
	return g.Write(b)
}

// dial is a Client's dialer: each call is a new host connection.
func (p *fakePort) dial(context.Context) (net.Conn, error) {
	host, guest := net.Pipe()
	p.mu.Lock()
	p.guest = guest
	p.cond.Broadcast()
	p.mu.Unlock()
	return host, nil
}

func startAgent(t *testing.T) *fakePort {
	t.Helper()
	p := newFakePort()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(ctx, p, slog.New(slog.DiscardHandler), 10*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second): // generous: a liveness check, on a loaded host
			t.Error("serve did not stop")
		}
	})
	return p
}

func TestRun(t *testing.T) {
	p := startAgent(t)
	c := newClient(p.dial)
	defer c.Close()
	tests := []struct {
		name              string
		req               Request
		exit              int
		stdout, stderr    string
		wantErr, timedOut bool
	}{
		{name: "echo", req: Request{Argv: []string{"echo", "hello"}}, stdout: "hello\n"},
		{name: "exit status", req: Request{Argv: []string{"sh", "-c", "echo oops >&2; exit 3"}}, exit: 3, stderr: "oops\n"},
		{name: "stdin", req: Request{Argv: []string{"cat"}, Stdin: []byte("in\x00put")}, stdout: "in\x00put"},
		{name: "env", req: Request{Argv: []string{"sh", "-c", "echo $FOO"}, Env: []string{"FOO=bar"}}, stdout: "bar\n"},
		{name: "not found", req: Request{Argv: []string{"/no/such/tool"}}, exit: -1, wantErr: true},
		{name: "timeout", req: Request{Argv: []string{"sleep", "10"}, Timeout: 200 * time.Millisecond}, exit: -1, wantErr: true, timedOut: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := c.Do(ctx, tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.timedOut != errors.Is(err, ErrTimedOut) {
				t.Errorf("err = %v, want timed out %v", err, tc.timedOut)
			}
			if res.Exit != tc.exit || string(res.Stdout) != tc.stdout || string(res.Stderr) != tc.stderr {
				t.Errorf("got exit %d stdout %q stderr %q, want %d %q %q", res.Exit, res.Stdout, res.Stderr, tc.exit, tc.stdout, tc.stderr)
			}
			if tc.timedOut && res.Duration > 5*time.Second {
				t.Errorf("timeout took %v", res.Duration)
			}
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	p := startAgent(t)
	c := newClient(p.dial)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Run(ctx, "sleep", "0.5"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("5 × sleep 0.5 took %v: requests ran one at a time", d)
	}
}

// A host that goes away (even mid-line) and a new one that connects get
// a working agent: EOF on the port is not the end.
func TestReconnect(t *testing.T) {
	p := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		c := newClient(p.dial)
		res, err := c.Run(ctx, "echo", "round")
		if err != nil || string(res.Stdout) != "round\n" {
			t.Fatalf("round %d: %+v, %v", i, res, err)
		}
		c.mu.Lock()
		c.conn.Write([]byte(`{"id":"partial","argv":["ec`)) // never finished
		c.mu.Unlock()
		c.Close()
	}
}

// The deadline of the host's ctx becomes the guest's timeout.
func TestDeadlineBecomesTimeout(t *testing.T) {
	p := startAgent(t)
	c := newClient(p.dial)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Run(ctx, "sleep", "10")
	if !errors.Is(err, ErrTimedOut) {
		t.Fatalf("err = %v, want ErrTimedOut (result %+v)", err, res)
	}
}

func TestStartWithoutChannelIsNoop(t *testing.T) {
	Start(context.Background(), "", nil) // must return and start nothing
}

func TestFindPort(t *testing.T) {
	const name = "org.tandem.lab.0"
	tests := []struct {
		name      string
		setup     func(t *testing.T, sys, dev string)
		want      string // relative to dev
		wantMknod string // "maj:min"
		wantErr   bool
	}{
		{name: "udev link", setup: func(t *testing.T, sys, dev string) {
			port(t, sys, "vport1p1", name, "250:1")
			touch(t, filepath.Join(dev, "virtio-ports", name))
		}, want: "virtio-ports/" + name},
		{name: "devtmpfs node", setup: func(t *testing.T, sys, dev string) {
			port(t, sys, "vport1p1", "other", "250:1")
			port(t, sys, "vport1p2", name, "250:2")
			touch(t, filepath.Join(dev, "vport1p2"))
		}, want: "vport1p2"},
		{name: "mknod", setup: func(t *testing.T, sys, dev string) {
			port(t, sys, "vport3p1", name+"\n", "251:7\n")
		}, want: "vport3p1", wantMknod: "251:7"},
		{name: "absent", setup: func(t *testing.T, sys, dev string) {
			port(t, sys, "vport1p1", "other", "250:1")
		}, wantErr: true},
		{name: "no virtio-serial", setup: func(t *testing.T, sys, dev string) { os.RemoveAll(sys) }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
			os.MkdirAll(sys, 0o755)
			os.MkdirAll(dev, 0o755)
			tc.setup(t, sys, dev)
			var mknod string
			p := ports{sys: sys, dev: dev, mknod: func(path string, mode uint32, d int) error {
				mknod = fmt.Sprintf("%d:%d", unix.Major(uint64(d)), unix.Minor(uint64(d)))
				return os.WriteFile(path, nil, 0o600)
			}}
			got, err := p.find(name)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if want := filepath.Join(dev, tc.want); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if mknod != tc.wantMknod {
				t.Errorf("mknod %q, want %q", mknod, tc.wantMknod)
			}
		})
	}
}

func port(t *testing.T, sys, vport, name, dev string) {
	t.Helper()
	d := filepath.Join(sys, vport)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "name"), []byte(name), 0o644)
	os.WriteFile(filepath.Join(d, "dev"), []byte(dev), 0o644)
}

func touch(t *testing.T, p string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
