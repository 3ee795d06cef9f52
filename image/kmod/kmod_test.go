package kmod

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeELF returns a minimal relocatable ELF64 whose only real section is
// .modinfo holding the given key=value strings, NUL-separated like kbuild
// emits them.
func fakeELF(t *testing.T, info []string) []byte {
	t.Helper()
	var modinfo []byte
	for _, kv := range info {
		modinfo = append(modinfo, kv...)
		modinfo = append(modinfo, 0)
	}
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	miOff := uint64(ehsize)
	ssOff := miOff + uint64(len(modinfo))
	shOff := (ssOff + uint64(len(shstr)) + 7) &^ 7

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	write := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	write(hdr)
	b.Write(modinfo)
	b.Write(shstr)
	b.Write(make([]byte, shOff-uint64(b.Len())))
	write(elf.Section64{}) // SHN_UNDEF
	write(elf.Section64{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: miOff, Size: uint64(len(modinfo)), Addralign: 1})
	write(elf.Section64{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: ssOff, Size: uint64(len(shstr)), Addralign: 1})
	return b.Bytes()
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeModule writes rel (suffix picks the compression) into dir.
func writeModule(t *testing.T, dir, rel string, info ...string) {
	t.Helper()
	raw := fakeELF(t, info)
	var buf bytes.Buffer
	switch moduleSuffix(rel) {
	case ".ko":
		buf.Write(raw)
	case ".ko.xz":
		w, err := xz.NewWriter(&buf)
		if err == nil {
			_, err = w.Write(raw)
		}
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	case ".ko.zst":
		w, err := zstd.NewWriter(&buf)
		if err == nil {
			_, err = w.Write(raw)
		}
		if err == nil {
			err = w.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("bad test module name %s", rel)
	}
	writeFile(t, filepath.Join(dir, rel), buf.Bytes())
}

// fakeKernel is shaped after Debian's 6.1 modules tree, including its
// softdeps on the crc32c aliases and ipmi's post softdep on a user.
func fakeKernel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mods := []struct {
		path string
		info []string
	}{
		{"kernel/fs/ext4/ext4.ko", []string{"softdep=pre: crypto-crc32c", "alias=fs-ext4", "depends=jbd2,mbcache,crc16", "name=ext4"}},
		{"kernel/fs/jbd2/jbd2.ko.xz", []string{"softdep=pre: crypto-crc32c", "depends=", "name=jbd2"}},
		{"kernel/fs/mbcache.ko.zst", []string{"depends=", "name=mbcache"}},
		{"kernel/crypto/crc32c_generic.ko", []string{"alias=crypto-crc32c", "alias=crc32c", "depends=", "name=crc32c_generic"}},
		{"kernel/arch/x86/crypto/crc32c-intel.ko", []string{"alias=crypto-crc32c", "alias=crc32c", "alias=cpu:type:x86,ven*fam*mod*:feature:*0094*", "depends=", "name=crc32c_intel"}},
		{"kernel/lib/libcrc32c.ko", []string{"softdep=pre: crc32c", "depends=", "name=libcrc32c"}},
		{"kernel/lib/lru_cache.ko", []string{"depends=", "name=lru_cache"}},
		{"kernel/drivers/block/drbd/drbd.ko", []string{"depends=lru_cache,libcrc32c", "name=drbd"}},
		{"kernel/drivers/virtio/virtio_ring.ko", []string{"depends=", "name=virtio_ring"}},
		{"kernel/drivers/virtio/virtio.ko", []string{"depends=virtio_ring", "name=virtio"}},
		{"kernel/drivers/block/virtio_blk.ko", []string{"alias=virtio:d00000002v*", "depends=virtio,virtio_ring", "name=virtio_blk"}},
		{"kernel/drivers/char/ipmi/ipmi_msghandler.ko", []string{"softdep=post: ipmi_devintf", "depends=", "name=ipmi_msghandler"}},
		{"kernel/drivers/char/ipmi/ipmi_devintf.ko", []string{"depends=ipmi_msghandler", "name=ipmi_devintf"}},
		// cifs in 6.1 has softdeps without "pre:", which kmod ignores.
		{"kernel/fs/smb/cifs.ko", []string{"softdep=gcm", "softdep=pre: nls_utf8 no_such_module", "depends=", "name=cifs"}},
		{"kernel/fs/nls/nls_utf8.ko", []string{"depends=", "name=nls_utf8"}},
		{"kernel/fs/old-style.ko", []string{"depends=", "alias=fs-old"}}, // no name=: from the file name
	}
	for _, m := range mods {
		writeModule(t, dir, m.path, m.info...)
	}
	writeFile(t, filepath.Join(dir, "modules.builtin"), []byte("kernel/lib/crc16.ko\nkernel/fs/squashfs/squashfs.ko\n"))
	writeFile(t, filepath.Join(dir, "modules.builtin.modinfo"), []byte("squashfs.alias=fs-squashfs\x00squashfs.license=GPL\x00unix.alias=net-pf-1\x00"))
	writeFile(t, filepath.Join(dir, "modules.order"), []byte("kernel/fs/ext4/ext4.ko\n"))
	return dir
}

func TestScan(t *testing.T) {
	s, err := Scan(fakeKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		depends  []string
		pre      []string
		post     []string
		aliasLen int
	}{
		{"ext4", "kernel/fs/ext4/ext4.ko", []string{"jbd2", "mbcache", "crc16"}, []string{"crypto-crc32c"}, nil, 1},
		{"jbd2", "kernel/fs/jbd2/jbd2.ko.xz", nil, []string{"crypto-crc32c"}, nil, 0},
		{"mbcache", "kernel/fs/mbcache.ko.zst", nil, nil, nil, 0},
		{"crc32c_intel", "kernel/arch/x86/crypto/crc32c-intel.ko", nil, nil, nil, 3},
		{"ipmi_msghandler", "kernel/drivers/char/ipmi/ipmi_msghandler.ko", nil, nil, []string{"ipmi_devintf"}, 0},
		{"cifs", "kernel/fs/smb/cifs.ko", nil, []string{"nls_utf8", "no_such_module"}, nil, 0},
		{"old_style", "kernel/fs/old-style.ko", nil, nil, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := s.Modules[tc.name]
			if m == nil {
				t.Fatalf("module %s not found", tc.name)
			}
			if m.Path != tc.path || !slices.Equal(m.Depends, tc.depends) || !slices.Equal(m.SoftPre, tc.pre) ||
				!slices.Equal(m.SoftPost, tc.post) || len(m.Aliases) != tc.aliasLen {
				t.Errorf("got %+v", m)
			}
		})
	}
	if len(s.Modules) != 16 {
		t.Errorf("%d modules, want 16", len(s.Modules))
	}
	for _, b := range []string{"crc16", "squashfs", "unix"} {
		if !s.Builtin[b] {
			t.Errorf("%s not built in", b)
		}
	}
}

func TestScanErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr string
	}{
		{"not ELF", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "kernel/a.ko"), []byte("junk")) }, "kernel/a.ko"},
		{"no modinfo", func(t *testing.T, dir string) {
			b := fakeELF(t, nil)
			copy(b[bytes.Index(b, []byte(".modinfo")):], ".nothing")
			writeFile(t, filepath.Join(dir, "kernel/a.ko"), b)
		}, "no .modinfo"},
		{"bad xz", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "kernel/a.ko.xz"), fakeELF(t, nil)) }, "xz"},
		{"duplicate", func(t *testing.T, dir string) {
			writeModule(t, dir, "kernel/a/x-y.ko", "name=x_y")
			writeModule(t, dir, "updates/x_y.ko.zst")
		}, "module x_y twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			_, err := Scan(dir)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestClosure(t *testing.T) {
	s, err := Scan(fakeKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		// crc32c must load before jbd2/ext4 (DESIGN.md); crc16 is built in.
		{"ext4", []string{"ext4"}, []string{"crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "ext4"}, ""},
		{"drbd", []string{"drbd"}, []string{"lru_cache", "crc32c_generic", "crc32c_intel", "libcrc32c", "drbd"}, ""},
		{"input order kept, shared deps once", []string{"virtio_blk", "drbd", "ext4"},
			[]string{"virtio_ring", "virtio", "virtio_blk", "lru_cache", "crc32c_generic", "crc32c_intel", "libcrc32c", "drbd", "jbd2", "mbcache", "ext4"}, ""},
		{"dash and alias names", []string{"crc32c-generic", "fs-ext4"}, []string{"crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "ext4"}, ""},
		{"wildcard alias", []string{"virtio:d00000002v00001AF4"}, []string{"virtio_ring", "virtio", "virtio_blk"}, ""},
		// post softdep that hard-depends on its owner: owner first.
		{"post softdep", []string{"ipmi_msghandler"}, []string{"ipmi_msghandler", "ipmi_devintf"}, ""},
		{"user of post softdep", []string{"ipmi_devintf"}, []string{"ipmi_msghandler", "ipmi_devintf"}, ""},
		{"unknown softdep skipped, modeless ignored", []string{"cifs"}, []string{"nls_utf8", "cifs"}, ""},
		{"built-ins dropped", []string{"squashfs", "crc16", "fs-squashfs"}, nil, ""},
		{"name from file name", []string{"old-style"}, []string{"old_style"}, ""},
		{"unknown", []string{"ext4", "nosuch"}, nil, `unknown module "nosuch"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Closure(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Closure(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			again, _ := s.Closure(tc.in)
			if !slices.Equal(got, again) {
				t.Errorf("not deterministic: %q then %q", got, again)
			}
			checkHardOrder(t, s, got)
		})
	}
}

// checkHardOrder asserts every module comes after its hard dependencies.
func checkHardOrder(t *testing.T, s *Set, order []string) {
	t.Helper()
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	for i, n := range order {
		for _, d := range s.Modules[n].Depends {
			if j, ok := pos[d]; ok && j > i {
				t.Errorf("%s loads before its dependency %s", n, d)
			}
		}
	}
}

func TestClosureGraphs(t *testing.T) {
	tests := []struct {
		name    string
		mods    map[string][]string // name -> modinfo
		in      []string
		want    []string
		wantErr string
	}{
		{"hard cycle", map[string][]string{"a": {"depends=b"}, "b": {"depends=a"}}, []string{"a"}, nil, "dependency cycle: a -> b -> a"},
		{"unknown hard dep", map[string][]string{"a": {"depends=gone"}}, []string{"a"}, nil, `a depends on unknown module "gone"`},
		// a wants b first, but b needs a: the soft edge yields.
		{"pre softdep against hard dep", map[string][]string{"a": {"softdep=pre: b"}, "b": {"depends=a"}}, []string{"a"}, []string{"a", "b"}, ""},
		{"soft cycle", map[string][]string{"a": {"softdep=pre: b"}, "b": {"softdep=pre: a"}}, []string{"a"}, []string{"b", "a"}, ""},
		{"pre before post", map[string][]string{"a": {"softdep=pre: b post: c", "depends=d"}, "b": nil, "c": nil, "d": nil}, []string{"a"}, []string{"b", "d", "a", "c"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, info := range tc.mods {
				writeModule(t, dir, "kernel/"+n+".ko", append([]string{"name=" + n}, info...)...)
			}
			s, err := Scan(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Closure(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Closure = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteIndex(t *testing.T) {
	s, err := Scan(fakeKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		only             []string
		dep, soft, alias string
		wantErr          string
	}{
		{
			name: "subset",
			only: []string{"ext4", "jbd2", "mbcache", "crc32c_generic", "virtio_blk", "virtio", "virtio_ring"},
			dep: "kernel/crypto/crc32c_generic.ko:\n" +
				"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n" +
				"kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n" +
				"kernel/drivers/virtio/virtio_ring.ko:\n" +
				"kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko.zst kernel/fs/jbd2/jbd2.ko.xz\n" +
				"kernel/fs/jbd2/jbd2.ko.xz:\n" +
				"kernel/fs/mbcache.ko.zst:\n",
			soft: "# Soft dependencies extracted from modules themselves.\n" +
				"softdep ext4 pre: crypto-crc32c\n" +
				"softdep jbd2 pre: crypto-crc32c\n",
			alias: "# Aliases extracted from modules themselves.\n" +
				"alias crypto-crc32c crc32c_generic\n" +
				"alias crc32c crc32c_generic\n" +
				"alias fs-ext4 ext4\n" +
				"alias virtio:d00000002v* virtio_blk\n",
		},
		{name: "not closed", only: []string{"ext4"}, wantErr: "ext4 needs mbcache, which is not in the subset"},
		{name: "unknown", only: []string{"nosuch"}, wantErr: `unknown module "nosuch"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := s.WriteIndex(dir, tc.only)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for file, want := range map[string]string{"modules.dep": tc.dep, "modules.softdep": tc.soft, "modules.alias": tc.alias} {
				if got := readFile(t, filepath.Join(dir, file)); got != want {
					t.Errorf("%s:\n%s\nwant:\n%s", file, got, want)
				}
			}
			for _, f := range copiedIndexes {
				if readFile(t, filepath.Join(dir, f)) != readFile(t, filepath.Join(s.Dir, f)) {
					t.Errorf("%s not copied", f)
				}
			}
		})
	}

	t.Run("all, in place", func(t *testing.T) {
		if err := s.WriteIndex(s.Dir, nil); err != nil {
			t.Fatal(err)
		}
		dep := readFile(t, filepath.Join(s.Dir, "modules.dep"))
		if n := strings.Count(dep, "\n"); n != len(s.Modules) {
			t.Errorf("modules.dep has %d lines, want %d", n, len(s.Modules))
		}
		if !strings.Contains(dep, "kernel/drivers/block/drbd/drbd.ko: kernel/lib/libcrc32c.ko kernel/lib/lru_cache.ko\n") {
			t.Errorf("modules.dep lacks drbd:\n%s", dep)
		}
		if readFile(t, filepath.Join(s.Dir, "modules.order")) != "kernel/fs/ext4/ext4.ko\n" {
			t.Errorf("modules.order damaged by in-place write")
		}
	})
}

func TestCopy(t *testing.T) {
	src := fakeKernel(t)
	dst := filepath.Join(t.TempDir(), "6.1.0-test-amd64")
	if err := Copy(src, dst, []string{"ext4"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "ext4"}
	var files []string
	err := filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dst, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{
		"kernel/arch/x86/crypto/crc32c-intel.ko", "kernel/crypto/crc32c_generic.ko",
		"kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/mbcache.ko.zst",
		"modules.alias", "modules.builtin", "modules.builtin.modinfo", "modules.dep", "modules.order", "modules.softdep",
	}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("copied %q\nwant   %q", files, wantFiles)
	}
	if readFile(t, filepath.Join(dst, "kernel/fs/jbd2/jbd2.ko.xz")) != readFile(t, filepath.Join(src, "kernel/fs/jbd2/jbd2.ko.xz")) {
		t.Errorf("jbd2.ko.xz content differs")
	}
	// The copy is a complete modules dir: scanning it gives the closure.
	s2, err := Scan(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Closure([]string{"ext4"}); err != nil || !slices.Equal(got, want) {
		t.Errorf("closure of the copy = %q, %v", got, err)
	}
	if err := Copy(src, t.TempDir(), []string{"nosuch"}); err == nil {
		t.Errorf("Copy of an unknown module succeeded")
	}
}
