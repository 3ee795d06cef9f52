package pid1

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// The state partition is formatted only when it is provably blank. A
// device is blank when none of these signatures is present and its first
// and last MiB are all zeros: the signatures name what we found; the zero
// check catches everything we did not think of.

// sigArea is how much of each end of the device probeBlank reads.
const sigArea = 1 << 20

// signature is one on-disk format, found by a magic at an offset.
type signature struct {
	name string
	// at returns the offsets to look at on a device of size bytes
	// (negative: not applicable to this size).
	at    func(size int64) []int64
	magic []byte
}

func fixed(off ...int64) func(int64) []int64 { return func(int64) []int64 { return off } }

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// sigExt is the one signature the state partition may carry.
const sigExt = "ext2/3/4"

// signatures are checked in order; the first match names the content.
var signatures = []signature{
	// ext2/3/4: s_magic 0xEF53 at 0x38 in the superblock at 1024.
	{sigExt, fixed(1024 + 0x38), le32(0xEF53)[:2]},
	{"xfs", fixed(0), []byte("XFSB")},
	{"squashfs", fixed(0), []byte("hsqs")},
	{"vfat (FAT32)", fixed(0x52), []byte("FAT32   ")},
	{"vfat (FAT12/16)", fixed(0x36), []byte("FAT1")},
	{"vfat", fixed(0x36), []byte("FAT     ")},
	// LVM2 physical volume: "LABELONE" in one of the first four sectors.
	{"LVM2 PV", fixed(0, 512, 1024, 1536), []byte("LABELONE")},
	// md superblocks: v1.1 at 0, v1.2 at 4 KiB, v1.0 at the end - 8 KiB
	// (4 KiB aligned), v0.90 in the last 64 KiB-aligned 64 KiB block.
	{"md RAID (v1.x)", func(size int64) []int64 {
		return []int64{0, 4096, (size - 8192) &^ 4095}
	}, le32(0xa92b4efc)},
	{"md RAID (v0.90)", func(size int64) []int64 {
		return []int64{(size &^ 65535) - 65536}
	}, le32(0xa92b4efc)},
	// DRBD internal metadata: the superblock is the last 4 KiB; its magic
	// (big-endian) follows la_size, 4 UUIDs, device UUID and a reserved
	// u64, and flags: offset 60. 8.4 clean/unclean and 9.
	{"DRBD metadata (v08)", drbdAt, be32(0x8374026b)},
	{"DRBD metadata (v08, unclean)", drbdAt, be32(0x83740267)},
	{"DRBD metadata (v09)", drbdAt, be32(0x8374026c)},
	{"swap", fixed(4096 - 10), []byte("SWAPSPACE2")},
	{"swap (old)", fixed(4096 - 10), []byte("SWAP-SPACE")},
}

func drbdAt(size int64) []int64 {
	sb := (size &^ 4095) - 4096
	return []int64{sb + 60, 60} // internal metadata, and external at 0
}

// BlankResult says what probeBlank found.
type BlankResult struct {
	Blank bool
	// Sig is the signature found ("ext2/3/4", "xfs", ...), if any.
	Sig string
	// What names the content when not blank, e.g. "ext2/3/4" or
	// "non-zero data in the first MiB".
	What string
}

func (r BlankResult) String() string {
	if r.Blank {
		return "blank"
	}
	return r.What
}

// probeBlank reads the first and last MiB of a device of size bytes.
// It errs on the side of "not blank": a read error is returned, never
// taken for zeros.
func probeBlank(r io.ReaderAt, size int64) (BlankResult, error) {
	if size < 64<<10 {
		return BlankResult{}, fmt.Errorf("device is only %d bytes", size)
	}
	head, err := readAt(r, 0, min(size, sigArea))
	if err != nil {
		return BlankResult{}, fmt.Errorf("read first MiB: %w", err)
	}
	tailOff := max(0, size-sigArea)
	tail, err := readAt(r, tailOff, size-tailOff)
	if err != nil {
		return BlankResult{}, fmt.Errorf("read last MiB: %w", err)
	}
	// look finds b at off, from whichever buffer holds it.
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
				return BlankResult{Sig: s.name, What: s.name + " signature"}, nil
			}
		}
	}
	if i := nonZero(head); i >= 0 {
		return BlankResult{What: fmt.Sprintf("non-zero data in the first MiB (at byte %d)", i)}, nil
	}
	if i := nonZero(tail); i >= 0 {
		return BlankResult{What: fmt.Sprintf("non-zero data in the last MiB (at byte %d)", tailOff+int64(i))}, nil
	}
	return BlankResult{Blank: true}, nil
}

func nonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

func readAt(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	got, err := r.ReadAt(b, off)
	if int64(got) == n {
		return b, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}
