package xfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/hosttool"
	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// TestLoopXFS runs the resource against the real kernel: mkfs.xfs on a
// loop device, mount(2), the O_DIRECT probe, a busy unmount, and a
// second start that must mount the same filesystem, not make a new one.
// It needs root, loop devices and XFS in the kernel, so it runs only
// with TANDEM_LOOP_TESTS=1; once asked for, a refusal is a failure,
// never a skip. The QEMU scenarios cover the whole stack.
func TestLoopXFS(t *testing.T) {
	hosttool.RequireRootKernel(t, "loop devices, xfs in the kernel")
	mkfs := hosttool.Require(t, "mkfs.xfs", "xfsprogs")
	admin := hosttool.Require(t, "xfs_admin", "xfsprogs")
	losetup := hosttool.Require(t, "losetup", "mount")
	fsList, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fsList), "\txfs\n") {
		t.Fatal("the kernel has no xfs (/proc/filesystems)")
	}

	dir := t.TempDir()
	img := filepath.Join(dir, "lv.img")
	hosttool.SparseFile(t, img, 512<<20)
	dev := hosttool.Loop(t, losetup, img)
	mnt := filepath.Join(dir, "srv")
	t.Cleanup(func() { unix.Unmount(mnt, 0) })

	cfg := &site.Config{
		Nodes:   []site.Node{{Name: "head-a", Disks: []string{"a", "b", "c", "d"}}},
		Storage: site.Storage{Filesystem: site.Filesystem{Type: "xfs", Mountpoint: mnt, MkfsIfBlank: true}},
	}
	f, err := fromSite(cfg, "head-a", dev, Options{Mkfs: mkfs, XFSAdmin: admin, UnmountTries: 3,
		SyncSysctl: filepath.Join(dir, "xfssyncd_centisecs")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal("first start:", err)
	}
	if err := f.Monitor(ctx); err != nil {
		t.Fatal("probe:", err)
	}
	// The probe's read really went around the page cache.
	fd, err := unix.Open(filepath.Join(mnt, ProbeFile), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("O_DIRECT on XFS: %v", err)
	}
	unix.Close(fd)

	busy, err := os.Create(filepath.Join(mnt, "open-file"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(ctx); services.KindOf(err) != services.Failed || !strings.Contains(err.Error(), "still busy after 3 tries") {
		t.Fatalf("stop with an open file: %v", err)
	}
	busy.Close()
	if err := f.Stop(ctx); err != nil {
		t.Fatal("stop:", err)
	}
	first, err := f.admin.Info(ctx, dev)
	if err != nil || first.UUID == "" || first.Label != Label {
		t.Fatalf("xfs_admin: %+v %v", first, err)
	}
	// Start logs what ReadSuper finds: it must agree with xfprogs.
	if got, err := ReadSuper(dev); err != nil || got != first {
		t.Errorf("ReadSuper = %+v, %v; xfs_admin says %+v", got, err, first)
	}

	if err := f.Start(ctx); err != nil {
		t.Fatal("second start:", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "open-file")); err != nil {
		t.Errorf("data from the first mount is gone: %v", err)
	}
	if err := f.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	second, _ := f.admin.Info(ctx, dev)
	if second.UUID != first.UUID {
		t.Errorf("filesystem re-created: uuid %s, then %s", first.UUID, second.UUID)
	}
}
