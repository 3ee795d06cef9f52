package squashfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem.dev/tandem/internal/hosttool"

	"github.com/diskfs/go-diskfs/backend/file"
	dsq "github.com/diskfs/go-diskfs/filesystem/squashfs"
)

var (
	epoch = time.Unix(1700000000, 0)
	quiet = slog.New(slog.DiscardHandler)
)

type fixture struct {
	path    string
	content []byte // regular files
	target  string // symlinks
	mode    os.FileMode
	perm    uint32 // incl. setuid etc., as chmod takes it
	uid     int
	link    string // hard link to this fixture path
}

// makeTree builds the test tree; every case a rootfs needs.
func makeTree(t *testing.T, blockSize int) (string, []fixture) {
	t.Helper()
	big := make([]byte, 2*blockSize+1234) // two full blocks and a tail
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	exact := bytes.Repeat([]byte("tandem\n"), blockSize) // compressible
	exact = exact[:blockSize*2]
	sparse := make([]byte, 3*blockSize+10)
	copy(sparse[blockSize:], "not a hole")
	fx := []fixture{
		{path: "a", mode: os.ModeDir, perm: 0o755},
		{path: "a/b", mode: os.ModeDir, perm: 0o750},
		{path: "a/b/c", mode: os.ModeDir, perm: 0o1777},
		{path: "a/b/c/deep.txt", content: []byte("deep\n"), perm: 0o644},
		{path: "a/rel", mode: os.ModeSymlink, target: "b/c/deep.txt", perm: 0o777},
		{path: "a/dangling", mode: os.ModeSymlink, target: "../proc/self/mounts", perm: 0o777},
		{path: "a/abs", mode: os.ModeSymlink, target: "/etc/alternatives/nothing-here", perm: 0o777},
		{path: "bin", mode: os.ModeDir, perm: 0o755},
		{path: "bin/su", content: []byte("#!/bin/true\n"), perm: 0o4755},
		{path: "bin/wall", content: []byte("#!/bin/true\n#wall\n"), perm: 0o2755, uid: 1234},
		{path: "bin/su-link", link: "bin/su"},
		{path: "empty", mode: os.ModeDir, perm: 0o700},
		{path: "zero", content: []byte{}, perm: 0o600},
		{path: "big.bin", content: big, perm: 0o644},
		{path: "exact.txt", content: exact, perm: 0o444},
		{path: "sparse.img", content: sparse, perm: 0o644},
		{path: "fifo", mode: os.ModeNamedPipe, perm: 0o644},
	}
	if os.Getuid() == 0 { // mknod needs CAP_MKNOD
		fx = append(fx, fixture{path: "null", mode: os.ModeDevice | os.ModeCharDevice, perm: 0o666},
			fixture{path: "sda1", mode: os.ModeDevice, perm: 0o660})
	}
	root := t.TempDir()
	for _, f := range fx {
		p := filepath.Join(root, f.path)
		var err error
		switch {
		case f.link != "":
			err = os.Link(filepath.Join(root, f.link), p)
		case f.mode&os.ModeDir != 0:
			err = os.Mkdir(p, 0o700)
		case f.mode&os.ModeSymlink != 0:
			err = os.Symlink(f.target, p)
		case f.mode&os.ModeNamedPipe != 0:
			err = syscall.Mkfifo(p, 0o600)
		case f.mode&os.ModeCharDevice != 0:
			err = syscall.Mknod(p, syscall.S_IFCHR|0o600, 1<<8|3) // 1:3
		case f.mode&os.ModeDevice != 0:
			err = syscall.Mknod(p, syscall.S_IFBLK|0o600, 259<<8|0x1234&0xff|(0x1234&^0xff)<<12) // 259:4660, a large minor
		default:
			err = os.WriteFile(p, f.content, 0o600)
		}
		// chown clears setuid/setgid, so it goes first.
		if err == nil && f.uid != 0 && os.Getuid() == 0 {
			err = os.Lchown(p, f.uid, f.uid+1)
		}
		if err == nil && f.link == "" && f.mode&os.ModeSymlink == 0 {
			err = syscall.Chmod(p, f.perm)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root, fx
}

func build(t *testing.T, src string, opts Options) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "root.sqfs")
	opts.Logger = quiet
	if err := Build(context.Background(), src, out, opts); err != nil {
		t.Fatalf("Build: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadBackGoDiskfs reads the archive with go-diskfs, an independent
// reader, and compares every entry with the source tree.
func TestReadBackGoDiskfs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		wantUID func(src uint32) uint32
	}{
		{"4k-blocks", Options{Epoch: epoch, BlockSize: 4096}, func(u uint32) uint32 { return u }},
		{"default-blocks", Options{Epoch: epoch}, func(u uint32) uint32 { return u }},
		{"1m-all-root-level19", Options{Epoch: epoch, BlockSize: 1 << 20, AllRoot: true, Level: 19}, func(uint32) uint32 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := tc.opts.BlockSize
			if bs == 0 {
				bs = DefaultBlockSize
			}
			src, fx := makeTree(t, bs)
			img := build(t, src, tc.opts)
			if len(img)%4096 != 0 {
				t.Errorf("size %d not padded to 4 KiB", len(img))
			}
			if got := binary.LittleEndian.Uint32(img[8:]); got != uint32(epoch.Unix()) {
				t.Errorf("mkfs_time = %d, want %d", got, epoch.Unix())
			}
			sq := openDiskfs(t, img)
			seen := map[string]bool{}
			walkDiskfs(t, sq, ".", func(p string, fi os.FileInfo) {
				seen[p] = true
				checkEntry(t, sq, src, p, fi, tc.wantUID)
			})
			for _, f := range fx {
				if !seen[f.path] {
					t.Errorf("%s missing from archive", f.path)
				}
			}
			if len(seen) != len(fx) {
				t.Errorf("archive has %d entries, tree has %d", len(seen), len(fx))
			}
		})
	}
}

func openDiskfs(t *testing.T, img []byte) *dsq.FileSystem {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rb.sqfs")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sq, err := dsq.Read(file.New(f, true), int64(len(img)), 0, 0)
	if err != nil {
		t.Fatalf("go-diskfs cannot read the archive: %v", err)
	}
	return sq
}

func walkDiskfs(t *testing.T, sq *dsq.FileSystem, dir string, fn func(string, os.FileInfo)) {
	t.Helper()
	des, err := sq.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir %s: %v", dir, err)
	}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		p := path.Join(dir, de.Name())
		fn(p, fi)
		if fi.IsDir() {
			walkDiskfs(t, sq, p, fn)
		}
	}
}

func checkEntry(t *testing.T, sq *dsq.FileSystem, src, p string, fi os.FileInfo, wantUID func(uint32) uint32) {
	t.Helper()
	hp := filepath.Join(src, p)
	hfi, err := os.Lstat(hp)
	if err != nil {
		t.Errorf("%s: in archive but not in tree: %v", p, err)
		return
	}
	hst := hfi.Sys().(*syscall.Stat_t)
	// go-diskfs reports type and rwx bits only; setuid is checked with unsquashfs.
	if got, want := fi.Mode(), hfi.Mode()&(os.ModeType|os.ModePerm); got != want {
		t.Errorf("%s: mode %v, want %v", p, got, want)
	}
	if !fi.ModTime().Equal(epoch) {
		t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), epoch)
	}
	st := fi.Sys().(*dsq.StatT)
	if st.UID != wantUID(hst.Uid) || st.GID != wantUID(hst.Gid) {
		t.Errorf("%s: owner %d:%d, want %d:%d", p, st.UID, st.GID, wantUID(hst.Uid), wantUID(hst.Gid))
	}
	switch {
	case hfi.Mode()&os.ModeSymlink != 0:
		want, _ := os.Readlink(hp)
		if st.LinkTarget != want {
			t.Errorf("%s: link target %q, want %q", p, st.LinkTarget, want)
		}
	case hfi.Mode().IsRegular():
		f, err := sq.OpenFile(p, os.O_RDONLY)
		if err != nil {
			t.Errorf("%s: open: %v", p, err)
			return
		}
		got, err := io.ReadAll(f)
		if err != nil {
			t.Errorf("%s: read: %v", p, err)
		}
		want, _ := os.ReadFile(hp)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs (%d bytes, want %d)", p, len(got), len(want))
		}
	}
}

// TestUnsquashfs checks the archive with Debian's squashfs-tools: the
// superblock summary, and a full extraction compared with the source,
// setuid bits, owners, mtimes and hard links included.
func TestUnsquashfs(t *testing.T) {
	unsq := hosttool.Require(t, "unsquashfs", "squashfs-tools")
	if os.Getuid() != 0 {
		t.Skip("extraction keeps owners and setuid only as root")
	}
	for _, tc := range []struct {
		name string
		opts Options
		want []string // lines of unsquashfs -s
	}{
		{"default", Options{Epoch: epoch}, []string{"Compression zstd", "compression-level 3", "Block size 131072"}},
		{"1m-level9", Options{Epoch: epoch, BlockSize: 1 << 20, Level: 9}, []string{"compression-level 9", "Block size 1048576"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := tc.opts.BlockSize
			if bs == 0 {
				bs = DefaultBlockSize
			}
			src, fx := makeTree(t, bs)
			// One inode per path, less the hard link, plus the root.
			tc.want = append(tc.want, fmt.Sprintf("Number of inodes %d", len(fx)))
			dir := t.TempDir()
			img := filepath.Join(dir, "root.sqfs")
			tc.opts.Logger = quiet
			if err := Build(context.Background(), src, img, tc.opts); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(unsq, "-s", img).CombinedOutput()
			if err != nil {
				t.Fatalf("unsquashfs -s: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("unsquashfs -s lacks %q:\n%s", w, out)
				}
			}
			list, err := exec.Command(unsq, "-lln", img).CombinedOutput()
			if err != nil {
				t.Fatalf("unsquashfs -lln: %v\n%s", err, list)
			}
			for _, w := range []string{"-rwsr-xr-x 0/0", "-rwxr-sr-x 1234/1235", "drwxrwxrwt 0/0", "squashfs-root/a/rel -> b/c/deep.txt"} {
				if !strings.Contains(string(list), w) {
					t.Errorf("unsquashfs -lln lacks %q:\n%s", w, list)
				}
			}
			x := filepath.Join(dir, "x")
			if out, err := exec.Command(unsq, "-q", "-n", "-d", x, img).CombinedOutput(); err != nil {
				t.Fatalf("unsquashfs extract: %v\n%s", err, out)
			}
			compareTrees(t, src, x)
		})
	}
}

func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	inodes := map[uint64]string{}
	err := filepath.Walk(want, func(p string, wfi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		gfi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: not extracted: %v", rel, err)
			return nil
		}
		ws, gs := wfi.Sys().(*syscall.Stat_t), gfi.Sys().(*syscall.Stat_t)
		if ws.Mode != gs.Mode || ws.Uid != gs.Uid || ws.Gid != gs.Gid || ws.Rdev != gs.Rdev {
			t.Errorf("%s: mode/owner/rdev %o %d:%d %#x, want %o %d:%d %#x", rel, gs.Mode, gs.Uid, gs.Gid, gs.Rdev, ws.Mode, ws.Uid, ws.Gid, ws.Rdev)
		}
		if wfi.Mode()&os.ModeSymlink == 0 && rel != "." && !gfi.ModTime().Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", rel, gfi.ModTime(), epoch)
		}
		switch {
		case wfi.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(filepath.Join(got, rel))
			if a != b {
				t.Errorf("%s: target %q, want %q", rel, b, a)
			}
		case wfi.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(filepath.Join(got, rel))
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs", rel)
			}
			// Hard links in the tree must come back as one inode.
			if ws.Nlink > 1 {
				if first, ok := inodes[ws.Ino]; ok {
					fs, _ := os.Stat(filepath.Join(got, first))
					if !os.SameFile(fs, gfi) {
						t.Errorf("%s: not hard-linked to %s", rel, first)
					}
				}
				inodes[ws.Ino] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReproducible checks which inputs change the bytes and which must not.
func TestReproducible(t *testing.T) {
	src, _ := makeTree(t, DefaultBlockSize)
	base := build(t, src, Options{Epoch: epoch})
	for _, tc := range []struct {
		name  string
		prep  func(t *testing.T) // mutates the tree before the rebuild
		opts  Options
		equal bool
	}{
		{name: "same-inputs", opts: Options{Epoch: epoch}, equal: true},
		{name: "one-worker", opts: Options{Epoch: epoch, Workers: 1}, equal: true},
		{name: "many-workers", opts: Options{Epoch: epoch, Workers: 7}, equal: true},
		{name: "host-mtimes-and-atimes", prep: func(t *testing.T) {
			err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
				if err != nil || fi.Mode()&os.ModeSymlink != 0 {
					return err
				}
				return os.Chtimes(p, time.Now(), time.Now().Add(-time.Hour))
			})
			if err != nil {
				t.Fatal(err)
			}
		}, opts: Options{Epoch: epoch}, equal: true},
		{name: "other-epoch", opts: Options{Epoch: epoch.Add(time.Second)}, equal: false},
		{name: "all-root", opts: Options{Epoch: epoch, AllRoot: true}, equal: os.Getuid() != 0},
		{name: "other-level", opts: Options{Epoch: epoch, Level: 19}, equal: false},
		{name: "content-changed", prep: func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(src, "a/b/c/deep.txt"), []byte("Deep\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, opts: Options{Epoch: epoch}, equal: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep(t)
			}
			got := build(t, src, tc.opts)
			if bytes.Equal(got, base) != tc.equal {
				t.Errorf("equal to the first build = %v, want %v", !tc.equal, tc.equal)
			}
		})
	}
}

// TestLargeDirectory covers directory-header splitting (256 entries per
// header, inode-block changes) and listings larger than a metadata block.
func TestLargeDirectory(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{"files", "links"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const n = 1500
	for i := range n {
		name := strings.Repeat("x", i%40) + "-" + string(rune('a'+i%26)) + "-" + time.Duration(i).String()
		if err := os.WriteFile(filepath.Join(src, "files", name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("t", filepath.Join(src, "links", name)); err != nil {
			t.Fatal(err)
		}
	}
	sq := openDiskfs(t, build(t, src, Options{Epoch: epoch, BlockSize: 4096}))
	for _, d := range []string{"files", "links"} {
		des, err := sq.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(des) != n {
			t.Errorf("%s: %d entries, want %d", d, len(des), n)
		}
		for i := 1; i < len(des); i++ {
			if des[i-1].Name() >= des[i].Name() {
				t.Errorf("%s: entries not sorted: %q before %q", d, des[i-1].Name(), des[i].Name())
				break
			}
		}
	}
	f, err := sq.OpenFile("files/-a-0s", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(f); string(b) != "-a-0s" {
		t.Errorf("content %q", b)
	}
}

func TestErrors(t *testing.T) {
	src, _ := makeTree(t, DefaultBlockSize)
	notDir := filepath.Join(src, "zero")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		src  string
		out  string // relative to a fresh dir; "" = root.sqfs
		opts Options
		want string
	}{
		{name: "missing-src", src: filepath.Join(src, "nope"), want: "no such file"},
		{name: "src-not-dir", src: notDir, want: "not a directory"},
		{name: "block-size", src: src, opts: Options{BlockSize: 3000}, want: "block size 3000"},
		{name: "block-size-too-big", src: src, opts: Options{BlockSize: 2 << 20}, want: "block size"},
		{name: "level", src: src, opts: Options{Level: 23}, want: "zstd level 23"},
		{name: "epoch-before-1970", src: src, opts: Options{Epoch: time.Unix(-1, 0)}, want: "uint32"},
		{name: "epoch-after-2106", src: src, opts: Options{Epoch: time.Unix(1<<32, 0)}, want: "uint32"},
		{name: "out-dir-missing", src: src, out: "no/such/dir/root.sqfs", want: "no such file"},
		{name: "canceled", ctx: canceled, src: src, want: context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			dir := t.TempDir()
			out := filepath.Join(dir, "root.sqfs")
			if tc.out != "" {
				out = filepath.Join(dir, tc.out)
			}
			tc.opts.Logger = quiet
			err := Build(ctx, tc.src, out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.name == "canceled" && !errors.Is(err, context.Canceled) {
				t.Errorf("err %v does not wrap context.Canceled", err)
			}
			left, _ := os.ReadDir(dir)
			if len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// BenchmarkBuildGOROOT archives the Go distribution (~250 MB, the size
// class of a Tandem rootfs) and reports input MB/s.
func BenchmarkBuildGOROOT(b *testing.B) {
	src := os.Getenv("TANDEM_BENCH_TREE")
	if src == "" {
		src = runtime.GOROOT()
	}
	for _, bs := range []int{128 << 10, 1 << 20} {
		for _, lvl := range []int{1, 3} {
			b.Run(fmt.Sprintf("bs=%dK/zstd=%d", bs>>10, lvl), func(b *testing.B) {
				out := filepath.Join(b.TempDir(), "root.sqfs")
				var in int64
				for b.Loop() {
					st, err := BuildStats(context.Background(), src, out, Options{Epoch: epoch, BlockSize: bs, Level: lvl, Logger: quiet})
					if err != nil {
						b.Fatal(err)
					}
					in = st.Input
					fi, _ := os.Stat(out)
					b.ReportMetric(float64(fi.Size())/float64(st.Input), "ratio")
				}
				b.SetBytes(in)
			})
		}
	}
}
