package pid1

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

// device is an in-memory block device.
type device []byte

func (d device) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d)) {
		return 0, io.EOF
	}
	n := copy(p, d[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func put(d device, off int64, b []byte) device { copy(d[off:], b); return d }

// Every signature the state step must refuse, and the zero checks.
func TestProbeBlank(t *testing.T) {
	const size = 64 << 20
	end := func(off int64) int64 { return size + off }
	tests := []struct {
		name string
		make func(d device) device
		want string // "" means blank
	}{
		{"blank", func(d device) device { return d }, ""},
		{"ext4", func(d device) device { return put(d, 1024+0x38, []byte{0x53, 0xef}) }, "ext2/3/4"},
		{"xfs", func(d device) device { return put(d, 0, []byte("XFSB")) }, "xfs"},
		{"squashfs", func(d device) device { return put(d, 0, []byte("hsqs")) }, "squashfs"},
		{"vfat FAT32", func(d device) device { return put(d, 0x52, []byte("FAT32   ")) }, "vfat (FAT32)"},
		{"vfat FAT16", func(d device) device { return put(d, 0x36, []byte("FAT16   ")) }, "vfat (FAT12/16)"},
		{"LVM2 PV sector 1", func(d device) device { return put(d, 512, []byte("LABELONE")) }, "LVM2 PV"},
		{"md v1.2", func(d device) device { return put(d, 4096, []byte{0xfc, 0x4e, 0x2b, 0xa9}) }, "md RAID (v1.x)"},
		{"md v1.1", func(d device) device { return put(d, 0, []byte{0xfc, 0x4e, 0x2b, 0xa9}) }, "md RAID (v1.x)"},
		{"md v1.0 at the end", func(d device) device { return put(d, end(-8192), []byte{0xfc, 0x4e, 0x2b, 0xa9}) }, "md RAID (v1.x)"},
		{"md v0.90 at the end", func(d device) device { return put(d, end(-65536), []byte{0xfc, 0x4e, 0x2b, 0xa9}) }, "md RAID (v0.90)"},
		{"DRBD 8.4 internal", func(d device) device { return put(d, end(-4096+60), binary.BigEndian.AppendUint32(nil, 0x8374026b)) }, "DRBD metadata (v08)"},
		{"DRBD 8.4 unclean", func(d device) device { return put(d, end(-4096+60), binary.BigEndian.AppendUint32(nil, 0x83740267)) }, "DRBD metadata (v08, unclean)"},
		{"DRBD 9 internal", func(d device) device { return put(d, end(-4096+60), binary.BigEndian.AppendUint32(nil, 0x8374026c)) }, "DRBD metadata (v09)"},
		{"swap", func(d device) device { return put(d, 4086, []byte("SWAPSPACE2")) }, "swap"},
		{"one byte in the first MiB", func(d device) device { return put(d, 777777, []byte{1}) }, "non-zero data in the first MiB (at byte 777777)"},
		{"one byte in the last MiB", func(d device) device { return put(d, end(-1), []byte{1}) }, "non-zero data in the last MiB"},
		{"GPT-like header", func(d device) device { return put(d, 512, []byte("EFI PART")) }, "non-zero data in the first MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.make(make(device, size))
			got, err := probeBlank(d, size)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if !got.Blank {
					t.Fatalf("got %q, want blank", got)
				}
				return
			}
			if got.Blank {
				t.Fatalf("got blank, want %q", tt.want)
			}
			if got.Sig != tt.want && !strings.HasPrefix(got.What, tt.want) {
				t.Errorf("got %q (sig %q), want %q", got.What, got.Sig, tt.want)
			}
		})
	}
}

// Data in the middle is beyond what is read: the signatures and the
// first/last MiB decide. A tiny device or a short read is an error, never
// "blank".
func TestProbeBlankErrors(t *testing.T) {
	if _, err := probeBlank(make(device, 1024), 1024); err == nil {
		t.Error("a 1 KiB device was probed without error")
	}
	short := device(bytes.Repeat([]byte{0}, 2<<20))
	if _, err := probeBlank(short, 4<<20); err == nil {
		t.Error("a short read was taken for zeros")
	}
}
