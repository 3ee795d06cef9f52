package xfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// TestClassify maps mkfs.xfs and xfs_admin stderr (xfsprogs 6.1,
// captured on image files) to sentinels.
func TestClassify(t *testing.T) {
	const usage = "Usage: mkfs.xfs\n/* blocksize */\t\t[-b size=num]\n<value> is xxx (512 byte blocks).\n"
	tests := []struct {
		stderr string
		want   error
	}{
		{"mkfs.xfs: /dev/mapper/tandem-data appears to contain an existing filesystem (ext4).\nmkfs.xfs: Use the -f option to force overwrite.\n", services.ErrHasData},
		{"mkfs.xfs: /dev/mapper/tandem-data appears to contain a partition table (gpt).\nmkfs.xfs: Use the -f option to force overwrite.\n", services.ErrHasData},
		{"mkfs.xfs: /dev/mapper/tandem-data appears to contain something weird according to blkid\nmkfs.xfs: Use the -f option to force overwrite.\n", services.ErrHasData},
		{"mkfs.xfs: /dev/mapper/tandem-data contains a mounted filesystem\n" + usage, services.ErrInUse},
		{"mkfs.xfs: cannot open /dev/mapper/tandem-data: Device or resource busy\n", services.ErrInUse},
		{"size 2560 of data subvolume is too small, minimum 4096 blocks\n" + usage, ErrTooSmall},
		{"log stripe unit (524288 bytes) is too large (maximum is 256KiB)\nlog stripe unit adjusted to 32KiB\nLog size must be at least 64MB.\n" + usage, ErrTooSmall},
		{"specified device /dev/mapper/nope not a file or block device\n" + usage, services.ErrNotFound},
		{"Invalid value waytoolonglabel for -L option\n" + usage, ErrUsage},
		{"xfs_admin: /dev/mapper/tandem-data is not a valid XFS filesystem (unexpected SB magic number 0x00000000)\nUse -F to force a read attempt.\n", ErrNotXFS},
		{"something new\n", services.ErrToolFailed},
	}
	for _, tt := range tests {
		if got := classify(tt.stderr); got != tt.want {
			t.Errorf("classify(%q) = %v, want %v", tt.stderr, got, tt.want)
		}
	}
	e := &ToolError{Tool: "mkfs.xfs", Args: []string{"-q", "/dev/x"}, Stderr: "size 2560 of data subvolume is too small, minimum 4096 blocks\n" + usage, Err: ErrTooSmall}
	if e.Error() != "mkfs.xfs -q /dev/x: device too small: size 2560 of data subvolume is too small, minimum 4096 blocks" {
		t.Errorf("message %q", e.Error())
	}
}

func TestMkfsArgs(t *testing.T) {
	tests := []struct {
		spec MkfsSpec
		want string
	}{
		{MkfsSpec{Device: "/dev/mapper/tandem-data", StripeKiB: 512, StripeWidth: 2}, "-q -L tandem -K -d su=512k,sw=2 /dev/mapper/tandem-data"},
		{MkfsSpec{Device: "/dev/mapper/tandem-data"}, "-q -L tandem -K -d noalign /dev/mapper/tandem-data"},
	}
	for _, tt := range tests {
		args := tt.spec.Args()
		if got := strings.Join(args, " "); got != tt.want {
			t.Errorf("got %s\nwant %s", got, tt.want)
		}
		for _, a := range args {
			if a == "-f" {
				t.Error("mkfs with -f")
			}
		}
	}
}

func TestParseAdmin(t *testing.T) {
	in := parseAdmin("UUID = 7228886c-c388-40fc-997e-229b7b810116\nlabel = \"tandem\"\n")
	if in.UUID != "7228886c-c388-40fc-997e-229b7b810116" || in.Label != "tandem" {
		t.Errorf("got %+v", in)
	}
	if in := parseAdmin("UUID = x\nlabel = \"\"\n"); in.Label != "" {
		t.Errorf("got %+v", in)
	}
}

func TestParseMountinfo(t *testing.T) {
	const s = `22 1 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
36 22 253:0 / /srv/tandem rw,nosuid,nodev,noatime shared:30 - xfs /dev/mapper/tandem-data rw,attr2,inode64,logbufs=8,logbsize=256k,noquota
37 22 253:1 / /mnt/with\040space ro,relatime - xfs /dev/mapper/x rw
38 22 8:1 / /odd rw - ext4 /dev/sda1
bad line
`
	ms, err := parseMountinfo(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("got %d mounts: %+v", len(ms), ms)
	}
	m := ms[1]
	if m.MajMin != "253:0" || m.Target != "/srv/tandem" || m.FSType != "xfs" || m.Source != "/dev/mapper/tandem-data" || !strings.Contains(m.Super, "logbsize=256k") || m.ReadOnly() {
		t.Errorf("got %+v", m)
	}
	if ms[2].Target != "/mnt/with space" || !ms[2].ReadOnly() {
		t.Errorf("got %+v", ms[2])
	}
	if ms[3].Super != "" || ms[3].Source != "/dev/sda1" {
		t.Errorf("got %+v", ms[3])
	}
	if unescape(`a\134b\1`) != `a\b\1` {
		t.Errorf("unescape: %q", unescape(`a\134b\1`))
	}
}

func TestMountErr(t *testing.T) {
	tests := []struct {
		errno syscall.Errno
		want  error
		kind  services.Kind
	}{
		{unix.EBUSY, services.ErrInUse, services.Failed},
		{unix.ENOENT, services.ErrNotFound, services.Missing},
		{unix.EINVAL, ErrNotXFS, services.Failed},
		{unix.EUCLEAN, ErrCorrupt, services.Refused},
		{unix.EROFS, ErrReadOnly, services.Failed},
		{unix.EACCES, ErrReadOnly, services.Failed},
		{unix.ENODEV, ErrNoKernelFS, services.Failed},
		{unix.EIO, ErrIO, services.Failed},
		{unix.EPERM, services.ErrToolFailed, services.Failed},
	}
	for _, tt := range tests {
		err := mountErr("mount", "/srv/tandem", tt.errno)
		if !errors.Is(err, tt.want) || !errors.Is(err, tt.errno) || kindOf(err) != tt.kind {
			t.Errorf("%v: %v kind %v", tt.errno, err, kindOf(err))
		}
		var me *MountError
		if !errors.As(err, &me) || me.Errno != tt.errno {
			t.Errorf("%v: errno lost: %v", tt.errno, err)
		}
	}
}

// fakeMounter keeps a mountinfo file in step with Mount and Unmount.
type fakeMounter struct {
	mu          sync.Mutex
	info        string
	mountErr    error
	unmountErrs []error // returned in order, then nil
	mounts      []string
	unmounts    int
}

func (m *fakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounts = append(m.mounts, fmt.Sprintf("%s %s %s %#x %s", source, target, fstype, flags, data))
	if m.mountErr != nil {
		return m.mountErr
	}
	f, err := os.OpenFile(m.info, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "100 1 0:99 / %s rw,nosuid,nodev,noatime - %s %s rw,inode64\n", target, fstype, source)
	return err
}

func (m *fakeMounter) Unmount(target string, flags int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unmounts++
	if len(m.unmountErrs) > 0 {
		err := m.unmountErrs[0]
		m.unmountErrs = m.unmountErrs[1:]
		if err != nil {
			return err
		}
	}
	b, _ := os.ReadFile(m.info)
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && !strings.Contains(l, " "+target+" ") {
			keep = append(keep, l)
		}
	}
	return os.WriteFile(m.info, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}

type rig struct {
	dir, dev, mnt, info string
	fm                  *fakeMounter
}

func newRig(t *testing.T) *rig {
	d := t.TempDir()
	g := &rig{dir: d, dev: d + "/tandem-data", mnt: d + "/srv/tandem", info: d + "/mountinfo"}
	g.fm = &fakeMounter{info: g.info}
	f, err := os.Create(g.dev)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8 << 20)
	f.Close()
	os.WriteFile(g.info, []byte("22 1 0:21 / /run rw - tmpfs tmpfs rw\n"), 0o644)
	// mkfs.xfs stand-in: log the call, write the XFS magic.
	os.WriteFile(d+"/mkfs.xfs", []byte("#!/bin/sh\necho \"$*\" >> "+d+"/mkfs.calls\nfor a in \"$@\"; do last=$a; done\nprintf XFSB | dd of=$last conv=notrunc 2>/dev/null\n"), 0o755)
	os.WriteFile(d+"/xfs_admin", []byte("#!/bin/sh\necho 'UUID = 7228886c-c388-40fc-997e-229b7b810116'\necho 'label = \"tandem\"'\n"), 0o755)
	return g
}

func (g *rig) fs(t *testing.T, mkfs bool) *Filesystem {
	cfg := &site.Config{
		Nodes: []site.Node{{Name: "head-a", Disks: []string{"serial:a", "serial:b", "serial:c", "serial:d"}}},
		Storage: site.Storage{
			RAID:       site.RAID{ChunkKiB: 512},
			Filesystem: site.Filesystem{Type: "xfs", Mountpoint: g.mnt, MkfsIfBlank: mkfs},
		},
	}
	f, err := fromSite(cfg, "head-a", g.dev, Options{Mkfs: g.dir + "/mkfs.xfs", XFSAdmin: g.dir + "/xfs_admin", MountInfo: g.info, SyncSysctl: g.dir + "/xfssyncd_centisecs",
		UnmountTries: 3, UnmountDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.m = g.fm
	return f
}

func (g *rig) mkfsCalls() string {
	b, _ := os.ReadFile(g.dir + "/mkfs.calls")
	return strings.TrimSpace(string(b))
}

func kind(err error) string {
	if err == nil {
		return "ok"
	}
	return services.KindOf(err).String()
}

func TestStartMakesFSOnBlank(t *testing.T) {
	g := newRig(t)
	f := g.fs(t, true)
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// 8 MiB is under MinAlignBytes: no stripe alignment.
	if got := g.mkfsCalls(); got != "-q -L tandem -K -d noalign "+g.dev {
		t.Errorf("mkfs: %q", got)
	}
	want := fmt.Sprintf("%s %s xfs %#x inode64,logbsize=256k", g.dev, g.mnt, MountFlags)
	if len(g.fm.mounts) != 1 || g.fm.mounts[0] != want {
		t.Errorf("mounts %q\nwant %q", g.fm.mounts, want)
	}
	if MountFlags&unix.MS_NOATIME == 0 {
		t.Error("no noatime")
	}
	if fi, err := os.Stat(g.mnt + "/.tandem"); err != nil || !fi.IsDir() {
		t.Errorf("state dir: %v", err)
	}
	// The log worker pushes dirty metadata every second: little to replay.
	if b, _ := os.ReadFile(g.dir + "/xfssyncd_centisecs"); string(b) != "100\n" {
		t.Errorf("xfssyncd_centisecs = %q, want 100", b)
	}
	// Idempotent: mounted already, nothing more.
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if len(g.fm.mounts) != 1 || strings.Count(g.mkfsCalls(), "\n") != 0 {
		t.Errorf("second start mounted or made again: %q %q", g.fm.mounts, g.mkfsCalls())
	}
	if err := f.Monitor(ctx); err != nil {
		t.Errorf("monitor: %v", err)
	}
	b, err := os.ReadFile(g.mnt + "/" + ProbeFile)
	if err != nil || len(b) != probeSize || bytes.Equal(b, make([]byte, probeSize)) {
		t.Errorf("probe file: %d bytes, %v", len(b), err)
	}
	if err := f.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(ctx); err != nil {
		t.Fatal("second stop:", err)
	}
	if err := f.Monitor(ctx); kind(err) != "failed" || !strings.Contains(err.Error(), "is not mounted") {
		t.Errorf("monitor after stop: %v", err)
	}
	// Start again: the device holds XFS now; mounted, not made.
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Count(g.mkfsCalls(), "\n") != 0 {
		t.Errorf("made again: %q", g.mkfsCalls())
	}
}

func TestStartRefusals(t *testing.T) {
	write := func(g *rig, off int64, b []byte) {
		f, _ := os.OpenFile(g.dev, os.O_WRONLY, 0)
		f.WriteAt(b, off)
		f.Close()
	}
	tests := []struct {
		name   string
		setup  func(g *rig)
		mkfs   bool
		kind   string
		errHas string
	}{
		{name: "blank without mkfs_if_blank", kind: "refused", errHas: "mkfs_if_blank is false"},
		{name: "holds ext4", mkfs: true, setup: func(g *rig) { write(g, 1024+0x38, []byte{0x53, 0xef}) }, kind: "refused", errHas: "it holds ext2/3/4 signature"},
		{name: "holds garbage", mkfs: true, setup: func(g *rig) { write(g, 100, []byte{1}) }, kind: "refused", errHas: "non-zero data in the first MiB (at byte 100)"},
		{name: "no device", mkfs: true, setup: func(g *rig) { os.Remove(g.dev) }, kind: "missing", errHas: "LVM not active?"},
		{name: "mountpoint taken", mkfs: true, setup: func(g *rig) {
			os.WriteFile(g.info, []byte("40 1 8:1 / "+g.mnt+" rw - ext4 /dev/sda1 rw\n"), 0o644)
		}, kind: "refused", errHas: "already has /dev/sda1 (ext4) mounted on it"},
		{name: "device mounted elsewhere", mkfs: true, setup: func(g *rig) {
			os.WriteFile(g.info, []byte("40 1 253:0 / /mnt rw - xfs "+g.dev+" rw\n"), 0o644)
		}, kind: "refused", errHas: "is already mounted at /mnt"},
		{name: "mkfs refuses itself", mkfs: true, setup: func(g *rig) {
			os.WriteFile(g.dir+"/mkfs.xfs", []byte("#!/bin/sh\necho 'mkfs.xfs: x appears to contain a partition table (gpt).' >&2\necho 'mkfs.xfs: Use the -f option to force overwrite.' >&2\nexit 1\n"), 0o755)
		}, kind: "refused", errHas: "appears to contain a partition table"},
		{name: "drbd secondary", setup: func(g *rig) {
			write(g, 0, []byte("XFSB"))
			g.fm.mountErr = unix.EROFS
		}, kind: "failed", errHas: "is DRBD primary?"},
		{name: "corrupt", setup: func(g *rig) {
			write(g, 0, []byte("XFSB"))
			g.fm.mountErr = unix.EUCLEAN
		}, kind: "refused", errHas: "run xfs_repair by hand"},
		{name: "mounted read-only", setup: func(g *rig) {
			os.WriteFile(g.info, []byte("40 1 253:0 / "+g.mnt+" ro - xfs "+g.dev+" ro\n"), 0o644)
		}, kind: "failed", errHas: "mounted read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t)
			if tt.setup != nil {
				tt.setup(g)
			}
			err := g.fs(t, tt.mkfs).Start(context.Background())
			if kind(err) != tt.kind || !strings.Contains(fmt.Sprint(err), tt.errHas) {
				t.Fatalf("got %s: %v\nwant %s containing %q", kind(err), err, tt.kind, tt.errHas)
			}
			if tt.name != "mkfs refuses itself" && g.mkfsCalls() != "" {
				t.Errorf("mkfs ran: %s", g.mkfsCalls())
			}
		})
	}
}

func TestStopBusy(t *testing.T) {
	ctx := context.Background()
	t.Run("busy then free", func(t *testing.T) {
		g := newRig(t)
		f := g.fs(t, true)
		if err := f.Start(ctx); err != nil {
			t.Fatal(err)
		}
		g.fm.unmountErrs = []error{unix.EBUSY, unix.EBUSY}
		if err := f.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if g.fm.unmounts != 3 {
			t.Errorf("%d unmount calls", g.fm.unmounts)
		}
	})
	t.Run("busy for good", func(t *testing.T) {
		g := newRig(t)
		f := g.fs(t, true)
		if err := f.Start(ctx); err != nil {
			t.Fatal(err)
		}
		g.fm.unmountErrs = []error{unix.EBUSY, unix.EBUSY, unix.EBUSY, unix.EBUSY}
		err := f.Stop(ctx)
		if kind(err) != "failed" || !errors.Is(err, services.ErrInUse) || !strings.Contains(err.Error(), "still busy after 3 tries") {
			t.Errorf("got %v", err)
		}
		if g.fm.unmounts != 3 {
			t.Errorf("%d unmount calls, want 3 (bounded)", g.fm.unmounts)
		}
	})
	t.Run("not a mountpoint any more", func(t *testing.T) {
		g := newRig(t)
		f := g.fs(t, true)
		if err := f.Start(ctx); err != nil {
			t.Fatal(err)
		}
		g.fm.unmountErrs = []error{unix.EINVAL}
		if err := f.Stop(ctx); err != nil {
			t.Errorf("got %v", err)
		}
	})
}

func TestMonitorProbeFailures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		probe  func(string) error
		kind   string
		errHas string
	}{
		{"full", func(string) error { return &os.PathError{Op: "write", Path: "probe", Err: unix.ENOSPC} }, "degraded", "filesystem full"},
		{"io error", func(string) error { return &os.PathError{Op: "write", Path: "probe", Err: unix.EIO} }, "failed", "XFS shut down?"},
		{"mismatch", func(string) error { return fmt.Errorf("probe: %w", ErrMismatch) }, "failed", "read back differs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t)
			f := g.fs(t, true)
			if err := f.Start(ctx); err != nil {
				t.Fatal(err)
			}
			f.probe = tt.probe
			err := f.Monitor(ctx)
			if kind(err) != tt.kind || !strings.Contains(fmt.Sprint(err), tt.errHas) {
				t.Errorf("got %s: %v", kind(err), err)
			}
		})
	}
}

func TestMonitorTimeout(t *testing.T) {
	g := newRig(t)
	f := g.fs(t, true)
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var calls int
	var mu sync.Mutex
	f.probe = func(string) error {
		mu.Lock()
		calls++
		mu.Unlock()
		<-release // a write stuck in the kernel
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.Monitor(ctx); kind(err) != "timeout" {
		t.Fatalf("got %v", err)
	}
	// Still stuck: the next probe reports at once and starts nothing.
	start := time.Now()
	err := f.Monitor(context.Background())
	if kind(err) != "timeout" || !strings.Contains(err.Error(), "previous probe is still blocked") || time.Since(start) > time.Second {
		t.Errorf("got %v after %s", err, time.Since(start))
	}
	mu.Lock()
	if calls != 1 {
		t.Errorf("%d probes started", calls)
	}
	mu.Unlock()
	close(release)
	deadline := time.Now().Add(2 * time.Second)
	for {
		if err := f.Monitor(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after release: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProbe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".tandem")
	if err := probe(dir); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(dir + "/probe")
	if err := probe(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dir + "/probe")
	if len(a) != probeSize || bytes.Equal(a, b) {
		t.Error("probe content is not fresh random data")
	}
	// readDirect reads what is there, through O_DIRECT or the fallback.
	got, err := readDirect(dir+"/probe", probeSize)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("readDirect: %v", err)
	}
	if _, err := readDirect(dir+"/nope", probeSize); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing file: %v", err)
	}
}

func TestAligned(t *testing.T) {
	for i := 0; i < 20; i++ {
		b := aligned(4096, 4096)
		if len(b) != 4096 || uintptr(unsafe.Pointer(&b[0]))%4096 != 0 {
			t.Fatalf("len %d addr %p", len(b), &b[0])
		}
	}
}

// fromSite is FromSite then New, as services/stack calls them.
func fromSite(sc *site.Config, node, dev string, opts Options) (*Filesystem, error) {
	c, err := FromSite(sc, node, dev)
	if err != nil {
		return nil, err
	}
	return New(c, opts)
}

func TestFromSite(t *testing.T) {
	cfg := &site.Config{
		Nodes:   []site.Node{{Name: "head-a", Disks: make([]string, 6)}},
		Storage: site.Storage{LVM: site.LVM{VG: "my-vg", LV: "data"}},
	}
	f, err := fromSite(cfg, "head-a", "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Device() != "/dev/mapper/my--vg-data" || f.Mountpoint() != site.DefaultMountpoint || f.stripeWidth != 3 || f.stripeKiB != site.DefaultChunkKiB {
		t.Errorf("device %s mountpoint %s stripe %dk x %d", f.Device(), f.Mountpoint(), f.stripeKiB, f.stripeWidth)
	}
	for _, bad := range []*site.Config{
		nil,
		{Nodes: cfg.Nodes, Storage: site.Storage{Filesystem: site.Filesystem{Type: "ext4"}}},
		{Nodes: cfg.Nodes, Storage: site.Storage{Filesystem: site.Filesystem{Mountpoint: "srv/x"}}},
	} {
		if _, err := FromSite(bad, "head-a", ""); services.KindOf(err) != services.Config {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := FromSite(cfg, "head-z", ""); services.KindOf(err) != services.Config {
		t.Errorf("unknown node: %v", err)
	}
}

// A probe stuck on a frozen filesystem: the monitor thaws it within its
// deadline and reports Failed (acted on at once), not Timeout.
func TestMonitorThawsFrozen(t *testing.T) {
	g := newRig(t)
	f := g.fs(t, true)
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	f.probe = func(string) error { <-release; return nil } // blocked by the freeze
	var thaws int
	f.thaw = func(mnt string) (bool, error) {
		if mnt != g.mnt {
			t.Errorf("thaw %s", mnt)
		}
		thaws++
		close(release)
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := f.Monitor(ctx)
	if kind(err) != "failed" || !strings.Contains(err.Error(), "was frozen") || ctx.Err() != nil {
		t.Fatalf("got %v (ctx %v)", err, ctx.Err())
	}
	if thaws != 1 {
		t.Errorf("%d thaws", thaws)
	}
	// Not frozen after all: still a timeout, tolerated once by the supervisor.
	g2 := newRig(t)
	f2 := g2.fs(t, true)
	if err := f2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	defer close(block)
	f2.probe = func(string) error { <-block; return nil }
	f2.thaw = func(string) (bool, error) { return false, nil }
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := f2.Monitor(ctx2); kind(err) != "timeout" {
		t.Errorf("not frozen: got %v", err)
	}
}
