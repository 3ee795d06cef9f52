package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/ulikunitz/xz/lzma"

	"tandem.dev/tandem/image/disk"
	"tandem.dev/tandem/image/manifest"
)

// DirectBoot is what a direct kernel boot of an image needs.
type DirectBoot struct {
	Kernel, Initrd, Append string
	// PVH is true when Kernel is the extracted vmlinux (booted via PVH,
	// skipping ≈4 s of xz decompression under TCG).
	PVH bool
}

// ExtractBoot reads a slot's kernel, initrd and command line from the
// image's ESP (its Boot Loader Spec entry), so that a direct kernel boot
// runs exactly what systemd-boot would. The initrd goes to dir; the
// vmlinux extracted from the kernel is cached in cacheDir by the kernel's
// hash ("" means the user cache directory).
func ExtractBoot(image, slot, dir, cacheDir string) (DirectBoot, error) {
	var db DirectBoot
	entry, err := disk.ReadFile(image, manifest.LabelESP, "loader/entries/"+disk.EntryName(slot))
	if err != nil {
		return db, fmt.Errorf("qemu: boot entry: %w", err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(entry), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		kv[k] = strings.TrimSpace(v)
	}
	if kv["linux"] == "" || kv["initrd"] == "" {
		return db, fmt.Errorf("qemu: boot entry for slot %s has no linux/initrd line", slot)
	}
	db.Append = kv["options"]
	vmlinuz, err := disk.ReadFile(image, manifest.LabelESP, kv["linux"])
	if err != nil {
		return db, fmt.Errorf("qemu: kernel: %w", err)
	}
	initrd, err := disk.ReadFile(image, manifest.LabelESP, kv["initrd"])
	if err != nil {
		return db, fmt.Errorf("qemu: initrd: %w", err)
	}
	db.Initrd = filepath.Join(dir, "initrd-"+slot+".img")
	if err := os.WriteFile(db.Initrd, initrd, 0o644); err != nil {
		return db, fmt.Errorf("qemu: initrd: %w", err)
	}

	if cacheDir == "" {
		if c, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(c, "tandem", "qemu")
		} else {
			cacheDir = dir
		}
	}
	sum := sha256.Sum256(vmlinuz)
	cached := filepath.Join(cacheDir, "vmlinux-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(cached); err == nil {
		return DirectBoot{Kernel: cached, Initrd: db.Initrd, Append: db.Append, PVH: true}, nil
	}
	vmlinux, xerr := ExtractVmlinux(vmlinuz)
	if xerr == nil && !hasPVHNote(vmlinux) {
		xerr = errors.New("the vmlinux has no PVH entry note")
	}
	if xerr == nil {
		if err := writeAtomic(cached, vmlinux); err == nil {
			return DirectBoot{Kernel: cached, Initrd: db.Initrd, Append: db.Append, PVH: true}, nil
		}
	}
	// Booting the bzImage still works, only slower.
	db.Kernel = filepath.Join(dir, "vmlinuz-"+slot)
	if err := os.WriteFile(db.Kernel, vmlinuz, 0o644); err != nil {
		return db, fmt.Errorf("qemu: kernel: %w", err)
	}
	return db, nil
}

// writeAtomic writes via a temp file and rename: labs started side by
// side may fill the cache at the same time.
func writeAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

// ExtractVmlinux returns the ELF kernel inside an x86 bzImage whose
// payload is xz-compressed with the x86 BCJ filter (Debian's kernels).
// ulikunitz/xz has no BCJ filter, so the .xz container is parsed here,
// LZMA2 decoded by its lzma package and the x86 filter undone by bcjX86.
func ExtractVmlinux(bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, errors.New("vmlinux: not a bzImage")
	}
	setup := int(bz[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off+n > len(bz) {
		return nil, errors.New("vmlinux: payload outside the bzImage")
	}
	return unxzBCJ(bz[off : off+n])
}

// unxzBCJ decodes the first block of an .xz stream whose filters are at
// most [x86 BCJ, LZMA2].
func unxzBCJ(b []byte) ([]byte, error) {
	if len(b) < 12+8 || !bytes.Equal(b[:6], []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return nil, errors.New("xz: not an xz stream")
	}
	blk := b[12:]
	hsize := (int(blk[0]) + 1) * 4
	if blk[0] == 0 || hsize > len(blk) {
		return nil, errors.New("xz: bad block header")
	}
	h := blk[1 : hsize-4]
	flags := h[0]
	h = h[1:]
	varint := func() (uint64, error) {
		v, k := binary.Uvarint(h)
		if k <= 0 {
			return 0, errors.New("xz: bad block header integer")
		}
		h = h[k:]
		return v, nil
	}
	if flags&0x40 != 0 { // compressed size
		if _, err := varint(); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 { // uncompressed size
		if _, err := varint(); err != nil {
			return nil, err
		}
	}
	var (
		bcj     bool
		bcjBase uint32
		dictCap int
	)
	for i := 0; i <= int(flags&3); i++ {
		id, err := varint()
		if err != nil {
			return nil, err
		}
		psize, err := varint()
		if err != nil {
			return nil, err
		}
		if int(psize) > len(h) {
			return nil, errors.New("xz: bad filter properties")
		}
		props := h[:psize]
		h = h[psize:]
		switch id {
		case 0x04: // x86 BCJ
			bcj = true
			if len(props) == 4 {
				bcjBase = binary.LittleEndian.Uint32(props)
			}
		case 0x21: // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return nil, errors.New("xz: bad LZMA2 properties")
			}
			bits := uint(props[0])
			dictCap = int(2|bits&1) << (bits/2 + 11)
			if bits == 40 {
				dictCap = lzma.MaxDictCap
			}
		default:
			return nil, fmt.Errorf("xz: unsupported filter %#x", id)
		}
	}
	if dictCap == 0 {
		return nil, errors.New("xz: no LZMA2 filter")
	}
	dictCap = max(dictCap, lzma.MinDictCap)
	r, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(bytes.NewReader(blk[hsize:]))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if bcj {
		bcjX86(out, bcjBase)
	}
	return out, nil
}

// bcjX86 undoes the x86 branch-call-jump filter in place over a whole
// buffer (after xz-embedded's xz_dec_bcj.c): CALL and JMP targets were
// made absolute for better compression and are made relative again.
func bcjX86(buf []byte, pos uint32) {
	maskAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskBit := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskBit[prevMask])]
				if !maskAllowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (pos + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := maskBit[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}

// hasPVHNote reports whether an ELF kernel has the Xen PVH entry note
// (XEN_ELFNOTE_PHYS32_ENTRY) that QEMU's -kernel needs to boot it.
func hasPVHNote(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return false
		}
		for len(data) >= 12 {
			nsz := int(binary.LittleEndian.Uint32(data))
			dsz := int(binary.LittleEndian.Uint32(data[4:]))
			typ := binary.LittleEndian.Uint32(data[8:])
			name := data[12:min(len(data), 12+nsz)]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == 18 {
				return true
			}
			step := 12 + (nsz+3)&^3 + (dsz+3)&^3
			if step > len(data) {
				break
			}
			data = data[step:]
		}
	}
	return false
}

// writeSite puts site.toml onto the TANDEM-CFG partition of an overlay:
// the partition is copied out of the image, changed with go-diskfs, and
// written into the overlay with qemu-io, leaving the image untouched.
func writeSite(ctx context.Context, image, overlay string, site []byte) error {
	f, err := os.Open(image)
	if err != nil {
		return err
	}
	defer f.Close()
	t, err := gpt.Read(file.New(f, true), disk.SectorSize, disk.SectorSize)
	if err != nil {
		return fmt.Errorf("partition table: %w", err)
	}
	var start, size int64
	for _, p := range t.Partitions {
		if p.Type != gpt.Unused && p.Name == manifest.LabelConfig {
			start, size = p.GetStart(), p.GetSize()
		}
	}
	if size == 0 {
		return fmt.Errorf("%s has no %s partition", image, manifest.LabelConfig)
	}
	tmp, err := os.CreateTemp(filepath.Dir(overlay), "cfg-*.fat")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, io.NewSectionReader(f, start, size)); err != nil {
		return err
	}
	fs, err := fat32.Read(file.New(tmp, false), size, 0, disk.SectorSize)
	if err != nil {
		return fmt.Errorf("config volume: %w", err)
	}
	sf, err := fs.OpenFile("/site.toml", os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("config volume: %w", err)
	}
	if _, err := sf.Write(site); err != nil {
		return fmt.Errorf("config volume: %w", err)
	}
	if err := sf.Close(); err != nil {
		return fmt.Errorf("config volume: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "qemu-io", "-f", "qcow2",
		"-c", fmt.Sprintf("write -s %s %d %d", tmp.Name(), start, size), overlay)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-io: %v: %s", err, firstLine(out.String()))
	}
	return nil
}

func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return sc.Text()
	}
	return ""
}
