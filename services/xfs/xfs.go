// Package xfs is the filesystem layer: XFS on the LVM logical volume,
// mounted at storage.filesystem.mountpoint on the active head.
//
//   - Start mounts the LV, or makes the filesystem on a blank LV with
//     storage.filesystem.mkfs_if_blank; any other content is Refused.
//   - Stop unmounts, retrying while busy; never lazily, so a busy
//     filesystem is reported rather than hidden from the layers below.
//   - Monitor writes, fsyncs and reads back (O_DIRECT) a probe file, and
//     thaws a filesystem it finds frozen.
//
// docs/storage.md, "XFS", has the rules, the mount options and why.
package xfs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/site"
)

// Name is the layer's name in the service graph.
const Name = "xfs"

const (
	// MountFlags are the generic mount flags.
	MountFlags = unix.MS_NOATIME | unix.MS_NODEV | unix.MS_NOSUID
	// MountData are the XFS options.
	MountData = "inode64,logbsize=256k"
	// MinAlignBytes is the smallest device made with stripe alignment.
	MinAlignBytes = 4 << 30
	// ProbeFile is the probe's file, below the mountpoint.
	ProbeFile = site.StateDir + "/probe"
	// probeSize is one page: O_DIRECT needs block-aligned sizes.
	probeSize = 4096
)

// ErrMismatch: the probe read back something else than it wrote.
var ErrMismatch = errors.New("read back differs from what was written")

// Config is the filesystem, as the site config describes it.
type Config struct {
	Device     string // the LV
	Mountpoint string
	// MkfsIfBlank is storage.filesystem.mkfs_if_blank.
	MkfsIfBlank bool
	// StripeKiB and StripeWidth align the data to the RAID10 array
	// (MkfsSpec).
	StripeKiB, StripeWidth int
}

// FromSite builds node's Config. device is the LV below; "" means
// /dev/mapper/<vg>-<lv> from the config.
func FromSite(sc *site.Config, node, device string) (Config, error) {
	if sc == nil {
		return Config{}, configErr("no site config")
	}
	nd := sc.Node(node)
	if nd == nil {
		return Config{}, configErr("node %q is not in the site config", node)
	}
	fs := sc.Storage.Filesystem
	if fs.Type != "" && fs.Type != "xfs" {
		return Config{}, configErr("storage.filesystem.type %q: only xfs is supported", fs.Type)
	}
	if device == "" {
		device = "/dev/mapper/" + lvm.DMName(cmp.Or(sc.Storage.LVM.VG, site.DefaultVG), cmp.Or(sc.Storage.LVM.LV, site.DefaultLV))
	}
	c := Config{
		Device: device, Mountpoint: cmp.Or(fs.Mountpoint, site.DefaultMountpoint),
		MkfsIfBlank: fs.MkfsIfBlank,
		StripeKiB:   cmp.Or(sc.Storage.RAID.ChunkKiB, site.DefaultChunkKiB),
		StripeWidth: len(nd.Disks) / 2, // RAID10 near-2: half the disks carry distinct data
	}
	return c, c.check()
}

func (c Config) check() error {
	mnt := c.Mountpoint
	if !filepath.IsAbs(mnt) || filepath.Clean(mnt) != mnt || mnt == "/" {
		return configErr("storage.filesystem.mountpoint %q is not an absolute, clean path", mnt)
	}
	if c.Device == "" {
		return configErr("no device")
	}
	return nil
}

// Options are the paths and tools; the zero value is the real system.
type Options struct {
	// Mkfs and XFSAdmin are the binaries (from PATH by default).
	Mkfs, XFSAdmin string
	// ToolTimeout caps each mkfs.xfs/xfs_admin call (default 5 minutes).
	ToolTimeout time.Duration
	// MountInfo is /proc/self/mountinfo.
	MountInfo string
	// UnmountTries (default 10) and UnmountDelay (default 300 ms) bound
	// Stop's retries of a busy unmount.
	UnmountTries int
	UnmountDelay time.Duration
	// SyncSysctl is XFS's periodic log worker interval, default
	// /proc/sys/fs/xfs/xfssyncd_centisecs (see SyncCentisecs).
	SyncSysctl string
	Log        *slog.Logger
}

// SyncCentisecs is the interval (1 s, the kernel's minimum) at which
// XFS's log worker pushes all dirty metadata to its place on disk. The
// default, 30 s, lets a busy filesystem keep most of its log dirty, and
// the takeover head replays all of it before the mount returns: 1.7 s of
// a 2.5 s mount in the lab. A takeover then replays about a second's
// worth of metadata; the price is metadata written back sooner, which
// NFS's synchronous commits mostly pay for anyway.
const SyncCentisecs = 100

// Filesystem is the XFS resource.
type Filesystem struct {
	dev, mnt    string
	mkfsIfBlank bool
	stripeKiB   int
	stripeWidth int
	mkfs        Mkfs
	admin       Admin
	mountinfo   string
	syncSysctl  string
	m           mounter
	tries       int
	delay       time.Duration
	log         *slog.Logger
	probe       func(dir string) error
	thaw        func(mnt string) (bool, error)

	mu sync.Mutex // serialises Start and Stop

	bmu      sync.Mutex // guards inflight
	inflight string     // a syscall still blocked in the kernel
	since    time.Time
}

var _ services.Resource = (*Filesystem)(nil)

// New builds the resource; it touches nothing.
func New(cfg Config, opts Options) (*Filesystem, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resource", Name)
	f := &Filesystem{
		dev: cfg.Device, mnt: cfg.Mountpoint,
		mkfsIfBlank: cfg.MkfsIfBlank,
		stripeKiB:   cfg.StripeKiB,
		stripeWidth: cfg.StripeWidth,
		mkfs:        Mkfs{program{name: "mkfs.xfs", path: opts.Mkfs, timeout: opts.ToolTimeout, log: log}},
		admin:       Admin{program{name: "xfs_admin", path: opts.XFSAdmin, timeout: opts.ToolTimeout, log: log}},
		mountinfo:   cmp.Or(opts.MountInfo, "/proc/self/mountinfo"),
		syncSysctl:  cmp.Or(opts.SyncSysctl, "/proc/sys/fs/xfs/xfssyncd_centisecs"),
		m:           sysMounter{},
		tries:       opts.UnmountTries,
		delay:       opts.UnmountDelay,
		log:         log,
		probe:       probe,
		thaw:        thaw,
	}
	if f.tries <= 0 {
		f.tries = 10
	}
	if f.delay <= 0 {
		f.delay = 300 * time.Millisecond
	}
	return f, nil
}

// Name is the resource's name in the graph.
func (f *Filesystem) Name() string { return Name }

// Device is the LV the filesystem lives on.
func (f *Filesystem) Device() string { return f.dev }

// Mountpoint is where the filesystem is mounted, for the file services.
func (f *Filesystem) Mountpoint() string { return f.mnt }

// The Kind of every error this layer returns is set here: given by the
// caller that knows, or read off the tool's or mount(2)'s sentinel by
// kindOf.

func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func (f *Filesystem) errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

func configErr(format string, a ...any) error {
	return fail("new", services.Config, fmt.Errorf(format, a...))
}

func (f *Filesystem) wrap(op string, err error) error { return fail(op, kindOf(err), err) }

// kindOf classifies tool, mount and probe errors.
func kindOf(err error) services.Kind {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return services.Timeout
	case errors.Is(err, services.ErrHasData), errors.Is(err, ErrCorrupt):
		return services.Refused
	case errors.Is(err, services.ErrNotFound):
		return services.Missing
	case errors.Is(err, ErrTooSmall):
		return services.Config
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return services.Degraded
	}
	return services.Failed
}

// bounded runs fn, which may block in the kernel past any deadline (a
// mount replaying its log, I/O to a dead device), and returns when fn
// does or ctx ends. While an earlier call is still blocked, no new one
// starts: it would only queue behind it.
func (f *Filesystem) bounded(ctx context.Context, what string, fn func() error) error {
	f.bmu.Lock()
	if f.inflight != "" {
		prev, since := f.inflight, f.since
		f.bmu.Unlock()
		return fmt.Errorf("%s: the previous %s is still blocked (for %s): %w", what, prev, time.Since(since).Round(time.Millisecond), context.DeadlineExceeded)
	}
	f.inflight, f.since = what, time.Now()
	f.bmu.Unlock()
	done := make(chan error, 1)
	go func() {
		err := fn()
		f.bmu.Lock()
		f.inflight = ""
		f.bmu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s: no answer in time: %w", what, ctx.Err())
	}
}

// mounted finds what is mounted at the mountpoint (the last, topmost
// mount if several are stacked).
func (f *Filesystem) mounted() (Mount, bool, error) {
	ms, err := readMounts(f.mountinfo)
	if err != nil {
		return Mount{}, false, err
	}
	var m Mount
	found := false
	for _, x := range ms {
		if x.Target == f.mnt {
			m, found = x, true
		}
	}
	return m, found, nil
}

// ours reports whether a mount is of our device.
func (f *Filesystem) ours(m Mount) bool {
	if m.Source == f.dev {
		return true
	}
	mm := majMin(f.dev)
	return mm != "" && m.MajMin == mm
}

// Start mounts the filesystem, making it first on a blank LV if allowed.
func (f *Filesystem) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok, err := f.mounted()
	if err != nil {
		return f.errorf("start", services.Failed, "%v", err)
	}
	switch {
	case ok && f.ours(m) && m.FSType == "xfs":
		if m.ReadOnly() {
			return f.errorf("start", services.Failed, "%s is mounted read-only (%s; XFS shut down?)", f.mnt, m.Super)
		}
		f.log.Info("already mounted", "device", f.dev, "mountpoint", f.mnt)
		return f.stateDir(ctx)
	case ok:
		return f.errorf("start", services.Refused, "%s already has %s (%s) mounted on it", f.mnt, m.Source, m.FSType)
	}
	ms, err := readMounts(f.mountinfo)
	if err != nil {
		return f.errorf("start", services.Failed, "%v", err)
	}
	for _, m := range ms {
		if f.ours(m) {
			return f.errorf("start", services.Refused, "%s is already mounted at %s", f.dev, m.Target)
		}
	}

	c, err := disks.ProbePath(f.dev)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return f.errorf("start", services.Missing, "%s: no such device (LVM not active?)", f.dev)
	case err != nil:
		return f.errorf("start", services.Failed, "%v", err)
	}
	made := false
	switch {
	case c.Sig == "xfs":
	case c.Blank && f.mkfsIfBlank:
		if err := f.makeFS(ctx, c.Size); err != nil {
			return err
		}
		made = true
	case c.Blank:
		return f.errorf("start", services.Refused, "%s is blank and storage.filesystem.mkfs_if_blank is false: set it to make the filesystem", f.dev)
	default:
		return f.errorf("start", services.Refused, "will not make a filesystem on %s: it holds %s", f.dev, c)
	}

	info, err := ReadSuper(f.dev)
	if err != nil {
		f.log.Warn("cannot read the filesystem's UUID", "device", f.dev, "err", err)
	}
	if err := os.MkdirAll(f.mnt, 0o755); err != nil {
		return f.errorf("start", services.Failed, "mountpoint: %v (the root filesystem is read-only: the image must ship %s)", err, f.mnt)
	}
	err = f.bounded(ctx, "mount", func() error {
		if err := f.m.Mount(f.dev, f.mnt, "xfs", MountFlags, MountData); err != nil {
			return mountErr("mount", f.mnt, err)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrReadOnly) {
			err = fmt.Errorf("%w (is DRBD primary?)", err)
		}
		if errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: run xfs_repair by hand; Tandem never repairs by itself", err)
		}
		return f.wrap("start", err)
	}
	// The sysctl exists once the xfs module is loaded, which the mount
	// ensures; the worker reads it at its next round.
	if err := os.WriteFile(f.syncSysctl, []byte(strconv.Itoa(SyncCentisecs)+"\n"), 0); err != nil {
		f.log.Warn("cannot shorten XFS's log push interval: a takeover replays more log", "sysctl", f.syncSysctl, "err", err)
	}
	if made {
		f.log.Info("mounted new filesystem", "device", f.dev, "mountpoint", f.mnt, "uuid", info.UUID)
	} else {
		f.log.Info("mounted existing filesystem (not created)", "device", f.dev, "mountpoint", f.mnt, "uuid", info.UUID, "label", info.Label)
	}
	return f.stateDir(ctx)
}

// makeFS runs mkfs.xfs on the LV.
func (f *Filesystem) makeFS(ctx context.Context, size int64) error {
	spec := MkfsSpec{Device: f.dev}
	if size >= MinAlignBytes {
		spec.StripeKiB, spec.StripeWidth = f.stripeKiB, f.stripeWidth
	}
	f.log.Warn("making a new XFS filesystem: the LV is blank and mkfs_if_blank is set", "device", f.dev, "args", spec.Args())
	out, err := f.mkfs.Run(ctx, spec)
	if err != nil {
		return f.wrap("start", err)
	}
	if out != "" {
		f.log.Info("mkfs.xfs", "output", out)
	}
	return nil
}

// stateDir makes <mountpoint>/.tandem, where the probe and the file
// services' replicated state live.
func (f *Filesystem) stateDir(ctx context.Context) error {
	err := f.bounded(ctx, "mkdir "+site.StateDir, func() error {
		return os.MkdirAll(filepath.Join(f.mnt, site.StateDir), 0o755)
	})
	if err != nil {
		return f.wrap("start", err)
	}
	return nil
}

// Stop unmounts, retrying while busy.
func (f *Filesystem) Stop(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now()
	for i := 1; ; i++ {
		m, ok, err := f.mounted()
		if err != nil {
			return f.errorf("stop", services.Failed, "%v", err)
		}
		if !ok {
			return nil
		}
		if !f.ours(m) {
			f.log.Warn("something else is mounted on the mountpoint; left alone", "mountpoint", f.mnt, "source", m.Source)
			return nil
		}
		err = f.bounded(ctx, "umount", func() error {
			if err := f.m.Unmount(f.mnt, 0); err != nil {
				return mountErr("umount", f.mnt, err)
			}
			return nil
		})
		switch {
		case err == nil:
			f.log.Info("unmounted", "mountpoint", f.mnt, "tries", i)
			continue // a stacked mount of ours may remain
		case errors.Is(err, unix.EINVAL):
			return nil // not a mountpoint any more
		case !errors.Is(err, services.ErrInUse):
			return f.wrap("stop", err)
		case i >= f.tries:
			return f.errorf("stop", services.Failed, "%s still busy after %d tries over %s (nfsd or smbd still using it, or a process with files or its cwd there): %w",
				f.mnt, i, time.Since(start).Round(time.Millisecond), err)
		}
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return f.errorf("stop", services.Timeout, "%s still busy: %w", f.mnt, ctx.Err())
		}
	}
}

// Monitor checks the mount and runs the write + fsync + read-back probe.
func (f *Filesystem) Monitor(ctx context.Context) error {
	m, ok, err := f.mounted()
	switch {
	case err != nil:
		return f.errorf("monitor", services.Failed, "%v", err)
	case !ok || !f.ours(m):
		return f.errorf("monitor", services.Failed, "%s is not mounted on %s", f.dev, f.mnt)
	case m.ReadOnly():
		return f.errorf("monitor", services.Failed, "%s is mounted read-only (%s; XFS shut down?)", f.mnt, m.Super)
	}
	dir := filepath.Join(f.mnt, site.StateDir)
	// The probe gets part of the monitor's time, so that a probe stuck
	// on a frozen filesystem leaves time to find out and thaw it.
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithTimeout(ctx, time.Until(dl)*3/4)
	}
	err = f.bounded(pctx, "probe", func() error { return f.probe(dir) })
	cancel()
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		// A frozen filesystem (fsfreeze left behind by a crashed backup
		// or snapshot tool) blocks every write, the clients' too, and a
		// restart could not even stop nfsd: its threads wait on the
		// freeze. Thawing is the repair; the layer still counts as
		// failed and is restarted.
		switch thawed, terr := f.thaw(f.mnt); {
		case thawed:
			f.log.Warn("the filesystem was frozen: writes blocked; thawed it", "mountpoint", f.mnt)
			return f.errorf("monitor", services.Failed, "%s was frozen (writes blocked: %v); thawed", f.mnt, err)
		case terr != nil:
			f.log.Warn("cannot check for a frozen filesystem", "mountpoint", f.mnt, "err", terr)
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
			err = fmt.Errorf("filesystem full, still serving reads: %w", err)
		case errors.Is(err, unix.EIO):
			err = fmt.Errorf("I/O error (XFS shut down?): %w", err)
		}
		return f.wrap("monitor", err)
	}
	return nil
}

// fithaw is FITHAW, _IOWR('X', 120, int) (linux/fs.h).
const fithaw = 0xc0045878

// thaw thaws the filesystem mounted at mnt. It reports whether it was
// frozen: the kernel answers EINVAL when it is not.
func thaw(mnt string) (bool, error) {
	fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	switch _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fithaw, 0); errno {
	case 0:
		return true, nil
	case unix.EINVAL:
		return false, nil
	default:
		return false, errno
	}
}

// probe writes random data to dir/probe, fsyncs it, reads it back
// bypassing the page cache, and compares.
func probe(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	want := make([]byte, probeSize)
	if _, err := rand.Read(want); err != nil {
		return err
	}
	p := filepath.Join(dir, "probe")
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := w.Write(want); err != nil {
		w.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := w.Sync(); err != nil {
		w.Close()
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	got, err := readDirect(p, len(want))
	if err != nil {
		return fmt.Errorf("read back %s: %w", p, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		return fmt.Errorf("%s: %w (first difference at byte %d)", p, ErrMismatch, i)
	}
	return nil
}

// readDirect reads n bytes with O_DIRECT, so they come from the device.
// Where O_DIRECT is refused (tmpfs in tests), it drops the file's clean
// pages from the cache and reads normally.
func readDirect(p string, n int) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return readUncached(p, n)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := aligned(n, 4096)
	for off := 0; off < n; {
		k, err := unix.Pread(fd, buf[off:], int64(off))
		if err != nil {
			return nil, err
		}
		if k == 0 {
			return nil, io.ErrUnexpectedEOF
		}
		off += k
	}
	return buf, nil
}

func readUncached(p string, n int) ([]byte, error) {
	r, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	_ = unix.Fadvise(int(r.Fd()), 0, 0, unix.FADV_DONTNEED)
	buf := make([]byte, n)
	_, err = io.ReadFull(r, buf)
	return buf, err
}

// aligned returns n bytes whose start is aligned to align (a power of
// two), as O_DIRECT requires.
func aligned(n, align int) []byte {
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}
