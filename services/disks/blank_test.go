package disks

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"tandem.dev/tandem/internal/hosttool"
)

// image is a sparse in-memory device of size bytes with patches written
// at offsets (negative: from the end).
type patch struct {
	off  int64
	data []byte
}

func image(size int64, patches ...patch) *bytes.Reader {
	b := make([]byte, size)
	for _, p := range patches {
		off := p.off
		if off < 0 {
			off += size
		}
		copy(b[off:], p.data)
	}
	return bytes.NewReader(b)
}

func TestProbe(t *testing.T) {
	const size = 8 << 20
	le := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	be := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	mbr := make([]byte, 512)
	mbr[446+4] = 0x83 // one Linux partition
	mbr[510], mbr[511] = 0x55, 0xaa
	tests := []struct {
		name    string
		size    int64
		patches []patch
		blank   bool
		sig     string
		what    string
	}{
		{name: "zeros", blank: true},
		{name: "odd size zeros", size: size + 512, blank: true},
		{name: "md v1.2", patches: []patch{{4096, le(mdMagic)}}, sig: "md RAID (v1.2)"},
		{name: "md v1.1", patches: []patch{{0, le(mdMagic)}}, sig: "md RAID (v1.1)"},
		{name: "md v1.0 at the end", patches: []patch{{(size - 8192) &^ 4095, le(mdMagic)}}, sig: "md RAID (v1.0)"},
		{name: "md v0.90 at the end", patches: []patch{{(size &^ 65535) - 65536, le(mdMagic)}}, sig: "md RAID (v0.90)"},
		{name: "drbd internal metadata", patches: []patch{{size - 4096 + 60, be(0x8374026b)}}, sig: "DRBD metadata (8.4)"},
		{name: "drbd unclean", patches: []patch{{size - 4096 + 60, be(0x83740267)}}, sig: "DRBD metadata (8.4, unclean)"},
		{name: "drbd 9", patches: []patch{{size - 4096 + 60, be(0x8374026c)}}, sig: "DRBD metadata (9)"},
		{name: "lvm pv sector 1", patches: []patch{{512, []byte("LABELONE")}}, sig: "LVM2 physical volume"},
		{name: "xfs", patches: []patch{{0, []byte("XFSB")}}, sig: "xfs"},
		{name: "ext4", patches: []patch{{1024 + 0x38, []byte{0x53, 0xef}}}, sig: "ext2/3/4"},
		{name: "btrfs", patches: []patch{{0x10040, []byte("_BHRfS_M")}}, sig: "btrfs"},
		{name: "luks", patches: []patch{{0, []byte("LUKS\xba\xbe")}}, sig: "LUKS"},
		{name: "gpt", patches: []patch{{0, mbr}, {512, []byte("EFI PART")}}, sig: "GPT partition table"},
		{name: "gpt 4k sectors", patches: []patch{{4096, []byte("EFI PART")}}, sig: "GPT partition table"},
		{name: "mbr", patches: []patch{{0, mbr}}, sig: "MBR partition table or boot sector"},
		{name: "fat32 before mbr", patches: []patch{{0x52, []byte("FAT32   ")}, {510, []byte{0x55, 0xaa}}}, sig: "vfat (FAT32)"},
		{name: "swap", patches: []patch{{4086, []byte("SWAPSPACE2")}}, sig: "swap"},
		{name: "swap (old)", patches: []patch{{4086, []byte("SWAP-SPACE")}}, sig: "swap (old)"},
		{name: "squashfs", patches: []patch{{0, []byte("hsqs")}}, sig: "squashfs"},
		{name: "fat16", patches: []patch{{0x36, []byte("FAT16   ")}}, sig: "vfat (FAT12/16)"},
		{name: "fat32", patches: []patch{{0x52, []byte("FAT32   ")}}, sig: "vfat (FAT32)"},
		{name: "gpt header alone", patches: []patch{{512, []byte("EFI PART")}}, sig: "GPT partition table"},
		{name: "drbd external metadata", patches: []patch{{60, be(0x8374026b)}}, sig: "DRBD metadata (8.4)"},
		{name: "garbage in first MiB", patches: []patch{{700000, []byte{1}}}, what: "non-zero data in the first MiB (at byte 700000)"},
		{name: "garbage in last MiB", patches: []patch{{-1, []byte{1}}}, what: "non-zero data in the last MiB (at byte 8388607)"},
		// The middle is not read: a disk is blank by its ends.
		{name: "middle ignored", patches: []patch{{4 << 20, []byte{1}}}, blank: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sz := tt.size
			if sz == 0 {
				sz = size
			}
			c, err := Probe(image(sz, tt.patches...), sz)
			if err != nil {
				t.Fatal(err)
			}
			if c.Blank != tt.blank || c.Sig != tt.sig {
				t.Fatalf("got %+v, want blank=%v sig=%q", c, tt.blank, tt.sig)
			}
			if tt.what != "" && c.What != tt.what {
				t.Errorf("what %q, want %q", c.What, tt.what)
			}
			if !c.Blank && c.String() == "blank" || c.Blank && c.String() != "blank" {
				t.Errorf("String() = %q", c.String())
			}
		})
	}
}

func TestProbeErrors(t *testing.T) {
	if _, err := Probe(image(4096), 4096); err == nil {
		t.Error("tiny device: no error")
	}
	// A short read is an error, never zeros.
	if _, err := Probe(image(1<<20), 4<<20); err == nil || !strings.Contains(err.Error(), "last MiB") {
		t.Errorf("short device: %v", err)
	}
	if _, err := Probe(image(2<<20), 4<<20); err == nil {
		t.Error("a short read of zeros was taken for blank")
	}
	if _, err := ProbePath(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestProbeRealTools checks the signatures against what the real tools
// write, on sparse image files.
func TestProbeRealTools(t *testing.T) {
	tests := []struct {
		tool, pkg string
		size      int64
		args      []string
		sig       string
	}{
		{"mkfs.xfs", "xfsprogs", 320 << 20, []string{"-q", "-f"}, "xfs"},
		{"mkfs.ext4", "e2fsprogs", 64 << 20, []string{"-q", "-F"}, "ext2/3/4"},
		{"mkswap", "util-linux", 64 << 20, nil, "swap"},
		{"mkfs.vfat", "dosfstools", 64 << 20, []string{"-F", "32"}, "vfat (FAT32)"},
		{"sgdisk", "gdisk", 64 << 20, []string{"-n", "1:0:0"}, "GPT partition table"},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			bin := hosttool.Require(t, tt.tool, tt.pkg)
			p := filepath.Join(t.TempDir(), "disk.img")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tt.size); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if c, err := ProbePath(p); err != nil || !c.Blank {
				t.Fatalf("before %s: %+v %v", tt.tool, c, err)
			}
			if out, err := exec.Command(bin, append(tt.args, p)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.tool, err, out)
			}
			c, err := ProbePath(p)
			if err != nil {
				t.Fatal(err)
			}
			if c.Blank || c.Sig != tt.sig {
				t.Errorf("after %s: %+v, want %q", tt.tool, c, tt.sig)
			}
		})
	}
}
