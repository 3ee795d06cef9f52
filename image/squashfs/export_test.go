package squashfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/hosttool"
)

// TestExportTableDecodesHandles mounts an image on a loop device and
// has the kernel decode a file handle of every path: open_by_handle_at
// goes through the export table, as nfsd does for each NFS request. A
// wrong reference opens another inode, a missing table fails. It runs
// with TANDEM_LOOP_TESTS=1 (root, loop devices), never skipped then.
func TestExportTableDecodesHandles(t *testing.T) {
	hosttool.RequireRootKernel(t, "loop devices, squashfs in the kernel")
	losetup := hosttool.Require(t, "losetup", "mount")
	src, _ := makeTree(t, DefaultBlockSize)
	dir := t.TempDir()
	img := filepath.Join(dir, "root.sqfs")
	if err := Build(context.Background(), src, img, Options{Epoch: epoch, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", "--read-only", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := unix.Mount(dev, mnt, "squashfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)

	checked := 0
	err = filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err // open_by_handle_at would follow nothing useful
		}
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
		if err != nil {
			t.Errorf("%s: name_to_handle_at: %v", p, err)
			return nil
		}
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY|unix.O_PATH)
		if err != nil {
			t.Errorf("%s: the kernel cannot decode its handle (export table): %v", p, err)
			return nil
		}
		defer unix.Close(fd)
		var got unix.Stat_t
		unix.Fstat(fd, &got)
		if want := fi.Sys().(*syscall.Stat_t).Ino; got.Ino != want {
			t.Errorf("%s: its handle opens inode %d, want %d", p, got.Ino, want)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 5 {
		t.Fatalf("only %d paths checked", checked)
	}
}
