package disks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/hosttool"
	"tandem.dev/tandem/services"
)

// TestWipeLoop wipes a real block device: a loop device holding XFS and
// an md v1.0 superblock at its end, named in a fake sysfs whose disk has
// the loop device's major:minor, so the real node check, O_EXCL,
// BLKFLSBUF and the real mount table are what decide. A wrong serial
// and a mounted device are refused and left as they were; then the
// unmounted device is wiped and probes blank. Root and loop devices:
// only with TANDEM_LOOP_TESTS=1, and then never skipped.
func TestWipeLoop(t *testing.T) {
	hosttool.RequireRootKernel(t, "loop devices, xfs in the kernel")
	mkfs := hosttool.Require(t, "mkfs.xfs", "xfsprogs")
	losetup := hosttool.Require(t, "losetup", "mount")

	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	const size = 320 << 20
	hosttool.SparseFile(t, img, size)
	if out, err := exec.Command(mkfs, "-q", "-f", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	// mkfs.xfs leaves the end alone: put an md v1.0 superblock there.
	fw, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.WriteAt(le32(mdMagic), (size-8192)&^4095); err != nil {
		t.Fatal(err)
	}
	fw.Close()
	loop := hosttool.Loop(t, losetup, img)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	dev, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(loop), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	// The loop device plays vdx, serial LOOPDISK1.
	sys := fakeSys(t, map[string]string{"vdx/device/vendor": "x", "vdx/serial": "LOOPDISK1",
		"vdx/size": fmt.Sprint(size / 512), "vdx/dev": string(dev)})
	devDir := t.TempDir()
	if err := os.Symlink(loop, filepath.Join(devDir, "vdx")); err != nil {
		t.Fatal(err)
	}
	f := Finder{SysRoot: sys, DevDir: devDir}
	blind := f
	blind.ProcRoot = fakeProc(t, "", "-") // sees no mounts: only O_EXCL stands

	untouched := func(step string) {
		t.Helper()
		if c, err := ProbePath(loop); err != nil || c.Sig != "md RAID (v1.0)" {
			t.Fatalf("%s: the device now probes %+v %v", step, c, err)
		}
	}
	ctx := context.Background()
	if _, err := f.Wipe(ctx, "LOOPDISK2", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong serial: %v", err)
	}
	untouched("wrong serial")

	if err := unix.Mount(loop, mnt, "xfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if _, err := f.Wipe(ctx, "LOOPDISK1", nil); !errors.Is(err, ErrSystemDisk) || !strings.Contains(err.Error(), "vdx on "+mnt) {
		t.Fatalf("mounted: %v", err)
	}
	if _, err := blind.Wipe(ctx, "LOOPDISK1", nil); !errors.Is(err, services.ErrInUse) || !strings.Contains(err.Error(), "claimed") {
		t.Fatalf("mounted, not in the mount table: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	untouched("mounted")

	before, err := f.Wipe(ctx, "LOOPDISK1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if before.Sig != "md RAID (v1.0)" {
		t.Errorf("Wipe says the disk held %+v", before)
	}
	for _, p := range []string{loop, img} {
		if c, err := ProbePath(p); err != nil || !c.Blank {
			t.Errorf("%s after Wipe: %+v %v", p, c, err)
		}
	}
	if err := unix.Mount(loop, mnt, "xfs", unix.MS_RDONLY, ""); err == nil {
		t.Error("the wiped device still mounts as XFS")
	}
}
