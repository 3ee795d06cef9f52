// Package disk assembles the flashable Tandem disk image: a GPT disk with
// the ESP (systemd-boot, one kernel and initrd per slot, Boot Loader Spec
// entries with boot counting), two squashfs root slots, the TANDEM-CFG
// partition and a blank state partition.
//
// The image is reproducible: GUIDs and FAT serials derive from
// Inputs.Seed, every FAT timestamp is Inputs.Epoch, and nothing else
// varies. It is written to a temp file beside outPath, fsynced and
// renamed, so outPath never holds a partial image.
package disk

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"tandem.dev/tandem/image/manifest"
)

const (
	// MiB is the partition alignment and the unit every size must be a
	// multiple of.
	MiB = int64(1) << 20
	// SectorSize is the logical sector size the image is laid out for.
	SectorSize = 512

	DefaultImageSize  = 2048 * MiB
	DefaultESPSize    = 256 * MiB
	DefaultRootSize   = 512 * MiB
	DefaultConfigSize = 64 * MiB

	// minFAT32 leaves FAT32 its minimum of 65525 clusters at 512 bytes per
	// cluster (go-diskfs's choice up to 260 MiB) plus reserved sectors and
	// both FATs; smaller volumes would be FAT16 by definition.
	minFAT32 = 33 * MiB
	// gptTail is the backup partition array and header at the disk's end.
	gptTail = 33 * SectorSize

	// attrReadOnly is the discoverable-partitions "read-only" flag (bit 60).
	attrReadOnly = uint64(1) << 60
)

// Partition type GUIDs. The roots use the discoverable Linux root x86-64
// type; TANDEM-CFG uses Microsoft basic data so that a laptop mounts it.
const (
	TypeESP    = gpt.EFISystemPartition
	TypeRoot   = gpt.LinuxRootX86_64
	TypeConfig = gpt.MicrosoftBasicData
	TypeState  = gpt.LinuxFilesystem
)

// Inputs is everything the disk image is made of.
type Inputs struct {
	// Version names the image in loader entry titles and "version" lines.
	Version string
	// Seed (a hash of the spec) derives the disk and partition GUIDs and
	// the FAT volume serials.
	Seed []byte
	// Epoch (SOURCE_DATE_EPOCH) is every FAT timestamp. FAT cannot store
	// dates before 1980, so earlier epochs are stored as 1980-01-01.
	Epoch time.Time

	// SystemdBoot is systemd-bootx64.efi from Debian's systemd-boot-efi.
	SystemdBoot []byte
	// Kernel and Initrd go into both slots of a fresh image.
	Kernel, Initrd []byte
	// Cmdline is the kernel command line; " tandem.slot=a|b" is appended.
	Cmdline string
	// RootSquashfs is the path of the root filesystem image; both root
	// slots receive it.
	RootSquashfs string
	// SiteTOML, when set, is put on TANDEM-CFG as site.toml.
	SiteTOML []byte

	// Sizes in bytes, multiples of 1 MiB; 0 means the default. StateSize
	// 0 means the rest of the disk.
	ImageSize, ESPSize, RootSize, ConfigSize, StateSize int64
}

// ReadmeText is TANDEM-CFG's README.txt.
const ReadmeText = `Tandem configuration partition (TANDEM-CFG)

To provision this node without the pairing wizard, copy your site
configuration here as site.toml, then boot the node.

At boot the node takes site.toml from its state partition, else from this
partition, else it starts the pairing wizard.
`

// LoaderConf is the ESP's loader/loader.conf.
const LoaderConf = "default tandem-a*\ntimeout 0\neditor no\nconsole-mode keep\n"

// Slots are the root slots; a fresh image fills both identically so that
// boot counting falls back to a bootable slot.
var Slots = []string{"a", "b"}

// EntryName is the Boot Loader Spec entry file of a slot, with the
// initial boot counter (+3 tries).
func EntryName(slot string) string { return "tandem-" + slot + "+3.conf" }

// Entry renders a slot's Boot Loader Spec entry.
func Entry(in Inputs, slot string) string {
	return fmt.Sprintf("title Tandem %s (slot %s)\nversion %s\nsort-key tandem\nlinux /tandem/%s/vmlinuz\ninitrd /tandem/%s/initrd.img\noptions %s\n",
		in.Version, strings.ToUpper(slot), in.Version, slot, slot,
		strings.TrimSpace(in.Cmdline+" tandem.slot="+slot))
}

// part is one planned partition, in bytes.
type part struct {
	name        string
	typ         gpt.Type
	start, size int64
	attrs       uint64
}

type layout struct {
	size  int64
	parts []part // in table order
}

func (l layout) get(name string) part {
	for _, p := range l.parts {
		if p.name == name {
			return p
		}
	}
	panic("disk: no partition " + name)
}

func plan(in Inputs) (layout, error) {
	def := func(v, d int64) int64 {
		if v == 0 {
			return d
		}
		return v
	}
	l := layout{size: def(in.ImageSize, DefaultImageSize)}
	sizes := []struct {
		name string
		typ  gpt.Type
		size int64
		min  int64
		attr uint64
	}{
		{manifest.LabelESP, TypeESP, def(in.ESPSize, DefaultESPSize), minFAT32, 0},
		{manifest.LabelRootA, TypeRoot, def(in.RootSize, DefaultRootSize), MiB, attrReadOnly},
		{manifest.LabelRootB, TypeRoot, def(in.RootSize, DefaultRootSize), MiB, attrReadOnly},
		{manifest.LabelConfig, TypeConfig, def(in.ConfigSize, DefaultConfigSize), minFAT32, 0},
	}
	for _, v := range []int64{l.size, in.ESPSize, in.RootSize, in.ConfigSize, in.StateSize} {
		if v < 0 || v%MiB != 0 {
			return l, fmt.Errorf("size %d is not a non-negative multiple of 1 MiB", v)
		}
	}
	at := MiB // the first MiB holds the protective MBR and primary GPT
	for _, s := range sizes {
		if s.size < s.min {
			return l, fmt.Errorf("partition %s: %d MiB is below the minimum %d MiB", s.name, s.size/MiB, s.min/MiB)
		}
		l.parts = append(l.parts, part{name: s.name, typ: s.typ, start: at, size: s.size, attrs: s.attr})
		at += s.size
	}
	// State takes the rest unless sized, ending on a MiB boundary before
	// the backup GPT.
	state := (l.size - gptTail - at) / MiB * MiB
	if in.StateSize > 0 {
		if in.StateSize > state {
			return l, fmt.Errorf("partitions need %d MiB plus %d MiB state, image is %d MiB", at/MiB, in.StateSize/MiB, l.size/MiB)
		}
		state = in.StateSize
	}
	if state < MiB {
		return l, fmt.Errorf("image of %d MiB leaves no room for %s after %d MiB of partitions", l.size/MiB, manifest.LabelState, at/MiB)
	}
	l.parts = append(l.parts, part{name: manifest.LabelState, typ: TypeState, start: at, size: state})
	return l, nil
}

// GUID derives a stable RFC 4122 version-4-style GUID from the seed and a
// name: sha256(seed || 0 || name), with the version and variant bits set.
func GUID(seed []byte, name string) string {
	h := sha256.New()
	h.Write(seed)
	h.Write([]byte{0})
	h.Write([]byte(name))
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// volumeSerial derives a FAT volume serial from the seed.
func volumeSerial(seed []byte, label string) uint32 {
	h := sha256.Sum256(append(append(append([]byte{}, seed...), 0), "fat-serial:"+label...))
	return uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16 | uint32(h[3])<<24
}

func (in Inputs) validate() error {
	var missing []string
	if len(in.Seed) == 0 {
		missing = append(missing, "Seed")
	}
	if in.Version == "" {
		missing = append(missing, "Version")
	}
	if len(in.SystemdBoot) == 0 {
		missing = append(missing, "SystemdBoot")
	}
	if len(in.Kernel) == 0 {
		missing = append(missing, "Kernel")
	}
	if len(in.Initrd) == 0 {
		missing = append(missing, "Initrd")
	}
	if in.RootSquashfs == "" {
		missing = append(missing, "RootSquashfs")
	}
	if len(missing) > 0 {
		return fmt.Errorf("inputs lack %s", strings.Join(missing, ", "))
	}
	if strings.ContainsAny(in.Cmdline+in.Version, "\n\r") {
		return errors.New("version and cmdline must be single lines")
	}
	return nil
}

// Write builds the image at outPath. progress, if not nil, receives one
// line per step ("disk: esp", "disk: root-a 183.2 MB", ...).
func Write(ctx context.Context, outPath string, in Inputs, progress func(string)) (err error) {
	if progress == nil {
		progress = func(string) {}
	}
	if err := in.validate(); err != nil {
		return fmt.Errorf("disk %s: %w", outPath, err)
	}
	l, err := plan(in)
	if err != nil {
		return fmt.Errorf("disk %s: %w", outPath, err)
	}
	// Check the squashfs fits before creating anything.
	sq, err := os.Open(in.RootSquashfs)
	if err != nil {
		return fmt.Errorf("disk %s: root squashfs: %w", outPath, err)
	}
	defer sq.Close()
	sqInfo, err := sq.Stat()
	if err != nil {
		return fmt.Errorf("disk %s: root squashfs: %w", outPath, err)
	}
	if rs := l.get(manifest.LabelRootA).size; sqInfo.Size() > rs {
		return fmt.Errorf("disk %s: root squashfs %s is %d bytes (%.1f MiB), larger than the %d MiB root partition",
			outPath, in.RootSquashfs, sqInfo.Size(), float64(sqInfo.Size())/float64(MiB), rs/MiB)
	}

	f, err := os.CreateTemp(filepath.Dir(outPath), filepath.Base(outPath)+".tmp-*")
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = assemble(ctx, f, l, in, sq, sqInfo.Size(), progress); err != nil {
		return fmt.Errorf("disk %s: %w", outPath, err)
	}
	// An image that carries a site config carries its pair key.
	mode := os.FileMode(0o644)
	if len(in.SiteTOML) > 0 {
		mode = 0o600
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("disk %s: %w", outPath, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("disk %s: sync: %w", outPath, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("disk %s: close: %w", outPath, err)
	}
	if err = os.Rename(f.Name(), outPath); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	// Make the rename itself durable.
	if d, derr := os.Open(filepath.Dir(outPath)); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func assemble(ctx context.Context, f *os.File, l layout, in Inputs, sq *os.File, sqSize int64, progress func(string)) error {
	// A sparse file: regions never written (state, slack) cost nothing.
	if err := f.Truncate(l.size); err != nil {
		return err
	}
	b := file.New(f, false)
	table := &gpt.Table{
		LogicalSectorSize:  SectorSize,
		PhysicalSectorSize: SectorSize,
		ProtectiveMBR:      true,
		GUID:               GUID(in.Seed, "disk"),
	}
	for i, p := range l.parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index:      i + 1,
			Start:      uint64(p.start / SectorSize),
			End:        uint64((p.start+p.size)/SectorSize - 1),
			Size:       uint64(p.size),
			Type:       p.typ,
			Name:       p.name,
			GUID:       GUID(in.Seed, "partition:"+p.name),
			Attributes: p.attrs,
		})
	}
	w, err := b.Writable()
	if err != nil {
		return err
	}
	if err := table.Write(w, l.size); err != nil {
		return fmt.Errorf("partition table: %w", err)
	}

	epoch := in.Epoch
	progress("disk: esp")
	esp := []fatFile{
		{"EFI/BOOT/BOOTX64.EFI", in.SystemdBoot},
		{"loader/loader.conf", []byte(LoaderConf)},
	}
	for _, s := range Slots {
		esp = append(esp,
			fatFile{"tandem/" + s + "/vmlinuz", in.Kernel},
			fatFile{"tandem/" + s + "/initrd.img", in.Initrd},
			fatFile{"loader/entries/" + EntryName(s), []byte(Entry(in, s))})
	}
	p := l.get(manifest.LabelESP)
	if err := makeFAT(f, b, p.start, p.size, "ESP", volumeSerial(in.Seed, "ESP"), epoch, esp); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}

	for _, s := range Slots {
		if err := ctx.Err(); err != nil {
			return err
		}
		progress(fmt.Sprintf("disk: root-%s %.1f MB", s, float64(sqSize)/1e6))
		p := l.get("tandem-root-" + s)
		if err := copyAt(f, p.start, sq, sqSize); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}

	if err := ctx.Err(); err != nil {
		return err
	}
	progress("disk: config")
	cfg := []fatFile{{"README.txt", []byte(ReadmeText)}}
	if len(in.SiteTOML) > 0 {
		cfg = append(cfg, fatFile{"site.toml", in.SiteTOML})
	}
	p = l.get(manifest.LabelConfig)
	if err := makeFAT(f, b, p.start, p.size, manifest.LabelConfig, volumeSerial(in.Seed, manifest.LabelConfig), epoch, cfg); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	// The state partition stays zero: the node formats it at first boot.
	progress(fmt.Sprintf("disk: state %.1f MB (blank)", float64(l.get(manifest.LabelState).size)/1e6))
	return nil
}

// copyAt copies n bytes of src to dst at off. os.File.ReadFrom uses
// copy_file_range, so the kernel copies (or reflinks) without user space.
func copyAt(dst *os.File, off int64, src *os.File, n int64) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := dst.Seek(off, io.SeekStart); err != nil {
		return err
	}
	got, err := dst.ReadFrom(io.LimitReader(src, n))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("copied %d of %d bytes: squashfs changed during the build", got, n)
	}
	return nil
}
