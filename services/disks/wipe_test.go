package disks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
)

// TestWipeRangesCoverProbe: every byte Probe looks at, on devices of
// many sizes, is one Wipe zeroes; a signature added at an offset outside
// the ends would fail here.
func TestWipeRangesCoverProbe(t *testing.T) {
	covered := func(size, from, to int64) bool {
		for _, r := range wipeRanges(size) {
			if from >= r[0] && to <= r[1] {
				return true
			}
		}
		return false
	}
	for _, size := range []int64{128 << 10, 1<<20 + 512, 2 << 20, 2<<20 + 4096, 8<<20 + 3584, 4000787030016} {
		if !covered(size, 0, min(size, ProbeArea)) || !covered(size, max(0, size-ProbeArea), size) {
			t.Errorf("size %d: the ends Probe reads are not wiped: %v", size, wipeRanges(size))
		}
		for _, s := range signatures {
			for _, off := range s.at(size) {
				if off >= 0 && off+int64(len(s.magic)) <= size && !covered(size, off, off+int64(len(s.magic))) {
					t.Errorf("size %d: %s at %d is not wiped", size, s.name, off)
				}
			}
		}
	}
}

// wipeLab is a fake head for Wipe: sysfs for the disks of usageSys plus
// two disks with one serial, and an image file per disk in DevDir, each
// an XFS signature followed by non-zero bytes to the end.
func wipeLab(t *testing.T, size int64) (Finder, map[string][]byte) {
	t.Helper()
	f := usageSys(t)
	for _, n := range []string{"vdg", "vdh"} {
		for k, v := range map[string]string{"device/vendor": "x", "serial": "dup", "size": fmt.Sprint(size / 512)} {
			p := filepath.Join(f.SysRoot, "block", n, k)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range []string{"vda", "vdb", "vdc", "vdd", "vde", "vdf"} {
		if err := os.WriteFile(filepath.Join(f.SysRoot, "block", n, "size"), []byte(fmt.Sprint(size/512)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	imgs := map[string][]byte{}
	inode := map[string]uint64{} // sysfs dev -> the image file's inode
	for _, n := range []string{"vda", "vdb", "vdc", "vdd", "vde", "vdf", "vdg", "vdh"} {
		b := bytes.Repeat([]byte(n), int(size)/3+1)[:size]
		copy(b, "XFSB")
		imgs[n] = b
		p := filepath.Join(f.DevDir, n)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		dev, _ := os.ReadFile(filepath.Join(f.SysRoot, "block", n, "dev"))
		inode[string(dev)] = st.Ino
	}
	// Image files are no block devices: the inode stands for the
	// major:minor the real check compares.
	f.sameNode = func(fd *os.File, path, dev string) error {
		var st unix.Stat_t
		if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
			return err
		}
		if ino, ok := inode[dev]; !ok || ino != st.Ino {
			return fmt.Errorf("opened %s: not the image of %s", path, dev)
		}
		return nil
	}
	return f, imgs
}

func TestWipe(t *testing.T) {
	const size = 4 << 20
	tests := []struct {
		name    string
		serial  string
		prepare func(t *testing.T, f *Finder)
		ctx     func() context.Context
		wantErr error  // nil: vdf is wiped
		errText string // in the error
	}{
		{name: "unused disk", serial: "s-vdf"},
		{name: "unknown serial", serial: "nope", wantErr: ErrNotFound, errText: "disks here: vda (serial:s-vda"},
		{name: "empty serial", serial: "", wantErr: ErrNotFound},
		{name: "a kernel name is no serial", serial: "vdf", wantErr: ErrNotFound},
		{name: "system disk", serial: "s-vda", wantErr: ErrSystemDisk, errText: "vda2 (tandem-root-a)"},
		{name: "mounted partition", serial: "s-vdb", wantErr: ErrSystemDisk, errText: "vdb1 on /mnt/old data"},
		{name: "running md member", serial: "s-vdc", wantErr: services.ErrInUse, errText: "in md array md127"},
		{name: "held by device-mapper", serial: "s-vdd", wantErr: services.ErrInUse, errText: "held by dm-0"},
		{name: "inactive array member", serial: "s-vde", wantErr: services.ErrInUse, errText: "md126"},
		{name: "two disks with the serial", serial: "dup", wantErr: ErrAmbiguous},
		{name: "serial changes before the open", serial: "s-vdf", wantErr: ErrNotFound, errText: `serial is now "other"`,
			prepare: func(t *testing.T, f *Finder) {
				check := f.sameNode
				f.sameNode = func(fd *os.File, path, dev string) error {
					os.WriteFile(filepath.Join(f.SysRoot, "block", "vdf", "serial"), []byte("other"), 0o644)
					return check(fd, path, dev)
				}
			}},
		{name: "node is not the disk", serial: "s-vdf", errText: "opened",
			prepare: func(t *testing.T, f *Finder) {
				os.Remove(filepath.Join(f.DevDir, "vdf"))
				os.Symlink(filepath.Join(f.DevDir, "vdc"), filepath.Join(f.DevDir, "vdf"))
			}},
		{name: "a file is no block device", serial: "s-vdf", errText: "not a block device",
			prepare: func(t *testing.T, f *Finder) { f.sameNode = nil }},
		{name: "size differs from sysfs", serial: "s-vdf", errText: "sysfs says",
			prepare: func(t *testing.T, f *Finder) {
				os.WriteFile(filepath.Join(f.SysRoot, "block", "vdf", "size"), []byte(fmt.Sprint(size/512+1)), 0o644)
			}},
		{name: "deadline passed", serial: "s-vdf", wantErr: context.Canceled,
			ctx: func() context.Context { c, cancel := context.WithCancel(context.Background()); cancel(); return c }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, imgs := wipeLab(t, size)
			if tt.prepare != nil {
				tt.prepare(t, &f)
			}
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			var logBuf bytes.Buffer
			before, err := f.Wipe(ctx, tt.serial, slog.New(slog.NewTextHandler(&logBuf, nil)))
			wantOK := tt.wantErr == nil && tt.errText == ""
			switch {
			case wantOK && err != nil:
				t.Fatal(err)
			case !wantOK && err == nil:
				t.Fatal("wiped, want an error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			case !strings.Contains(fmt.Sprint(err), tt.errText):
				t.Fatalf("err %v, want %q in it", err, tt.errText)
			}
			for n, orig := range imgs {
				if n == "vdf" && tt.name == "node is not the disk" {
					n, orig = "vdc", imgs["vdc"] // where the node points
				}
				got, err := os.ReadFile(filepath.Join(f.DevDir, n))
				if err != nil {
					t.Fatal(err)
				}
				if !wantOK || n != "vdf" {
					if !bytes.Equal(got, orig) {
						t.Errorf("%s was written to", n)
					}
					continue
				}
				c, err := Probe(bytes.NewReader(got), size)
				if err != nil || !c.Blank {
					t.Errorf("after Wipe, vdf probes %+v %v", c, err)
				}
				if !bytes.Equal(got[ProbeArea:size-ProbeArea], orig[ProbeArea:size-ProbeArea]) {
					t.Error("Wipe wrote past the ends")
				}
			}
			if wantOK {
				if before.Sig != "xfs" {
					t.Errorf("returned %+v, want the xfs it destroyed", before)
				}
				if l := logBuf.String(); !strings.Contains(l, "disk=serial:s-vdf") || !strings.Contains(l, "xfs") {
					t.Errorf("log %q does not say what was destroyed", l)
				}
			}
		})
	}
}
