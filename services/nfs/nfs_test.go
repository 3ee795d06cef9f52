package nfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
)

// world fakes the kernel, the tools and the daemons, and logs every step
// in order, so tests can check what happened before what.
type world struct {
	t     *testing.T
	mu    sync.Mutex
	log   []string
	proc  string // fake /proc/fs/nfsd
	up    map[string]bool
	fail  map[string]result // tool command line -> failure
	procs map[string]*fakeProc
}

type fakeProc struct {
	name string
	done chan struct{}
	w    *world
}

func (p *fakeProc) Pid() int              { return 4242 }
func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) Signal(os.Signal) error {
	p.w.step("kill " + p.name)
	p.w.mu.Lock()
	p.w.up[p.name] = false
	p.w.mu.Unlock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	return nil
}

func (w *world) step(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, s)
}

func (w *world) Run(_ context.Context, name string, args ...string) result {
	line := name + " " + strings.Join(args, " ")
	w.step(line)
	w.mu.Lock()
	r, failing := w.fail[line]
	w.mu.Unlock()
	if failing {
		return r
	}
	switch {
	case slices.Contains(args, "--help") || slices.Contains(args, "--version"):
		// a query: nothing changes
	case name == "rpc.nfsd" && args[len(args)-1] == "0":
		os.WriteFile(filepath.Join(w.proc, "threads"), []byte("0\n"), 0o644)
	case name == "rpc.nfsd":
		// The kernel accepts the times only before threads exist.
		for _, f := range []string{"nfsv4gracetime", "nfsv4leasetime"} {
			if _, err := os.Stat(filepath.Join(w.proc, f)); err != nil {
				w.t.Errorf("rpc.nfsd ran before %s was written", f)
			}
		}
		os.WriteFile(filepath.Join(w.proc, "threads"), []byte(args[len(args)-1]+"\n"), 0o644)
		on := map[string]string{"3": "+", "4.0": "+", "4.1": "+", "4.2": "+"}
		for i := 0; i+1 < len(args); i++ {
			switch {
			case args[i] == "-N" && args[i+1] == "4":
				on["4.0"], on["4.1"], on["4.2"] = "-", "-", "-"
			case args[i] == "-N":
				on[args[i+1]] = "-"
			}
		}
		v := fmt.Sprintf("-2 %s3 +4 %s4.0 %s4.1 %s4.2\n", on["3"], on["4.0"], on["4.1"], on["4.2"])
		os.WriteFile(filepath.Join(w.proc, "versions"), []byte(v), 0o644)
		w.mu.Lock()
		w.up["nfsd"] = true
		w.mu.Unlock()
	}
	return result{}
}

func (w *world) Start(name string, args ...string) (proc, error) {
	w.step("start " + name + " " + strings.Join(args, " "))
	p := &fakeProc{name: name, done: make(chan struct{}), w: w}
	w.mu.Lock()
	w.up[name] = true
	w.procs[name] = p
	w.mu.Unlock()
	return p, nil
}

var progDaemon = map[uint32]string{ProgPortmap: "rpcbind", ProgMount: "rpc.mountd", ProgStatus: "rpc.statd", ProgNFS: "nfsd"}

func (w *world) Null(ctx context.Context, port uint16, prog, vers uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.up[progDaemon[prog]] {
		return fmt.Errorf("dial tcp 127.0.0.1:%d: connection refused", port)
	}
	return nil
}

func (w *world) GetPort(ctx context.Context, prog, vers uint32) (uint16, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.up["rpcbind"] {
		return 0, errors.New("connection refused")
	}
	if !w.up[progDaemon[prog]] {
		return 0, ErrNotMapped
	}
	return 20048, nil
}

func newWorld(t *testing.T, versions ...string) (*Server, *world) {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, proc: filepath.Join(dir, "proc-fs-nfsd"), up: map[string]bool{}, fail: map[string]result{}, procs: map[string]*fakeProc{}}
	mnt := filepath.Join(dir, "srv", "tandem")
	if err := os.MkdirAll(mnt, 0o755); err != nil { // the mounted filesystem
		t.Fatal(err)
	}
	if len(versions) == 0 {
		versions = []string{"3", "4.1", "4.2"}
	}
	cfg := Config{
		Scope: "lab", Versions: versions, GraceSeconds: 15, LeaseSeconds: 15, Threads: 8,
		Exports:    []Export{{Path: filepath.Join(mnt, "vm"), Clients: []string{"10.0.0.0/24"}, Options: []string{"rw", "sync"}, FSID: "1"}},
		Mountpoint: mnt, StateDir: filepath.Join(mnt, ".tandem", "nfs"),
		ExportsFile: filepath.Join(dir, "etc", "exports"), ConfFile: filepath.Join(dir, "etc", "nfs.conf.d", "tandem.conf"),
		ProcNFSD: w.proc, NLMGrace: filepath.Join(dir, "nlm_grace_period"), PipeFS: filepath.Join(dir, "rpc_pipefs"),
		RPCBindDir: filepath.Join(dir, "run-rpcbind"),
	}
	s, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.run, s.start, s.rpc = w, w, w
	s.ready = time.Second
	// nfsdcld watches for its pipe from its third look on.
	looks := 0
	s.watching = func(int) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.up["nfsdcld"] {
			return false
		}
		if looks++; looks < 3 {
			return false
		}
		w.log = append(w.log, "nfsdcld watching")
		return true
	}
	s.isMount = func(string) (bool, error) { return true, nil }
	s.binary = func(string) bool { return true }
	s.scoped = func(scope string, fn func() error) error {
		w.log = append(w.log, "scope "+scope)
		return fn()
	}
	s.mount = func(src, target, fstype string) error {
		w.step("mount " + fstype)
		probe := map[string]string{"nfsd": "threads", "rpc_pipefs": "nfsd"}[fstype]
		if fstype == "nfsd" {
			return os.WriteFile(filepath.Join(target, probe), []byte("0\n"), 0o644)
		}
		return os.MkdirAll(filepath.Join(target, probe), 0o755)
	}
	return s, w
}

func indexOf(t *testing.T, log []string, prefix string) int {
	t.Helper()
	for i, l := range log {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	t.Fatalf("%q never happened; log:\n%s", prefix, strings.Join(log, "\n"))
	return -1
}

func TestStartOrderAndState(t *testing.T) {
	s, w := newWorld(t)
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	order := []string{"mount nfsd", "start rpcbind -f", "mount rpc_pipefs", "start nfsdcld -F", "start rpc.statd -F --no-notify -P",
		"exportfs -ra", "start rpc.mountd -F", "nfsdcld watching", "scope lab", "rpc.nfsd -G 15 -L 15 -U -V 3 -N 4.0 -V 4.1 -V 4.2 8"}
	last := -1
	for _, step := range order {
		i := indexOf(t, w.log, step)
		if i < last {
			t.Errorf("%q out of order; log:\n%s", step, strings.Join(w.log, "\n"))
		}
		last = i
	}
	for file, want := range map[string]string{"nfsv4gracetime": "15\n", "nfsv4leasetime": "15\n", "nfsv4recoverydir": s.cfg.StateDir + "/v4recovery\n"} {
		if b, _ := os.ReadFile(filepath.Join(w.proc, file)); string(b) != want {
			t.Errorf("%s = %q, want %q", file, b, want)
		}
	}
	if b, _ := os.ReadFile(s.cfg.NLMGrace); string(b) != "15\n" {
		t.Errorf("nlm grace %q", b)
	}
	for _, d := range StateDirs {
		if _, err := os.Stat(filepath.Join(s.cfg.StateDir, d)); err != nil {
			t.Errorf("state dir %s: %v", d, err)
		}
	}
	if _, err := os.Stat(s.cfg.Exports[0].Path); err != nil {
		t.Errorf("export dir not created: %v", err)
	}
	if b, _ := os.ReadFile(s.cfg.ExportsFile); !strings.Contains(string(b), "fsid=1") {
		t.Errorf("exports file: %s", b)
	}
	if err := s.Monitor(ctx); err != nil {
		t.Fatalf("monitor after start: %v", err)
	}

	// Start again: nothing restarts, the exports are re-synced.
	n := len(w.log)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range w.log[n:] {
		if strings.HasPrefix(l, "start ") || strings.HasPrefix(l, "rpc.nfsd") {
			t.Errorf("second start did %q", l)
		}
	}

	// Stop in reverse.
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopOrder := []string{"exportfs -ua", "rpc.nfsd 0", "exportfs -f", "kill rpc.mountd", "kill nfsdcld", "kill rpc.statd", "kill rpcbind"}
	last = n
	for _, step := range stopOrder {
		i := indexOf(t, w.log[n:], step) + n
		if i < last {
			t.Errorf("stop step %q out of order", step)
		}
		last = i
	}
	if err := s.Monitor(ctx); services.KindOf(err) != services.Failed {
		t.Errorf("monitor after stop: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

// The standby's warming starts only the stateless daemons and touches
// neither the kernel's nfsd nor the replicated state; the takeover's start
// then finds them registered and starts only the rest.
func TestWarmThenStart(t *testing.T) {
	s, w := newWorld(t)
	ctx := context.Background()
	if err := s.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	var started []string
	for _, l := range w.log {
		if strings.HasPrefix(l, "start ") || strings.HasPrefix(l, "mount ") || strings.HasPrefix(l, "exportfs -r") ||
			strings.HasPrefix(l, "rpc.nfsd -") && !strings.HasPrefix(l, "rpc.nfsd --help") {
			started = append(started, l)
		}
	}
	if want := []string{"start rpcbind -f", "start rpc.mountd -F"}; !slices.Equal(started, want) {
		t.Errorf("warming did %q, want only %q", started, want)
	}
	if _, err := os.Stat(s.cfg.StateDir); err == nil {
		t.Errorf("warming made the state dir on the replicated filesystem")
	}
	n := len(w.log)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range w.log[n:] {
		if l == "start rpcbind -f" || l == "start rpc.mountd -F" {
			t.Errorf("start ran %q again after warming", l)
		}
	}
	indexOf(t, w.log[n:], "start rpc.statd")
	indexOf(t, w.log[n:], "rpc.nfsd -G")
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	indexOf(t, w.log[n:], "kill rpcbind")
	indexOf(t, w.log[n:], "kill rpc.mountd")
}

func TestMonitorFailures(t *testing.T) {
	cases := []struct {
		name     string
		versions []string
		kill     string
		want     string
	}{
		{"nfsd gone", nil, "nfsd", "nfsd NULL call"},
		{"mountd gone", nil, "rpc.mountd", "mountd"},
		{"statd gone with v3", nil, "rpc.statd", "rpc.statd"},
		{"statd does not matter without v3", []string{"4.2"}, "rpc.statd", ""},
		{"mountd process gone without v3", []string{"4.2"}, "rpc.mountd", "rpc.mountd is not running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, w := newWorld(t, tc.versions...)
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if p := w.procs[tc.kill]; p != nil {
				p.Signal(os.Kill)
			} else {
				w.up[tc.kill] = false
			}
			err := s.Monitor(context.Background())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if services.KindOf(err) != services.Failed || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStartRefusesWithoutReplicatedFS(t *testing.T) {
	s, w := newWorld(t)
	s.isMount = func(string) (bool, error) { return false, nil }
	err := s.Start(context.Background())
	if !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("err = %v", err)
	}
	if len(w.log) != 0 {
		t.Errorf("did %v", w.log)
	}
}

func TestStartToolErrors(t *testing.T) {
	s, w := newWorld(t)
	w.fail["exportfs -ra"] = result{Exit: 1, Err: errors.New("exit status 1"),
		Stderr: "exportfs: /srv/tandem/vm does not support NFS export\n"}
	err := s.Start(context.Background())
	if !errors.Is(err, ErrExportPath) || services.KindOf(err) != services.Config {
		t.Fatalf("err = %v", err)
	}
	if slices.ContainsFunc(w.log, func(l string) bool { return strings.HasPrefix(l, "rpc.nfsd") }) {
		t.Error("nfsd started with broken exports")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		stderr string
		want   error
		kind   services.Kind
	}{
		{"rpc.nfsd: Unable to access /proc/fs/nfsd errno 2 (No such file or directory).\nPlease try, as root, 'mount -t nfsd nfsd /proc/fs/nfsd' and then restart rpc.nfsd to correct the problem\n", ErrNoNFSD, services.Missing},
		{"exportfs: Failed to stat /srv/tandem/vm: No such file or directory\n", ErrExportPath, services.Config},
		{"exportfs: /srv/tandem/vm does not support NFS export\n", ErrExportPath, services.Config},
		{"exportfs: /mnt/fuse requires fsid= for NFS export\n", ErrExportPath, services.Config},
		{"rpc.nfsd: unable to bind AF_INET TCP socket: errno 98 (Address already in use)\n", ErrPortInUse, services.Failed},
		{"rpc.nfsd: unable to set any sockets for nfsd\n", ErrPortInUse, services.Failed},
		{"rpc.nfsd: Unable to set server scope: Operation not permitted\n", ErrScope, services.Failed},
		{"4.3: unsupported minor version\n", ErrVersion, services.Config},
		{"2: Unsupported version\n", ErrVersion, services.Config},
		{"rpc.nfsd: no version specified\n", ErrVersion, services.Config},
		{"exportfs: could not open /var/lib/nfs/.etab.lock for locking: errno 30 (Read-only file system)\n", services.ErrToolFailed, services.Failed},
	}
	for _, tc := range cases {
		err := classify("start", result{Stderr: tc.stderr, Exit: 1, Err: errors.New("exit status 1")}, "x")
		if !errors.Is(err, tc.want) || services.KindOf(err) != tc.kind {
			t.Errorf("%q: %v (kind %v), want %v/%v", tc.stderr, err, services.KindOf(err), tc.want, tc.kind)
		}
	}
	err := classify("start", result{Exit: -1, Err: &exec.Error{Name: "rpc.nfsd", Err: exec.ErrNotFound}}, "rpc.nfsd")
	if !errors.Is(err, services.ErrToolMissing) || services.KindOf(err) != services.Missing {
		t.Errorf("missing binary: %v", err)
	}
	err = classify("start", result{Exit: -1, Err: fmt.Errorf("rpc.nfsd: %w", context.DeadlineExceeded)}, "rpc.nfsd")
	if services.KindOf(err) != services.Timeout {
		t.Errorf("timeout: %v", err)
	}
	if classify("start", result{}, "x") != nil {
		t.Error("success classified")
	}
}

// watchingPipe reads a real /proc: this test process holds an inotify
// descriptor only while it has one open.
func TestWatchingPipe(t *testing.T) {
	if watchingPipe(os.Getpid()) {
		t.Fatal("watching before any inotify descriptor exists")
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if !watchingPipe(os.Getpid()) {
		t.Error("not watching with an inotify descriptor open")
	}
	unix.Close(fd)
	if watchingPipe(os.Getpid()) || watchingPipe(-1) {
		t.Error("watching after closing it, or for no process")
	}
}
