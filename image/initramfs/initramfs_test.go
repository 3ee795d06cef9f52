package initramfs

import (
	"bytes"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

const epoch = 1700000000

func sample(t *testing.T) *Builder {
	t.Helper()
	host := filepath.Join(t.TempDir(), "tandem")
	if err := os.WriteFile(host, []byte("ELF pretend"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := New(time.Unix(epoch, 0))
	b.AddHostFile("/init", host, 0o755)
	b.AddFile("etc/tandem/image.toml", []byte("version = 1\n"), 0o644)
	b.AddFile("usr/bin/su", []byte("s"), 0o755|fs.ModeSetuid)
	b.AddFile("usr/bin/unixstyle", []byte("u"), 0o2755) // Unix setgid bit, not fs.ModeSetgid
	b.AddSymlink("bin", "usr/bin")
	b.AddSymlink("lib", "usr/lib")
	b.AddDir("tmp", 0o777|fs.ModeSticky)
	b.AddDir("root", 0o700)
	b.AddCharDev("dev/console", 0o600, 5, 1)
	b.AddFile("usr/lib/modules/6.1.0-56-amd64/modules.dep", nil, 0o644)
	b.AddFile("a-b", []byte("dash sorts before slash"), 0o644)
	b.AddFile("a/b", []byte("child"), 0o644)
	return b
}

func build(t *testing.T, b *Builder) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := b.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTo = %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

func TestReproducible(t *testing.T) {
	ref := build(t, sample(t))
	reversed := sample(t)
	slices.Reverse(reversed.entries)
	later := sample(t)
	later.Epoch = later.Epoch.Add(time.Second)
	tests := []struct {
		name string
		b    *Builder
		same bool
	}{
		{"same input", sample(t), true}, // fresh temp host file: new inode and mtime on the host
		{"insertion order does not matter", reversed, true},
		{"epoch matters", later, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := build(t, tc.b); bytes.Equal(got, ref) != tc.same {
				t.Errorf("identical = %v, want %v", !tc.same, tc.same)
			}
		})
	}
}

type rec struct {
	mode         uint64
	body         string
	rmajor, rmin uint64
}

func TestReadBack(t *testing.T) {
	out := build(t, sample(t))
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(out)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]rec{
		"a":                              {mode: cpio.S_IFDIR | 0o755},
		"a-b":                            {mode: cpio.S_IFREG | 0o644, body: "dash sorts before slash"},
		"a/b":                            {mode: cpio.S_IFREG | 0o644, body: "child"},
		"bin":                            {mode: cpio.S_IFLNK | 0o777, body: "usr/bin"},
		"dev":                            {mode: cpio.S_IFDIR | 0o755},
		"dev/console":                    {mode: cpio.S_IFCHR | 0o600, rmajor: 5, rmin: 1},
		"etc":                            {mode: cpio.S_IFDIR | 0o755},
		"etc/tandem":                     {mode: cpio.S_IFDIR | 0o755},
		"etc/tandem/image.toml":          {mode: cpio.S_IFREG | 0o644, body: "version = 1\n"},
		"init":                           {mode: cpio.S_IFREG | 0o755, body: "ELF pretend"},
		"lib":                            {mode: cpio.S_IFLNK | 0o777, body: "usr/lib"},
		"root":                           {mode: cpio.S_IFDIR | 0o700},
		"tmp":                            {mode: cpio.S_IFDIR | 0o777 | cpio.S_ISVTX},
		"usr":                            {mode: cpio.S_IFDIR | 0o755},
		"usr/bin":                        {mode: cpio.S_IFDIR | 0o755},
		"usr/bin/su":                     {mode: cpio.S_IFREG | 0o755 | cpio.S_ISUID, body: "s"},
		"usr/bin/unixstyle":              {mode: cpio.S_IFREG | 0o755 | cpio.S_ISGID, body: "u"},
		"usr/lib":                        {mode: cpio.S_IFDIR | 0o755},
		"usr/lib/modules":                {mode: cpio.S_IFDIR | 0o755},
		"usr/lib/modules/6.1.0-56-amd64": {mode: cpio.S_IFDIR | 0o755},
		"usr/lib/modules/6.1.0-56-amd64/modules.dep": {mode: cpio.S_IFREG | 0o644},
	}
	var names []string
	seen := map[string]bool{}
	for i, r := range recs {
		names = append(names, r.Name)
		w, ok := want[r.Name]
		if !ok {
			t.Errorf("unexpected record %s", r.Name)
			continue
		}
		body, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		if r.Mode != w.mode || string(body) != w.body || r.Rmajor != w.rmajor || r.Rminor != w.rmin {
			t.Errorf("%s: mode %#o body %q dev %d:%d; want mode %#o body %q dev %d:%d",
				r.Name, r.Mode, body, r.Rmajor, r.Rminor, w.mode, w.body, w.rmajor, w.rmin)
		}
		if r.MTime != epoch || r.UID != 0 || r.GID != 0 || r.Ino != uint64(i+1) {
			t.Errorf("%s: mtime %d uid %d gid %d ino %d; want %d 0 0 %d", r.Name, r.MTime, r.UID, r.GID, r.Ino, epoch, i+1)
		}
		if dir := path.Dir(r.Name); dir != "." && !seen[dir] {
			t.Errorf("%s comes before its directory %s", r.Name, dir)
		}
		seen[r.Name] = true
	}
	if !slices.IsSorted(names) || len(names) != len(want) {
		t.Errorf("records %q: want %d sorted records", names, len(want))
	}
	// The trailer record (110-byte header + name + padding) ends the archive.
	if i := bytes.LastIndex(out, []byte(cpio.Trailer)); i < 0 || len(out)-i > 16 {
		t.Errorf("no trailer at the end")
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		epoch   int64
		entries []Entry
		wantErr string
	}{
		{"duplicate", epoch, []Entry{{Path: "/init", Data: []byte("a")}, {Path: "init", Data: []byte("b")}}, "init added twice"},
		{"dotdot", epoch, []Entry{{Path: "../etc/passwd"}}, "leaves the archive root"},
		{"root", epoch, []Entry{{Path: "/", Mode: fs.ModeDir}}, "names the root"},
		{"file under symlink", epoch, []Entry{{Path: "lib", Mode: fs.ModeSymlink, Target: "usr/lib"}, {Path: "lib/modules/x"}}, "parent lib is not a directory"},
		{"missing host file", epoch, []Entry{{Path: "init", HostPath: "/nonexistent/tandem"}}, "/nonexistent/tandem"},
		{"host dir", epoch, []Entry{{Path: "init", HostPath: os.TempDir()}}, "not a regular file"},
		{"symlink without target", epoch, []Entry{{Path: "x", Mode: fs.ModeSymlink}}, "without a target"},
		{"fifo", epoch, []Entry{{Path: "x", Mode: fs.ModeNamedPipe}}, "unsupported file type"},
		{"negative epoch", -1, nil, "32-bit mtime"},
		{"epoch past 2106", 1 << 32, nil, "32-bit mtime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(io.Discard, time.Unix(tc.epoch, 0), tc.entries)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestAddTree(t *testing.T) {
	host := t.TempDir()
	// Like os.MkdirTemp: the host dir's 0700 must not leak into the archive.
	if err := os.Chmod(host, 0o700); err != nil {
		t.Fatal(err)
	}
	mk := func(p string, mode fs.FileMode, body string) {
		t.Helper()
		full := filepath.Join(host, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("kernel/fs/ext4/ext4.ko", 0o644, "elf")
	mk("modules.dep", 0o600, "kernel/fs/ext4/ext4.ko:\n")
	if err := os.Mkdir(filepath.Join(host, "private"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("kernel/fs", filepath.Join(host, "fs")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		dir     string
		want    map[string]rec
		wantErr string
	}{
		{"modules tree", host, map[string]rec{
			"usr":                                        {mode: cpio.S_IFDIR | 0o755},
			"usr/lib":                                    {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules":                            {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules/6.1":                        {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules/6.1/fs":                     {mode: cpio.S_IFLNK | 0o777, body: "kernel/fs"},
			"usr/lib/modules/6.1/kernel":                 {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules/6.1/kernel/fs":              {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules/6.1/kernel/fs/ext4":         {mode: cpio.S_IFDIR | 0o755},
			"usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko": {mode: cpio.S_IFREG | 0o644, body: "elf"},
			"usr/lib/modules/6.1/modules.dep":            {mode: cpio.S_IFREG | 0o600, body: "kernel/fs/ext4/ext4.ko:\n"},
			"usr/lib/modules/6.1/private":                {mode: cpio.S_IFDIR | 0o750},
		}, ""},
		{"missing dir", filepath.Join(host, "nope"), nil, "add tree"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(time.Unix(epoch, 0))
			err := b.AddTree("usr/lib/modules/6.1", tc.dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("AddTree err = %v, want %q", err, tc.wantErr)
				}
				if _, err := b.WriteTo(io.Discard); err == nil {
					t.Errorf("WriteTo after a failed AddTree succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(build(t, b))))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]rec{}
			for _, r := range recs {
				body, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
				got[r.Name] = rec{mode: r.Mode, body: string(body)}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}
