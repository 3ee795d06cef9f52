// Package nfs is the NFS layer of the active head: the kernel nfsd with
// nfs-utils' rpcbind, rpc.statd, rpc.mountd, nfsdcld and exportfs.
//
// What makes it fail over cleanly (DESIGN.md, "NFS and SMB failover
// essentials"): every export has a fixed fsid; both heads use the pair's
// name as NFSv4 server scope (see inScope); the v4 client records
// (recovery dir, nfsdcld, nfsdcltrack) and statd's monitor list live on
// the replicated filesystem, so the new head knows whom to let reclaim;
// grace and lease are short and written before nfsd starts; NFSv3 clients
// are told to reclaim locks by SM_NOTIFY sent from the VIP once it is up.
//
// The monitor makes real ONC RPC NULL calls to nfsd and, through the
// portmapper, to mountd.
package nfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// Name is the resource's name in the service graph.
const Name = "nfs"

// Config is the NFS server of the pair.
type Config struct {
	Scope        string // NFSv4 server scope: the pair's name, the same on both heads
	Versions     []string
	GraceSeconds int
	LeaseSeconds int
	Threads      int
	Exports      []Export
	Mountpoint   string // the replicated filesystem
	StateDir     string // below Mountpoint: follows the active head

	// System paths; tests point them into a temporary directory.
	ExportsFile string
	ConfFile    string
	ProcNFSD    string // nfsd filesystem
	NLMGrace    string // lockd's grace period sysctl
	PipeFS      string // rpc_pipefs, for nfsdcld's upcalls
	RPCBindDir  string
}

// DefaultThreads is the nfsd thread count; site.toml has no key for it yet.
const DefaultThreads = 16

// FromSite builds the NFS config from the site config. Both heads serve
// the same: node is for the one constructor shape, and checked.
func FromSite(sc *site.Config, node string) (Config, error) {
	if sc == nil {
		return Config{}, errorf("new", services.Config, "no site config")
	}
	if sc.Node(node) == nil {
		return Config{}, errorf("new", services.Config, "node %q is not in the site config", node)
	}
	n := sc.Services.NFS
	mnt := sc.Storage.Filesystem.Mountpoint
	c := Config{
		Scope: sc.Pair.Name, Versions: slices.Clone(n.Versions),
		GraceSeconds: n.GraceSeconds, LeaseSeconds: n.LeaseSeconds, Threads: DefaultThreads,
		Mountpoint: mnt, StateDir: filepath.Join(mnt, site.StateDir, "nfs"),
		ExportsFile: "/etc/exports", ConfFile: "/etc/nfs.conf.d/tandem.conf",
		ProcNFSD: "/proc/fs/nfsd", NLMGrace: "/proc/sys/fs/nfs/nlm_grace_period",
		PipeFS: "/run/rpc_pipefs", RPCBindDir: "/run/rpcbind",
	}
	for _, e := range n.Exports {
		c.Exports = append(c.Exports, Export{Path: e.Path, Clients: slices.Clone(e.Clients), Options: slices.Clone(e.Options), FSID: e.FSID.String()})
	}
	return c, c.check()
}

func (c Config) check() error {
	var errs []error
	if c.Scope == "" || strings.ContainsAny(c.Scope, " \t\n=") {
		errs = append(errs, fmt.Errorf("server scope %q", c.Scope))
	}
	if len(c.Versions) == 0 {
		errs = append(errs, errors.New("no NFS version"))
	}
	for _, v := range c.Versions {
		if v != "3" && v != "4.1" && v != "4.2" {
			errs = append(errs, fmt.Errorf("version %q (3, 4.1, 4.2)", v))
		}
	}
	if c.GraceSeconds < 10 || c.LeaseSeconds < 10 || c.Threads < 1 {
		errs = append(errs, fmt.Errorf("grace %d s, lease %d s, threads %d", c.GraceSeconds, c.LeaseSeconds, c.Threads))
	}
	if !filepath.IsAbs(c.Mountpoint) || !strings.HasPrefix(c.StateDir, c.Mountpoint+"/") {
		errs = append(errs, fmt.Errorf("state dir %q is not on the replicated filesystem %q", c.StateDir, c.Mountpoint))
	}
	for _, e := range c.Exports {
		switch p := e.Path; {
		case filepath.Clean(p) != p:
			errs = append(errs, fmt.Errorf("export %q: not a clean path", p))
		case within(p, c.StateDir) || within(c.StateDir, p):
			// Its clients could read and rewrite the recovery records.
			errs = append(errs, fmt.Errorf("export %s: covers the NFS state directory %s", p, c.StateDir))
		case !strings.HasPrefix(p, c.Mountpoint+"/"):
			errs = append(errs, fmt.Errorf("export %s: not below the replicated filesystem %s", p, c.Mountpoint))
		}
	}
	if _, err := RenderExports(c.Exports); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errorf("new", services.Config, "%w", errors.Join(errs...))
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// dirKind is the Kind of a failure to make a state or export directory:
// a planted symlink is refused (retrying cannot help), the rest retried.
func dirKind(err error) services.Kind {
	if errors.Is(err, errSymlink) {
		return services.Refused
	}
	return services.Failed
}

// prober makes the monitor's RPC calls; tests replace it.
type prober interface {
	Null(ctx context.Context, port uint16, prog, vers uint32) error
	GetPort(ctx context.Context, prog, vers uint32) (uint16, error)
}

type rpcProber struct{ host string }

func (p rpcProber) Null(ctx context.Context, port uint16, prog, vers uint32) error {
	return Null(ctx, net.JoinHostPort(p.host, strconv.Itoa(int(port))), prog, vers)
}

func (p rpcProber) GetPort(ctx context.Context, prog, vers uint32) (uint16, error) {
	return GetPort(ctx, p.host, prog, vers)
}

// Server is the NFS layer.
type Server struct {
	cfg   Config
	log   *slog.Logger
	run   runner
	start starter
	rpc   prober
	// mount mounts a pseudo filesystem; isMount says whether a path is
	// a mount point. Both are replaced in tests.
	mount    func(src, target, fstype string) error
	isMount  func(path string) (bool, error)
	binary   func(name string) bool
	scoped   func(scope string, fn func() error) error // inScope; tests run fn directly
	ready    time.Duration                             // how long a daemon may take to register
	watching func(pid int) bool                        // watchingPipe; tests fake it

	ops   sync.Mutex // one of Start, Stop or Warm at a time
	mu    sync.Mutex
	procs map[string]proc // daemons we started, by program name
}

var (
	_ services.Resource = (*Server)(nil)
	_ services.Warmer   = (*Server)(nil)
)

// Options are what the server needs beyond its Config. The tools, the
// daemons, mount(2) and the RPC probes are replaced by this package's
// tests through unexported fields.
type Options struct {
	Log *slog.Logger
}

// New returns the NFS server resource; it touches nothing.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		cfg: cfg, log: log.With("resource", Name), run: execRunner{}, start: execStarter{}, rpc: rpcProber{"127.0.0.1"},
		mount:   func(src, target, fstype string) error { return syscall.Mount(src, target, fstype, 0, "") },
		isMount: isMountpoint, binary: haveBinary, scoped: inScope, ready: 10 * time.Second, watching: watchingPipe,
		procs: map[string]proc{},
	}, nil
}

// Name implements services.Resource.
func (s *Server) Name() string { return Name }

func (s *Server) tool(ctx context.Context, op, name string, args ...string) error {
	r := s.run.Run(ctx, name, args...)
	return classify(op, r, name+" "+strings.Join(args, " "))
}

// nullVersion is the NFS version the monitor's NULL call uses.
func (s *Server) nullVersion() uint32 {
	if slices.Contains(s.cfg.Versions, "3") {
		return 3
	}
	return 4
}

// fail is the one constructor of this layer's errors; tool failures get
// their Kind from classify's rules, the rest from the caller.
func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

func (s *Server) errorf(op string, kind services.Kind, format string, a ...any) error {
	return errorf(op, kind, format, a...)
}

// Start brings NFS up in the order nfs-utils needs, grace and lease
// before any nfsd thread exists. It is idempotent: a running nfsd is
// left running and only the exports are re-synced.
func (s *Server) Start(ctx context.Context) error {
	const op = "start"
	s.ops.Lock()
	defer s.ops.Unlock()
	c := s.cfg
	// State written to the root filesystem would not follow a failover.
	if ok, err := s.isMount(c.Mountpoint); err != nil || !ok {
		return errorf(op, services.Failed, "%w: %s (%v)", ErrNotReplicated, c.Mountpoint, err)
	}
	for _, d := range StateDirs {
		if err := mkdirNoFollow(c.Mountpoint, filepath.Join(c.StateDir, d), 0o700); err != nil {
			return s.errorf(op, dirKind(err), "state dir: %w", err)
		}
	}
	for _, e := range c.Exports {
		// A new filesystem has no directories yet; exportfs would
		// refuse ("Failed to stat").
		if err := mkdirNoFollow(c.Mountpoint, e.Path, 0o755); err != nil {
			return s.errorf(op, dirKind(err), "export %s: %w", e.Path, err)
		}
	}
	exports, err := RenderExports(c.Exports)
	if err != nil {
		return fail(op, services.Config, err)
	}
	for path, data := range map[string][]byte{c.ExportsFile: exports, c.ConfFile: RenderNFSConf(c)} {
		if err := writeFile(path, data); err != nil {
			return s.errorf(op, services.Failed, "%v", err)
		}
	}
	if err := s.ensureFS(c.ProcNFSD, "nfsd", "threads"); err != nil {
		return errorf(op, services.Missing, "%w: %w", ErrNoNFSD, err)
	}
	running := s.threads() > 0
	if !running {
		if err := s.setTimes(); err != nil {
			return s.errorf(op, services.Failed, "%v", err)
		}
	}
	if err := s.ensureDaemons(ctx, op, running); err != nil {
		return err
	}
	if err := s.tool(ctx, op, "exportfs", "-ra"); err != nil {
		return err
	}
	if err := s.ensureDaemon(ctx, op, "rpc.mountd", []string{"-F"}, s.mountdAlive); err != nil {
		return err
	}
	if !running {
		s.waitTracker(ctx)
		err := s.scoped(c.Scope, func() error { return s.tool(ctx, op, "rpc.nfsd", nfsdArgs(c)...) })
		if err != nil {
			return err
		}
	}
	if s.threads() == 0 {
		return s.errorf(op, services.Failed, "rpc.nfsd ran but no nfsd thread is up (see the kernel log)")
	}
	if err := s.rpc.Null(ctx, 2049, ProgNFS, s.nullVersion()); err != nil {
		return s.errorf(op, services.KindOf(err), "nfsd does not answer: %v", err)
	}
	s.log.Info("nfs up", "scope", c.Scope, "versions", c.Versions, "grace_s", c.GraceSeconds, "lease_s", c.LeaseSeconds, "exports", len(c.Exports))
	return nil
}

// setTimes writes what must be in place before nfsd starts: writes after
// that fail with EBUSY. The recovery directory is for kernels that use
// legacy client tracking; nfsdcld and nfsdcltrack read theirs from the
// config drop-in.
func (s *Server) setTimes() error {
	c := s.cfg
	for name, v := range map[string]string{
		"nfsv4gracetime":   strconv.Itoa(c.GraceSeconds),
		"nfsv4leasetime":   strconv.Itoa(c.LeaseSeconds),
		"nfsv4recoverydir": filepath.Join(c.StateDir, "v4recovery"),
	} {
		if err := os.WriteFile(filepath.Join(c.ProcNFSD, name), []byte(v+"\n"), 0); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	// lockd's own grace period (NFSv3 locks) defaults to 5 x its 10 s
	// timeout; make it match. The file exists only with lockd loaded.
	if err := os.WriteFile(c.NLMGrace, []byte(strconv.Itoa(c.GraceSeconds)+"\n"), 0); err != nil {
		s.log.Warn("cannot set the NLM grace period", "err", err)
	}
	return nil
}

// ensureDaemons starts rpcbind, rpc.statd and nfsdcld unless running.
func (s *Server) ensureDaemons(ctx context.Context, op string, nfsdRunning bool) error {
	if err := s.ensureRPCBind(ctx, op); err != nil {
		return err
	}
	// nfsdcld first: it loads its database while the rest starts, and
	// must be watching for its pipe before nfsd starts (waitTracker).
	if !nfsdRunning && s.binary("nfsdcld") {
		s.startTracker()
	}
	// statd serves NLM (NFSv3 locks) only; NFSv4 keeps its own state.
	statd := []string{"-F", "--no-notify", "-P", filepath.Join(s.cfg.StateDir, "statd")}
	if slices.Contains(s.cfg.Versions, "3") {
		if err := s.ensureDaemon(ctx, op, "rpc.statd", statd, func(ctx context.Context) error {
			_, err := s.rpc.GetPort(ctx, ProgStatus, 1)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// startTracker starts nfsdcld, the NFSv4 client tracker, unless it runs.
func (s *Server) startTracker() {
	if err := s.ensureFS(s.cfg.PipeFS, "rpc_pipefs", "nfsd"); err != nil {
		s.log.Warn("no rpc_pipefs: nfsdcld not started", "err", err)
		return
	}
	s.mu.Lock()
	p, have := s.procs["nfsdcld"]
	s.mu.Unlock()
	if have && !exited(p) {
		return
	}
	p, err := s.start.Start("nfsdcld", "-F")
	if err != nil {
		s.log.Warn("nfsdcld did not start", "err", err)
		return
	}
	s.mu.Lock()
	s.procs["nfsdcld"] = p
	s.mu.Unlock()
}

// trackerWait bounds waitTracker.
const trackerWait = 3 * time.Second

// waitTracker waits until nfsdcld watches rpc_pipefs for its pipe. The
// kernel makes the pipe as nfsd starts and gives nfsdcld one second to
// open it, then falls back to another client tracker for the whole boot
// (the nfsdcltrack helper, run for every client); a just-started
// nfsdcld still loading its database under emulation misses that
// second.
func (s *Server) waitTracker(ctx context.Context) {
	s.mu.Lock()
	p := s.procs["nfsdcld"]
	s.mu.Unlock()
	if p == nil {
		return
	}
	deadline := time.Now().Add(trackerWait)
	for !exited(p) && !s.watching(p.Pid()) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.log.Warn("nfsdcld is not watching for its pipe yet; starting nfsd anyway", "waited", trackerWait)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watchingPipe reports whether process pid holds an inotify descriptor,
// which nfsdcld sets up once its database is open.
func watchingPipe(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == "anon_inode:inotify" {
			return true
		}
	}
	return false
}

func (s *Server) ensureRPCBind(ctx context.Context, op string) error {
	if err := os.MkdirAll(s.cfg.RPCBindDir, 0o755); err != nil {
		return s.errorf(op, services.Failed, "%v", err)
	}
	return s.ensureDaemon(ctx, op, "rpcbind", []string{"-f"}, func(ctx context.Context) error {
		return s.rpc.Null(ctx, 111, ProgPortmap, 2)
	})
}

// ensureDaemon starts name unless alive answers, then waits until it does.
func (s *Server) ensureDaemon(ctx context.Context, op, name string, args []string, alive func(context.Context) error) error {
	quick, cancel := context.WithTimeout(ctx, time.Second)
	err := alive(quick)
	cancel()
	if err == nil {
		return nil
	}
	s.mu.Lock()
	p := s.procs[name]
	s.mu.Unlock()
	if p == nil || exited(p) {
		if p, err = s.start.Start(name, args...); err != nil {
			return classify(op, result{Exit: -1, Err: err}, name)
		}
		s.mu.Lock()
		s.procs[name] = p
		s.mu.Unlock()
	}
	deadline := time.Now().Add(s.ready)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err = alive(actx)
		cancel()
		switch {
		case err == nil:
			return nil
		case exited(p):
			return s.errorf(op, services.Failed, "%s exited at start: %v", name, err)
		case ctx.Err() != nil:
			return s.errorf(op, services.Timeout, "%s did not register: %v", name, err)
		case time.Now().After(deadline):
			return s.errorf(op, services.Failed, "%s did not register within %s: %v", name, s.ready, err)
		}
		time.Sleep(min(20*time.Millisecond, s.ready/10))
	}
}

func exited(p proc) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// warmArgs ask the programs a start runs for their version or usage:
// nothing starts, nothing is read. sm-notify is left out: with a wrong
// flag it would be one typo away from notifying clients.
var warmArgs = [][]string{
	{"rpc.statd", "--version"},
	{"nfsdcld", "--help"},
	{"exportfs", "--help"},
	{"rpc.nfsd", "--help"},
}

// Warm readies the standby for a start: it runs each nfs-utils program
// once, and starts rpcbind and rpc.mountd, which keep no state of their
// own (mountd answers from the export table that Start loads). A start
// finds them registered and goes straight on; Stop ends them with the
// rest. Exit codes of the queries mean nothing; a missing program shows
// at Start.
func (s *Server) Warm(ctx context.Context) error {
	s.ops.Lock()
	defer s.ops.Unlock()
	for _, a := range warmArgs {
		if s.binary(a[0]) {
			s.run.Run(ctx, a[0], a[1:]...)
		}
	}
	if err := s.ensureRPCBind(ctx, "warm"); err != nil {
		return err
	}
	return s.ensureDaemon(ctx, "warm", "rpc.mountd", []string{"-F"}, s.mountdAlive)
}

// Stop takes NFS down in the reverse order: unexport, stop the nfsd
// threads (which drops v4 state and NLM locks and lets the filesystem
// unmount), flush the export caches, then stop the daemons.
func (s *Server) Stop(ctx context.Context) error {
	const op = "stop"
	s.ops.Lock()
	defer s.ops.Unlock()
	var errs []error
	if _, err := os.Stat(filepath.Join(s.cfg.ProcNFSD, "threads")); err == nil {
		if err := s.tool(ctx, op, "exportfs", "-ua"); err != nil {
			errs = append(errs, err)
		}
		if err := s.tool(ctx, op, "rpc.nfsd", "0"); err != nil {
			errs = append(errs, err)
		}
		if err := s.tool(ctx, op, "exportfs", "-f"); err != nil {
			s.log.Warn("exportfs -f", "err", err)
		}
	}
	for _, name := range []string{"rpc.mountd", "nfsdcld", "rpc.statd", "rpcbind"} {
		if err := s.stopDaemon(ctx, name); err != nil {
			errs = append(errs, s.errorf(op, services.Failed, "%v", err))
		}
	}
	if n := s.threads(); n > 0 {
		errs = append(errs, s.errorf(op, services.Failed, "%d nfsd threads still running", n))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.log.Info("nfs down")
	return nil
}

// stopDaemon ends a daemon we started: SIGTERM, then SIGKILL.
func (s *Server) stopDaemon(ctx context.Context, name string) error {
	s.mu.Lock()
	p := s.procs[name]
	delete(s.procs, name)
	s.mu.Unlock()
	if p == nil || exited(p) {
		return nil
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
		return nil
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	p.Signal(syscall.SIGKILL)
	select {
	case <-p.Done():
		return nil
	case <-time.After(2 * time.Second):
		return fmt.Errorf("%s (pid %d) does not exit", name, p.Pid())
	}
}

// Monitor checks for real that nfsd and mountd answer RPC NULL calls,
// that statd is registered when NFSv3 is served, that the daemons we
// started still run, and that the kernel serves the configured versions.
func (s *Server) Monitor(ctx context.Context) error {
	const op = "monitor"
	if s.threads() == 0 {
		return s.errorf(op, services.Failed, "no nfsd threads")
	}
	if err := s.rpc.Null(ctx, 2049, ProgNFS, s.nullVersion()); err != nil {
		return s.errorf(op, rpcKind(err), "nfsd NULL call: %v", err)
	}
	if err := s.mountdAlive(ctx); err != nil {
		return s.errorf(op, rpcKind(err), "%v", err)
	}
	if slices.Contains(s.cfg.Versions, "3") {
		if _, err := s.rpc.GetPort(ctx, ProgStatus, 1); err != nil {
			return s.errorf(op, rpcKind(err), "rpc.statd not registered (NFSv3 locks cannot recover): %v", err)
		}
	}
	s.mu.Lock()
	for name, p := range s.procs {
		if exited(p) {
			s.mu.Unlock()
			return s.errorf(op, services.Failed, "%s exited", name)
		}
	}
	s.mu.Unlock()
	if v, err := os.ReadFile(filepath.Join(s.cfg.ProcNFSD, "versions")); err == nil {
		if diff := versionDiff(string(v), wantVersions(s.cfg)); diff != "" {
			return s.errorf(op, services.Failed, "nfsd serves the wrong versions: %s", diff)
		}
	}
	return nil
}

// mountdAlive NULL-calls mountd's MOUNT v3 through the portmapper. A
// site without NFSv3 has mountd register no MOUNT version at all (it only
// answers the kernel's export upcalls), so there the process must run.
func (s *Server) mountdAlive(ctx context.Context) error {
	if !slices.Contains(s.cfg.Versions, "3") {
		s.mu.Lock()
		p := s.procs["rpc.mountd"]
		s.mu.Unlock()
		if p == nil || exited(p) {
			return errors.New("rpc.mountd is not running")
		}
		return nil
	}
	port, err := s.rpc.GetPort(ctx, ProgMount, 3)
	if err != nil {
		return fmt.Errorf("mountd not registered: %w", err)
	}
	if err := s.rpc.Null(ctx, port, ProgMount, 3); err != nil {
		return fmt.Errorf("mountd NULL call on port %d: %w", port, err)
	}
	return nil
}

func rpcKind(err error) services.Kind {
	if errors.Is(err, context.DeadlineExceeded) {
		return services.Timeout
	}
	return services.Failed
}

// versionDiff compares /proc/fs/nfsd/versions ("-2 +3 +4 -4.0 +4.1 +4.2")
// with the wanted set and describes the differences.
func versionDiff(procVersions string, want map[string]bool) string {
	got := map[string]bool{}
	for _, f := range strings.Fields(procVersions) {
		if len(f) > 1 {
			got[f[1:]] = f[0] == '+'
		}
	}
	var diffs []string
	for _, v := range []string{"3", "4.0", "4.1", "4.2"} {
		g, known := got[v]
		if known && g != want[v] {
			diffs = append(diffs, fmt.Sprintf("%s is %s", v, map[bool]string{true: "on", false: "off"}[g]))
		}
	}
	return strings.Join(diffs, ", ")
}

// threads reads the running nfsd thread count (0 if none or unknown).
func (s *Server) threads() int {
	b, err := os.ReadFile(filepath.Join(s.cfg.ProcNFSD, "threads"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// ensureFS mounts a pseudo filesystem at dir unless probe is already
// there.
func (s *Server) ensureFS(dir, fstype, probe string) error {
	if _, err := os.Stat(filepath.Join(dir, probe)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := s.mount(fstype, dir, fstype); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, probe)); err != nil {
		return fmt.Errorf("%s mounted on %s but %s missing: %w", fstype, dir, probe, err)
	}
	return nil
}

// NotifyClients sends SM_NOTIFY from the VIP to every NFSv3 client in
// statd's replicated monitor list, so they reclaim their locks on this
// head. The VIP layer calls it once the address is up (vip.Config.OnUp):
// clients know the server by the VIP, and sm-notify must bind to it.
func (s *Server) NotifyClients(ctx context.Context, vip netip.Addr) error {
	if !slices.Contains(s.cfg.Versions, "3") {
		return nil
	}
	// -f: notify although this is no reboot; sm-notify forks and keeps
	// retrying unanswered clients in the background.
	return s.tool(ctx, "notify", "sm-notify", "-f", "-v", vip.String(), "-P", filepath.Join(s.cfg.StateDir, "statd"))
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// isMountpoint reports whether path is the root of a mounted filesystem.
func isMountpoint(path string) (bool, error) {
	var st, parent syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return false, err
	}
	if err := syscall.Stat(filepath.Dir(path), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino, nil
}

func haveBinary(name string) bool {
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}
