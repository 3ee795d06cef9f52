package disks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Tandem writes to a device (mdadm --create, pvcreate, mkfs) only when it
// is provably blank: no known signature anywhere we look, and the first
// and last MiB all zeros. The signatures name what a disk holds in the
// refusal message; the zero check catches everything they miss. A read
// error is returned as an error, never taken for zeros.

// ProbeArea is how much of each end of a device Probe reads.
const ProbeArea = 1 << 20

// Content says what Probe found.
type Content struct {
	Blank bool
	// Sig names the signature found ("xfs", "md RAID (v1.2)", "GPT
	// partition table", ...), if any.
	Sig string
	// What describes the content when not blank, for messages.
	What string
	// Size is the device's size in bytes.
	Size int64
}

func (c Content) String() string {
	if c.Blank {
		return "blank"
	}
	return c.What
}

type signature struct {
	name  string
	at    func(size int64) []int64 // offsets to look at on a device of size bytes
	magic []byte
}

func at(off ...int64) func(int64) []int64 { return func(int64) []int64 { return off } }

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

const mdMagic = 0xa92b4efc

// signatures are checked in order; the first match names the content.
// Filesystems come before the MBR, because FAT and NTFS boot sectors
// carry the same 0x55AA as a partition table.
var signatures = []signature{
	// md superblocks: v1.1 at 0, v1.2 at 4 KiB, v1.0 8 KiB before the
	// end (4 KiB aligned), v0.90 in the last 64 KiB-aligned 64 KiB.
	{"md RAID (v1.1)", at(0), le32(mdMagic)},
	{"md RAID (v1.2)", at(4096), le32(mdMagic)},
	{"md RAID (v1.0)", func(size int64) []int64 { return []int64{(size - 8192) &^ 4095} }, le32(mdMagic)},
	{"md RAID (v0.90)", func(size int64) []int64 { return []int64{(size &^ 65535) - 65536} }, le32(mdMagic)},
	// DRBD internal metadata: the superblock is the last 4 KiB; its
	// big-endian magic follows la_size, 4 UUIDs, the device UUID, a
	// reserved u64 and the flags: offset 60. External metadata: at 0.
	{"DRBD metadata (8.4)", drbdAt, be32(0x8374026b)},
	{"DRBD metadata (8.4, unclean)", drbdAt, be32(0x83740267)},
	{"DRBD metadata (9)", drbdAt, be32(0x8374026c)},
	// LVM2 physical volume: "LABELONE" in one of the first four sectors.
	{"LVM2 physical volume", at(0, 512, 1024, 1536), []byte("LABELONE")},
	{"LUKS", at(0), []byte("LUKS\xba\xbe")},
	{"xfs", at(0), []byte("XFSB")},
	// ext2/3/4: s_magic 0xEF53 at 0x38 in the superblock at 1024.
	{"ext2/3/4", at(1024 + 0x38), le32(0xEF53)[:2]},
	{"btrfs", at(0x10040), []byte("_BHRfS_M")},
	{"squashfs", at(0), []byte("hsqs")},
	{"swap", at(4096 - 10), []byte("SWAPSPACE2")},
	{"swap (old)", at(4096 - 10), []byte("SWAP-SPACE")},
	{"iso9660", at(0x8001), []byte("CD001")},
	{"ntfs", at(3), []byte("NTFS    ")},
	{"vfat (FAT32)", at(0x52), []byte("FAT32   ")},
	{"vfat (FAT12/16)", at(0x36), []byte("FAT1")},
	// GPT header at LBA 1, for 512- and 4096-byte sectors.
	{"GPT partition table", at(512, 4096), []byte("EFI PART")},
	{"MBR partition table or boot sector", at(510), []byte{0x55, 0xaa}},
}

func drbdAt(size int64) []int64 {
	sb := (size &^ 4095) - 4096
	return []int64{sb + 60, 60}
}

// Probe reads the first and last MiB of a device of size bytes and says
// whether it is blank.
func Probe(r io.ReaderAt, size int64) (Content, error) {
	if size < 128<<10 {
		return Content{}, fmt.Errorf("device is only %d bytes", size)
	}
	head, err := readFull(r, 0, min(size, ProbeArea))
	if err != nil {
		return Content{}, fmt.Errorf("read first MiB: %w", err)
	}
	tailOff := max(0, size-ProbeArea)
	tail, err := readFull(r, tailOff, size-tailOff)
	if err != nil {
		return Content{}, fmt.Errorf("read last MiB: %w", err)
	}
	look := func(off int64, magic []byte) bool {
		for _, buf := range []struct {
			base int64
			b    []byte
		}{{0, head}, {tailOff, tail}} {
			i := off - buf.base
			if i >= 0 && i+int64(len(magic)) <= int64(len(buf.b)) {
				return bytes.Equal(buf.b[i:i+int64(len(magic))], magic)
			}
		}
		return false
	}
	for _, s := range signatures {
		for _, off := range s.at(size) {
			if off >= 0 && look(off, s.magic) {
				return Content{Sig: s.name, What: s.name + " signature"}, nil
			}
		}
	}
	if i := firstNonZero(head); i >= 0 {
		return Content{What: fmt.Sprintf("non-zero data in the first MiB (at byte %d)", i)}, nil
	}
	if i := firstNonZero(tail); i >= 0 {
		return Content{What: fmt.Sprintf("non-zero data in the last MiB (at byte %d)", tailOff+int64(i))}, nil
	}
	return Content{Blank: true}, nil
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

func readFull(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	got, err := r.ReadAt(b, off)
	if int64(got) == n {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// ProbePath opens a block device (or an image file) read-only and probes
// it. Its size comes from seeking to the end, which works for both.
func ProbePath(path string) (Content, error) {
	f, err := os.Open(path)
	if err != nil {
		return Content{}, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Content{}, fmt.Errorf("%s: size: %w", path, err)
	}
	c, err := Probe(f, size)
	if err != nil {
		return Content{}, fmt.Errorf("%s: %w", path, err)
	}
	c.Size = size
	return c, nil
}
