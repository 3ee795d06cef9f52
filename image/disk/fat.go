package disk

import (
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

type fatFile struct {
	path string // without leading slash
	data []byte
}

// makeFAT formats a FAT32 volume at [start, start+size) of f with
// go-diskfs, adds files in order, then makes it reproducible.
//
// go-diskfs stamps time.Now() (or SOURCE_DATE_EPOCH from the process
// environment) into every directory entry, including "." and "..", and
// its reproducible mode writes serial 0 (and byte-swaps serials). Rather
// than mutate the environment or rely on Chtimes reaching every entry,
// fixFAT rewrites the on-disk result: it walks every directory cluster
// chain from the boot sector and sets all timestamps, then writes the
// serial into both boot sectors. It also points top-level ".." entries at
// cluster 0 as the FAT spec requires.
func makeFAT(f *os.File, b backend.Storage, start, size int64, label string, serial uint32, epoch time.Time, files []fatFile) error {
	fs, err := fat32.Create(b, size, start, SectorSize, label, true)
	if err != nil {
		return fmt.Errorf("format FAT32: %w", err)
	}
	for _, ff := range files {
		if dir := path.Dir(ff.path); dir != "." {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
		}
		// go-diskfs takes paths without a leading slash.
		w, err := fs.OpenFile(ff.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("create %s: %w", ff.path, err)
		}
		// One Write call: go-diskfs allocates the cluster chain per call.
		if _, err := w.Write(ff.data); err != nil {
			return fmt.Errorf("write %s: %w", ff.path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("close %s: %w", ff.path, err)
		}
	}
	if err := fixFAT(f, start, serial, epoch); err != nil {
		return fmt.Errorf("fix timestamps: %w", err)
	}
	return nil
}

// fatGeometry is what the boot sector says about a FAT32 volume.
type fatGeometry struct {
	start        int64 // volume offset in the file
	bytesPerSec  int64
	clusterBytes int64
	fatStart     int64 // first FAT, relative to start
	dataStart    int64 // cluster 2, relative to start
	rootCluster  uint32
	backupBoot   int64 // sector of the backup boot sector
	clusters     uint32
}

func readGeometry(f *os.File, start int64) (*fatGeometry, error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	le := binary.LittleEndian
	if bs[510] != 0x55 || bs[511] != 0xaa || string(bs[82:90]) != "FAT32   " {
		return nil, fmt.Errorf("no FAT32 boot sector at %d", start)
	}
	g := &fatGeometry{start: start, bytesPerSec: int64(le.Uint16(bs[11:]))}
	g.clusterBytes = g.bytesPerSec * int64(bs[13])
	reserved := int64(le.Uint16(bs[14:]))
	fats := int64(bs[16])
	perFAT := int64(le.Uint32(bs[36:]))
	total := int64(le.Uint32(bs[32:]))
	g.fatStart = reserved * g.bytesPerSec
	g.dataStart = (reserved + fats*perFAT) * g.bytesPerSec
	g.rootCluster = le.Uint32(bs[44:])
	g.backupBoot = int64(le.Uint16(bs[50:]))
	if g.clusterBytes == 0 || g.bytesPerSec == 0 {
		return nil, fmt.Errorf("corrupt FAT32 boot sector at %d", start)
	}
	g.clusters = uint32((total*g.bytesPerSec - g.dataStart) / g.clusterBytes)
	return g, nil
}

// chain follows a cluster chain through the first FAT.
func (g *fatGeometry) chain(f *os.File, first uint32) ([]uint32, error) {
	var out []uint32
	e := make([]byte, 4)
	for c := first; c >= 2 && c < 0x0ffffff8; {
		if c > g.clusters+1 || len(out) > int(g.clusters) {
			return nil, fmt.Errorf("bad cluster chain at %d", c)
		}
		out = append(out, c)
		if _, err := f.ReadAt(e, g.start+g.fatStart+int64(c)*4); err != nil {
			return nil, err
		}
		c = binary.LittleEndian.Uint32(e) & 0x0fffffff
	}
	return out, nil
}

func (g *fatGeometry) clusterOffset(c uint32) int64 {
	return g.start + g.dataStart + int64(c-2)*g.clusterBytes
}

// dirEntry is one short (8.3) directory entry as found on disk.
type dirEntry struct {
	off     int64 // in the file
	raw     []byte
	isDir   bool
	dot     bool
	cluster uint32
}

// walkDir calls fn for every live short entry of the directory at cluster
// c, LFN slots excluded, descending into subdirectories.
func (g *fatGeometry) walkDir(f *os.File, c uint32, fn func(dirEntry) error) error {
	clusters, err := g.chain(f, c)
	if err != nil {
		return err
	}
	buf := make([]byte, g.clusterBytes)
	for _, cl := range clusters {
		off := g.clusterOffset(cl)
		if _, err := f.ReadAt(buf, off); err != nil {
			return err
		}
		for i := 0; i < len(buf); i += 32 {
			e := buf[i : i+32]
			switch {
			case e[0] == 0x00:
				return nil // end of directory
			case e[0] == 0xe5 || e[11] == 0x0f:
				continue // deleted, or a long-name slot
			}
			de := dirEntry{off: off + int64(i), raw: e, isDir: e[11]&0x10 != 0, dot: e[0] == '.',
				cluster: uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))}
			if err := fn(de); err != nil {
				return err
			}
			if de.isDir && !de.dot {
				if err := g.walkDir(f, de.cluster, fn); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// fatTime encodes t (UTC) as FAT date, time and 10 ms units; FAT begins
// in 1980.
func fatTime(t time.Time) (date, tm uint16, tenths byte) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenths = byte(t.Second()%2) * 100
	return date, tm, tenths
}

func fixFAT(f *os.File, start int64, serial uint32, epoch time.Time) error {
	g, err := readGeometry(f, start)
	if err != nil {
		return err
	}
	date, tm, tenths := fatTime(epoch)
	le := binary.LittleEndian
	err = g.walkDir(f, g.rootCluster, func(de dirEntry) error {
		e := de.raw
		e[13] = tenths
		le.PutUint16(e[14:], tm)   // created
		le.PutUint16(e[16:], date) // created
		le.PutUint16(e[18:], date) // accessed
		le.PutUint16(e[22:], tm)   // written
		le.PutUint16(e[24:], date) // written
		// A ".." entry whose parent is the root must point at cluster 0
		// (FAT spec; fsck.fat flags it); go-diskfs writes the root's
		// cluster number.
		if de.dot && e[1] == '.' && de.cluster == g.rootCluster {
			le.PutUint16(e[20:], 0)
			le.PutUint16(e[26:], 0)
		}
		_, err := f.WriteAt(e, de.off)
		return err
	})
	if err != nil {
		return err
	}
	// BS_VolID, little-endian, in the boot sector and its backup.
	s := le.AppendUint32(nil, serial)
	for _, sec := range []int64{0, g.backupBoot} {
		if _, err := f.WriteAt(s, start+sec*g.bytesPerSec+0x43); err != nil {
			return err
		}
	}
	return nil
}

// fatSerial reads BS_VolID as blkid prints it.
func fatSerial(f *os.File, start int64) (string, error) {
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, start+0x43); err != nil {
		return "", err
	}
	v := binary.LittleEndian.Uint32(b)
	return fmt.Sprintf("%04X-%04X", v>>16, v&0xffff), nil
}
