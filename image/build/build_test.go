package build_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	dsq "github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/u-root/u-root/pkg/cpio"

	"tandem.dev/tandem/image/build"
	"tandem.dev/tandem/image/disk"
	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/image/spec"
	"tandem.dev/tandem/internal/testimage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}

// skipShort lets `go test -short` skip builds that need the Debian mirror;
// CI never passes -short, so there they always run.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Debian mirror and a few minutes; runs without -short")
	}
}

// The default image, read back: partitions, ESP, loader entries, the
// initramfs and the root squashfs hold what a NAS head needs.
func TestDefaultImageContents(t *testing.T) {
	skipShort(t)
	res := testimage.Default(t)
	rep, err := disk.Inspect(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{manifest.LabelESP, manifest.LabelRootA, manifest.LabelRootB, manifest.LabelConfig, manifest.LabelState} {
		if rep.Partition(name) == nil {
			t.Errorf("no partition %q", name)
		}
	}
	for _, f := range []string{"EFI/BOOT/BOOTX64.EFI", "tandem/a/vmlinuz", "tandem/a/initrd.img", "tandem/b/vmlinuz", "tandem/b/initrd.img", "loader/loader.conf"} {
		if rep.ESP.File(f) == nil {
			t.Errorf("ESP lacks %s", f)
		}
	}
	for slot, want := range map[string]string{"tandem-a+3.conf": "tandem.slot=a", "tandem-b+3.conf": "tandem.slot=b"} {
		e := rep.Entries[slot]
		if !strings.Contains(e, want) || !strings.Contains(e, "console=ttyS0") || !strings.Contains(e, res.Version) {
			t.Errorf("entry %s = %q, want %s, the console and version %s", slot, e, want, res.Version)
		}
	}
	if rep.Config.Label != manifest.LabelConfig || rep.Config.File("README.txt") == nil {
		t.Errorf("config volume: label %q, files %v", rep.Config.Label, rep.Config.Files)
	}

	checkInitramfs(t, res, rep)
	checkRoot(t, res, rep)
}

func checkInitramfs(t *testing.T, res *build.Result, rep *disk.Report) {
	f := rep.ESP.File("tandem/a/initrd.img")
	if f == nil {
		return
	}
	data, err := disk.ReadFile(res.Path, manifest.LabelESP, "tandem/a/initrd.img")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(data)))
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	have := map[string]cpio.Record{}
	for _, r := range recs {
		have[r.Name] = r
	}
	for _, p := range []string{"init", "dev/console", "etc/tandem/image.toml",
		"usr/lib/modules/" + res.Kernel + "/modules.dep",
		"usr/lib/modules/" + res.Kernel + "/kernel/fs/squashfs/squashfs.ko"} {
		if _, ok := have[p]; !ok {
			t.Errorf("initramfs lacks /%s", p)
		}
	}
	if _, ok := have["usr/lib/modules/"+res.Kernel+"/kernel/drivers/block/drbd/drbd.ko"]; ok {
		t.Errorf("initramfs carries drbd.ko; only root-finding modules belong there")
	}
}

func checkRoot(t *testing.T, res *build.Result, rep *disk.Report) {
	p := rep.Partition(manifest.LabelRootA)
	if p == nil {
		return
	}
	f, err := os.Open(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sq, err := dsq.Read(file.New(f, true), p.Size, p.Start, 0)
	if err != nil {
		t.Fatalf("root-a is not a readable squashfs: %v", err)
	}
	mods := "usr/lib/modules/" + res.Kernel + "/"
	for _, path := range []string{
		"usr/sbin/drbdadm", "usr/lib/drbd/drbdadm-84", "usr/sbin/mdadm", "usr/sbin/exportfs", "usr/sbin/rpc.nfsd",
		"usr/sbin/smbd", "usr/sbin/winbindd", "usr/sbin/lvm", "usr/sbin/mkfs.xfs", "usr/sbin/mkfs.ext4", "usr/bin/busybox",
		mods + "modules.dep", mods + "modules.softdep", mods + "kernel/drivers/block/drbd/drbd.ko",
		mods + "kernel/drivers/md/raid10.ko", mods + "kernel/drivers/net/bonding/bonding.ko",
		"etc/passwd", "etc/group", "var/lib/drbd",
	} {
		if _, err := sq.Stat(path); err != nil {
			t.Errorf("root lacks /%s: %v", path, err)
		}
	}
	for path, want := range map[string]string{"var/run": "/run", "bin": "usr/bin", "usr/bin/tandem": manifest.SelfPath} {
		fi, err := sq.Stat(path)
		if err != nil {
			t.Errorf("root lacks /%s: %v", path, err)
			continue
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("/%s is %v, want a symlink to %s", path, fi.Mode(), want)
		}
	}
	for _, gone := range []string{"usr/share/doc", "usr/share/man", "usr/bin/python3", "usr/bin/perl"} {
		if _, err := sq.Stat(gone); err == nil {
			t.Errorf("root has /%s, which the image drops", gone)
		}
	}
	passwd, err := readAll(sq, "etc/passwd")
	if err != nil || !strings.Contains(passwd, "statd:x:101:") {
		t.Errorf("/etc/passwd = %q, %v; want the declared statd user", passwd, err)
	}
}

func readAll(sq *dsq.FileSystem, p string) (string, error) {
	f, err := sq.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

const smallSpec = `name = "small"
board = "qemu-x86_64"
[disk]
size = "1GiB"
esp = "128MiB"
root = "128MiB"
config = "40MiB"
[debian]
suite = "bookworm"
[kernel]
package = "linux-image-amd64"
[packages]
install = ["mdadm", "busybox-static", "usr-is-merged"]
[[packages.exclude]]
name = "initramfs-tools"
reason = "own initramfs"
[[packages.exclude]]
name = "linux-initramfs-tool"
reason = "own initramfs"
[[packages.exclude]]
name = "linux-base"
reason = "kernel scripts"
[[packages.exclude]]
name = "debconf"
reason = "no maintainer scripts"
`

// Two builds of one spec, the second with its own extract/rootfs/squashfs
// cache (only downloads are shared), give the same sha256; another epoch
// gives a different one.
func TestReproducible(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	sp, err := spec.Parse("small.toml", []byte(smallSpec))
	if err != nil {
		t.Fatal(err)
	}
	shared, err := build.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "small.lock")
	run := func(name string, cache string, epoch int64) *build.Result {
		t.Helper()
		if err := os.MkdirAll(cache, 0o755); err != nil {
			t.Fatal(err)
		}
		if cache != shared {
			_ = os.Symlink(filepath.Join(shared, "debs"), filepath.Join(cache, "debs"))
		}
		o := build.Options{Spec: sp, Output: filepath.Join(dir, name+".img"), CacheDir: cache, LockPath: lock, InitBinary: testimage.Binary(t)}
		if epoch != 0 {
			o.Epoch = time.Unix(epoch, 0)
		}
		res, err := build.Build(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a := run("a", shared, 0)
	b := run("b", filepath.Join(dir, "cache-b"), 0)
	if a.SHA256 != b.SHA256 {
		t.Errorf("same inputs, different images: %s (shared cache) vs %s (fresh cache); "+
			"if you changed what rootfs or squashfs produce, bump build.cacheFormat", a.SHA256, b.SHA256)
	}
	c := run("c", filepath.Join(dir, "cache-b"), 1700000000)
	if c.SHA256 == a.SHA256 {
		t.Errorf("a different SOURCE_DATE_EPOCH gave the same image")
	}
}
