package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"tandem.dev/tandem/image/manifest"
)

// Report is what Inspect reads back from an image.
type Report struct {
	Size       int64
	DiskGUID   string
	Partitions []Partition

	ESP        Volume
	LoaderConf string            // loader/loader.conf
	Entries    map[string]string // loader/entries/<file name> → content
	Config     Volume
}

// Partition is one GPT entry.
type Partition struct {
	Index       int
	Name        string
	Type        string // type GUID, upper case
	GUID        string
	Start, Size int64 // bytes
	Attributes  uint64
}

// Volume is a FAT volume's identity and files.
type Volume struct {
	Label  string
	Serial string // as blkid prints it, e.g. 1A2B-3C4D
	Files  []File // sorted by path
}

// File is one file on a FAT volume.
type File struct {
	Path   string // without leading slash
	Size   int64
	SHA256 string
	Data   []byte // only for files up to 64 KiB (entries, configs)
}

// smallFile is the limit up to which Inspect keeps file contents.
const smallFile = 64 << 10

// Partition returns the partition with the GPT name, or nil.
func (r *Report) Partition(name string) *Partition {
	for i := range r.Partitions {
		if r.Partitions[i].Name == name {
			return &r.Partitions[i]
		}
	}
	return nil
}

// File returns the file at p (no leading slash), or nil.
func (v *Volume) File(p string) *File {
	for i := range v.Files {
		if strings.EqualFold(v.Files[i].Path, p) {
			return &v.Files[i]
		}
	}
	return nil
}

// Inspect reads an image back with go-diskfs: the partition table, and
// the files of the ESP and config volumes.
func Inspect(imgPath string) (*Report, error) {
	f, err := os.Open(imgPath)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	b := file.New(f, true)
	t, err := gpt.Read(b, SectorSize, SectorSize)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: partition table: %w", imgPath, err)
	}
	r := &Report{Size: fi.Size(), DiskGUID: strings.ToUpper(t.GUID), Entries: map[string]string{}}
	for _, p := range t.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		r.Partitions = append(r.Partitions, Partition{
			Index: p.Index, Name: p.Name, Type: strings.ToUpper(string(p.Type)), GUID: strings.ToUpper(p.GUID),
			Start: p.GetStart(), Size: p.GetSize(), Attributes: p.Attributes,
		})
	}
	for _, v := range []struct {
		name string
		into *Volume
	}{{manifest.LabelESP, &r.ESP}, {manifest.LabelConfig, &r.Config}} {
		p := r.Partition(v.name)
		if p == nil {
			return nil, fmt.Errorf("inspect %s: no %s partition", imgPath, v.name)
		}
		vol, err := readVolume(f, p.Start, p.Size)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %s: %w", imgPath, v.name, err)
		}
		*v.into = *vol
	}
	if lc := r.ESP.File("loader/loader.conf"); lc != nil {
		r.LoaderConf = string(lc.Data)
	}
	for _, ef := range r.ESP.Files {
		if dir, name := path.Split(ef.Path); strings.EqualFold(dir, "loader/entries/") {
			r.Entries[name] = string(ef.Data)
		}
	}
	return r, nil
}

func readVolume(f *os.File, start, size int64) (*Volume, error) {
	fs, err := fat32.Read(file.New(f, true), size, start, SectorSize)
	if err != nil {
		return nil, err
	}
	v := &Volume{Label: strings.TrimSpace(fs.Label())}
	if v.Serial, err = fatSerial(f, start); err != nil {
		return nil, err
	}
	var walk func(dir string) error
	walk = func(dir string) error {
		des, err := fs.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read dir %s: %w", dir, err)
		}
		for _, de := range des {
			p := path.Join(dir, de.Name())
			if de.Name() == "." || de.Name() == ".." {
				continue
			}
			if de.IsDir() {
				if err := walk(p); err != nil {
					return err
				}
				continue
			}
			data, err := fs.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			sum := sha256.Sum256(data)
			ff := File{Path: p, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
			if len(data) <= smallFile {
				ff.Data = data
			}
			v.Files = append(v.Files, ff)
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, err
	}
	sort.Slice(v.Files, func(i, j int) bool { return v.Files[i].Path < v.Files[j].Path })
	return v, nil
}

// ReadFile returns one file of a FAT partition (by GPT name, e.g.
// manifest.LabelESP) of the image; Inspect keeps only small files' data.
func ReadFile(imgPath, partition, name string) ([]byte, error) {
	f, err := os.Open(imgPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	t, err := gpt.Read(file.New(f, true), SectorSize, SectorSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: partition table of %s: %w", name, imgPath, err)
	}
	for _, p := range t.Partitions {
		if p.Type == gpt.Unused || p.Name != partition {
			continue
		}
		fs, err := fat32.Read(file.New(f, true), p.GetSize(), p.GetStart(), SectorSize)
		if err != nil {
			return nil, fmt.Errorf("read %s: %s of %s: %w", name, partition, imgPath, err)
		}
		data, err := fs.ReadFile(strings.TrimPrefix(name, "/"))
		if err != nil {
			return nil, fmt.Errorf("read %s from %s of %s: %w", name, partition, imgPath, err)
		}
		return data, nil
	}
	return nil, fmt.Errorf("read %s: %s has no partition %q", name, imgPath, partition)
}
