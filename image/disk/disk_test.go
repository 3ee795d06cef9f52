package disk

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem.dev/tandem/internal/hosttool"

	"github.com/diskfs/go-diskfs/backend/file"
	dsq "github.com/diskfs/go-diskfs/filesystem/squashfs"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/image/squashfs"
)

var epoch = time.Unix(1700000000, 0) // 2023-11-14 22:13:20 UTC

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fixture is shared by the tests: fake boot files and a small squashfs.
type fixture struct {
	in  Inputs
	sq  []byte
	dir string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "usr/bin/tandem"), random(t, 300<<10), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/bin", filepath.Join(tree, "bin")); err != nil {
		t.Fatal(err)
	}
	sqPath := filepath.Join(dir, "root.sqfs")
	if err := squashfs.Build(context.Background(), tree, sqPath, squashfs.Options{Epoch: epoch, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	sq, err := os.ReadFile(sqPath)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, sq: sq, in: Inputs{
		Version:      "2025.1-abc123",
		Seed:         []byte("spec-hash-1"),
		Epoch:        epoch,
		SystemdBoot:  append([]byte("MZ"), random(t, 100<<10)...),
		Kernel:       random(t, 3<<20),
		Initrd:       random(t, 2<<20+17),
		Cmdline:      "console=ttyS0 quiet",
		RootSquashfs: sqPath,
		ImageSize:    300 * MiB,
		ESPSize:      40 * MiB,
		RootSize:     48 * MiB,
		ConfigSize:   34 * MiB,
	}}
}

func (fx *fixture) write(t *testing.T, in Inputs) (string, []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tandem.img")
	var lines []string
	if err := Write(context.Background(), out, in, func(s string) { lines = append(lines, s) }); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return out, lines
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestWriteAndInspect(t *testing.T) {
	fx := newFixture(t)
	in := fx.in
	in.SiteTOML = []byte("[site]\nname = \"lab\"\n")
	img, lines := fx.write(t, in)
	r, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}

	if r.Size != 300*MiB {
		t.Errorf("size %d", r.Size)
	}
	if want := GUID(in.Seed, "disk"); r.DiskGUID != want {
		t.Errorf("disk GUID %s, want %s", r.DiskGUID, want)
	}
	wantParts := []struct {
		name  string
		typ   string
		start int64
		size  int64
	}{
		{manifest.LabelESP, string(TypeESP), 1 * MiB, 40 * MiB},
		{manifest.LabelRootA, string(TypeRoot), 41 * MiB, 48 * MiB},
		{manifest.LabelRootB, string(TypeRoot), 89 * MiB, 48 * MiB},
		{manifest.LabelConfig, string(TypeConfig), 137 * MiB, 34 * MiB},
		{manifest.LabelState, string(TypeState), 171 * MiB, 128 * MiB},
	}
	if len(r.Partitions) != len(wantParts) {
		t.Fatalf("%d partitions, want %d: %+v", len(r.Partitions), len(wantParts), r.Partitions)
	}
	for i, w := range wantParts {
		p := r.Partitions[i]
		if p.Index != i+1 || p.Name != w.name || p.Type != w.typ || p.Start != w.start || p.Size != w.size {
			t.Errorf("partition %d = %+v, want %+v", i+1, p, w)
		}
		if want := GUID(in.Seed, "partition:"+w.name); p.GUID != want {
			t.Errorf("%s GUID %s, want %s", p.Name, p.GUID, want)
		}
	}

	// ESP: exactly these files, with these contents.
	wantESP := map[string][]byte{
		"EFI/BOOT/BOOTX64.EFI":           in.SystemdBoot,
		"loader/loader.conf":             []byte("default tandem-a*\ntimeout 0\neditor no\nconsole-mode keep\n"),
		"loader/entries/tandem-a+3.conf": []byte("title Tandem 2025.1-abc123 (slot A)\nversion 2025.1-abc123\nsort-key tandem\nlinux /tandem/a/vmlinuz\ninitrd /tandem/a/initrd.img\noptions console=ttyS0 quiet tandem.slot=a\n"),
		"loader/entries/tandem-b+3.conf": []byte("title Tandem 2025.1-abc123 (slot B)\nversion 2025.1-abc123\nsort-key tandem\nlinux /tandem/b/vmlinuz\ninitrd /tandem/b/initrd.img\noptions console=ttyS0 quiet tandem.slot=b\n"),
		"tandem/a/vmlinuz":               in.Kernel,
		"tandem/a/initrd.img":            in.Initrd,
		"tandem/b/vmlinuz":               in.Kernel,
		"tandem/b/initrd.img":            in.Initrd,
	}
	checkVolume(t, "esp", r.ESP, "ESP", wantESP)
	if r.LoaderConf != string(wantESP["loader/loader.conf"]) {
		t.Errorf("LoaderConf = %q", r.LoaderConf)
	}
	if len(r.Entries) != 2 || r.Entries["tandem-a+3.conf"] != string(wantESP["loader/entries/tandem-a+3.conf"]) ||
		r.Entries["tandem-b+3.conf"] != string(wantESP["loader/entries/tandem-b+3.conf"]) {
		t.Errorf("Entries = %q", r.Entries)
	}
	checkVolume(t, "config", r.Config, "TANDEM-CFG", map[string][]byte{
		"README.txt": []byte(ReadmeText),
		"site.toml":  in.SiteTOML,
	})
	if !strings.Contains(ReadmeText, "site.toml") {
		t.Error("README does not tell the operator about site.toml")
	}

	// ReadFile returns large files whole.
	for _, tc := range []struct {
		part, name string
		want       []byte
		err        string
	}{
		{manifest.LabelESP, "tandem/b/initrd.img", in.Initrd, ""},
		{manifest.LabelESP, "/EFI/BOOT/BOOTX64.EFI", in.SystemdBoot, ""},
		{manifest.LabelConfig, "site.toml", in.SiteTOML, ""},
		{manifest.LabelESP, "nope", nil, "does not exist"},
		{"nope", "site.toml", nil, `no partition "nope"`},
	} {
		got, err := ReadFile(img, tc.part, tc.name)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) || !bytes.Equal(got, tc.want) {
			t.Errorf("ReadFile(%s, %s) = %d bytes, %v; want %d bytes, error %q", tc.part, tc.name, len(got), err, len(tc.want), tc.err)
		}
	}

	// Roots hold the squashfs, then zeros; go-diskfs mounts it in place.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{manifest.LabelRootA, manifest.LabelRootB} {
		p := r.Partition(name)
		got := make([]byte, p.Size)
		if _, err := f.ReadAt(got, p.Start); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(fx.sq)], fx.sq) || !allZero(got[len(fx.sq):]) {
			t.Errorf("%s does not hold exactly the squashfs", name)
		}
		sq, err := dsq.Read(file.New(f, true), p.Size, p.Start, 0)
		if err != nil {
			t.Fatalf("%s: go-diskfs cannot read the squashfs: %v", name, err)
		}
		if des, err := sq.ReadDir("usr/bin"); err != nil || len(des) != 1 || des[0].Name() != "tandem" {
			t.Errorf("%s: usr/bin = %v, %v", name, des, err)
		}
	}
	st := r.Partition(manifest.LabelState)
	zero := make([]byte, st.Size)
	if _, err := f.ReadAt(zero, st.Start); err != nil {
		t.Fatal(err)
	}
	if !allZero(zero) {
		t.Error("state partition is not blank")
	}

	// Sparse: the blank state and slack are holes.
	fi, _ := f.Stat()
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 200*MiB {
		t.Errorf("image uses %d MiB on disk for %d MiB: not sparse", used/MiB, fi.Size()/MiB)
	}
	// It carries a site config, and so its pair key: root only.
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want -rw------- (the image carries site.toml)", fi.Mode())
	}

	wantLines := []string{"disk: esp", "disk: root-a 0.3 MB", "disk: root-b 0.3 MB", "disk: config", "disk: state 134.2 MB (blank)"}
	if strings.Join(lines, "|") != strings.Join(wantLines, "|") {
		t.Errorf("progress = %q, want %q", lines, wantLines)
	}
}

func checkVolume(t *testing.T, name string, v Volume, label string, want map[string][]byte) {
	t.Helper()
	if v.Label != label {
		t.Errorf("%s: label %q, want %q", name, v.Label, label)
	}
	if len(v.Files) != len(want) {
		var got []string
		for _, f := range v.Files {
			got = append(got, f.Path)
		}
		t.Errorf("%s: files %q, want %d files", name, got, len(want))
	}
	for p, data := range want {
		f := v.File(p)
		switch {
		case f == nil:
			t.Errorf("%s: %s missing", name, p)
		case f.Path != p:
			t.Errorf("%s: %s stored as %s (case)", name, p, f.Path)
		case f.Size != int64(len(data)) || f.SHA256 != sum(data):
			t.Errorf("%s: %s differs (%d bytes, want %d)", name, p, f.Size, len(data))
		}
	}
}

func allZero(b []byte) bool { return len(bytes.TrimLeft(b, "\x00")) == 0 }

// TestReproducible checks which inputs change the image and how.
func TestReproducible(t *testing.T) {
	fx := newFixture(t)
	base, _ := fx.write(t, fx.in)
	baseSum := fileSum(t, base)
	baseRep, err := Inspect(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		mod       func(*Inputs)
		sameBytes bool
		sameGUIDs bool
	}{
		{"same-inputs", func(*Inputs) {}, true, true},
		// FAT times have 2 s resolution: cross at least one tick.
		{"same-inputs-other-wall-clock", func(*Inputs) { time.Sleep(2100 * time.Millisecond) }, true, true},
		{"other-seed", func(in *Inputs) { in.Seed = []byte("spec-hash-2") }, false, false},
		{"other-epoch", func(in *Inputs) { in.Epoch = epoch.Add(24 * time.Hour) }, false, true},
		{"site-toml", func(in *Inputs) { in.SiteTOML = []byte("x = 1\n") }, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fx.in
			tc.mod(&in)
			img, _ := fx.write(t, in)
			if got := fileSum(t, img) == baseSum; got != tc.sameBytes {
				t.Errorf("same sha256 = %v, want %v", got, tc.sameBytes)
			}
			r, err := Inspect(img)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.DiskGUID == baseRep.DiskGUID; got != tc.sameGUIDs {
				t.Errorf("same disk GUID = %v, want %v", got, tc.sameGUIDs)
			}
			for i, p := range r.Partitions {
				if got := p.GUID == baseRep.Partitions[i].GUID; got != tc.sameGUIDs {
					t.Errorf("%s: same GUID = %v, want %v", p.Name, got, tc.sameGUIDs)
				}
			}
			if got := r.ESP.Serial == baseRep.ESP.Serial && r.Config.Serial == baseRep.Config.Serial; got != tc.sameGUIDs {
				t.Errorf("same FAT serials = %v, want %v", got, tc.sameGUIDs)
			}
		})
	}
}

// TestFATTimestamps reads every directory entry of both FAT volumes and
// checks that each timestamp field is the epoch, whatever go-diskfs or
// SOURCE_DATE_EPOCH in the environment would have put there.
func TestFATTimestamps(t *testing.T) {
	fx := newFixture(t)
	for _, tc := range []struct {
		name  string
		epoch time.Time
		env   string // SOURCE_DATE_EPOCH seen by go-diskfs
		want  time.Time
	}{
		{"epoch", epoch, "", epoch},
		{"odd-second", epoch.Add(time.Second), "", epoch.Add(time.Second)},
		{"env-ignored", epoch, "1234567890", epoch},
		{"before-1980", time.Unix(0, 0), "", time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", tc.env)
			in := fx.in
			in.Epoch = tc.epoch
			img, _ := fx.write(t, in)
			r, err := Inspect(img)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			date, tm, tenths := fatTime(tc.want)
			for _, name := range []string{manifest.LabelESP, manifest.LabelConfig} {
				p := r.Partition(name)
				g, err := readGeometry(f, p.Start)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				err = g.walkDir(f, g.rootCluster, func(de dirEntry) error {
					n++
					e := de.raw
					le := func(o int) uint16 { return uint16(e[o]) | uint16(e[o+1])<<8 }
					if e[13] != tenths || le(14) != tm || le(16) != date || le(18) != date || le(22) != tm || le(24) != date {
						t.Errorf("%s: entry %q has time fields % x, want date %04x time %04x tenths %d",
							name, e[:11], e[13:26], date, tm, tenths)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if n < 2 {
					t.Errorf("%s: only %d entries walked", name, n)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	fx := newFixture(t)
	big := filepath.Join(fx.dir, "big.sqfs")
	if err := os.WriteFile(big, make([]byte, 48*MiB+1), 0o644); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		mod  func(*Inputs)
		want string
	}{
		{name: "oversize-squashfs", mod: func(in *Inputs) { in.RootSquashfs = big }, want: "larger than the 48 MiB root partition"},
		{name: "missing-squashfs", mod: func(in *Inputs) { in.RootSquashfs = big + ".nope" }, want: "no such file"},
		{name: "missing-inputs", mod: func(in *Inputs) { in.Kernel, in.Seed = nil, nil }, want: "inputs lack Seed, Kernel"},
		{name: "unaligned-size", mod: func(in *Inputs) { in.RootSize = 48*MiB + 512 }, want: "multiple of 1 MiB"},
		{name: "image-too-small", mod: func(in *Inputs) { in.ImageSize = 160 * MiB }, want: "no room for tandem-state"},
		{name: "state-too-big", mod: func(in *Inputs) { in.StateSize = 200 * MiB }, want: "plus 200 MiB state"},
		{name: "esp-too-small", mod: func(in *Inputs) { in.ESPSize = 16 * MiB }, want: "partition esp: 16 MiB is below"},
		{name: "multiline-cmdline", mod: func(in *Inputs) { in.Cmdline = "a\nb" }, want: "single lines"},
		{name: "canceled", ctx: canceled, mod: func(*Inputs) {}, want: context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "tandem.img")
			// An older image at outPath must survive a failed build.
			if err := os.WriteFile(out, []byte("previous image"), 0o644); err != nil {
				t.Fatal(err)
			}
			in := fx.in
			tc.mod(&in)
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			err := Write(ctx, out, in, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if b, _ := os.ReadFile(out); string(b) != "previous image" {
				t.Errorf("outPath changed by a failed build")
			}
			if left, _ := os.ReadDir(dir); len(left) != 1 {
				t.Errorf("temp files left behind: %v", left)
			}
		})
	}
	// With no previous image, a failure leaves nothing at all.
	out := filepath.Join(t.TempDir(), "tandem.img")
	in := fx.in
	in.RootSquashfs = big
	if err := Write(context.Background(), out, in, nil); err == nil {
		t.Fatal("oversize squashfs accepted")
	}
	if _, err := os.Lstat(out); !os.IsNotExist(err) {
		t.Errorf("file at outPath after failure: %v", err)
	}
}

func TestPlanDefaults(t *testing.T) {
	l, err := plan(Inputs{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name        string
		start, size int64
	}{
		{manifest.LabelESP, 1 * MiB, 256 * MiB},
		{manifest.LabelRootA, 257 * MiB, 512 * MiB},
		{manifest.LabelRootB, 769 * MiB, 512 * MiB},
		{manifest.LabelConfig, 1281 * MiB, 64 * MiB},
		{manifest.LabelState, 1345 * MiB, 702 * MiB},
	}
	if l.size != 2048*MiB || len(l.parts) != len(want) {
		t.Fatalf("layout %+v", l)
	}
	for i, w := range want {
		if p := l.parts[i]; p.name != w.name || p.start != w.start || p.size != w.size {
			t.Errorf("part %d = %+v, want %+v", i, p, w)
		}
	}
}

func TestGUID(t *testing.T) {
	for _, tc := range []struct {
		seed, name string
	}{{"a", "disk"}, {"a", "partition:esp"}, {"b", "disk"}, {"", ""}} {
		g := GUID([]byte(tc.seed), tc.name)
		if len(g) != 36 || g[14] != '4' || !strings.ContainsRune("89AB", rune(g[19])) || strings.ToUpper(g) != g {
			t.Errorf("GUID(%q, %q) = %s: not an upper-case v4-style GUID", tc.seed, tc.name, g)
		}
		if GUID([]byte(tc.seed), tc.name) != g {
			t.Error("GUID not deterministic")
		}
	}
	if GUID([]byte("a"), "disk") == GUID([]byte("b"), "disk") || GUID([]byte("a"), "disk") == GUID([]byte("a"), "disk2") {
		t.Error("GUID ignores its inputs")
	}
	// Seed and name are separated: ("ab","c") and ("a","bc") differ.
	if GUID([]byte("ab"), "c") == GUID([]byte("a"), "bc") {
		t.Error("GUID inputs are ambiguous")
	}
}

// TestHostTools runs the host's partitioning and FAT checkers over the
// image: sgdisk -v and sfdisk --verify for the GPT, fsck.vfat -n for both
// FAT volumes (extracted to files), unsquashfs -s for both root slots.
func TestHostTools(t *testing.T) {
	sgdisk := hosttool.Require(t, "sgdisk", "gdisk")
	sfdisk := hosttool.Require(t, "sfdisk", "fdisk")
	fsck := hosttool.Require(t, "fsck.vfat", "dosfstools")
	unsq := hosttool.Require(t, "unsquashfs", "squashfs-tools")

	fx := newFixture(t)
	in := fx.in
	in.SiteTOML = []byte("a = 1\n")
	img, _ := fx.write(t, in)
	r, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run(sgdisk, "-v", img); !strings.Contains(out, "No problems found") || strings.Contains(out, "Caution") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	out := run(sgdisk, "-p", img)
	for _, p := range r.Partitions {
		if !strings.Contains(out, p.Name) {
			t.Errorf("sgdisk -p lacks %s:\n%s", p.Name, out)
		}
	}
	run(sfdisk, "--verify", img)

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{manifest.LabelESP, manifest.LabelConfig, manifest.LabelRootA, manifest.LabelRootB} {
		p := r.Partition(name)
		part := filepath.Join(t.TempDir(), name+".part")
		pf, err := os.Create(part)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(pf, io.NewSectionReader(f, p.Start, p.Size)); err != nil {
			t.Fatal(err)
		}
		pf.Close()
		if strings.HasPrefix(name, "tandem-root") {
			if out := run(unsq, "-s", part); !strings.Contains(out, "Compression zstd") {
				t.Errorf("unsquashfs -s %s:\n%s", name, out)
			}
			continue
		}
		out := run(fsck, "-n", "-v", part)
		if !strings.Contains(out, "32 bit entries") {
			t.Errorf("fsck.vfat %s does not see FAT32:\n%s", name, out)
		}
		for _, bad := range []string{"differ", "Fixing", "Free cluster summary wrong", "Dirty bit", "truncated", "nvalid"} {
			if strings.Contains(out, bad) {
				t.Errorf("fsck.vfat %s reports %q:\n%s", name, bad, out)
			}
		}
	}
}
