// Package initramfs writes reproducible newc cpio archives for the kernel
// to unpack as its initramfs. The archive is deliberately uncompressed:
// under QEMU TCG the kernel's own decompression costs more than reading
// the extra bytes.
package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// Entry is one file of the archive. The type bits of Mode choose the kind:
// none for a regular file, fs.ModeDir, fs.ModeSymlink, or
// fs.ModeDevice|fs.ModeCharDevice (fs.ModeDevice alone: block device).
type Entry struct {
	// Path is slash-separated; a leading "/" is optional.
	Path string
	// Mode holds the type bits plus permissions, including
	// fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky (or Unix 0o7000).
	Mode fs.FileMode
	// Data is a regular file's content, unless HostPath is set, in which
	// case the content is read from that host file at Build time.
	Data     []byte
	HostPath string
	// Target is a symlink's target, stored as given.
	Target string
	// Major and Minor number a device node.
	Major, Minor uint32
}

// Build writes entries as a newc cpio archive to w. Every record gets
// mtime epoch and uid/gid 0; records are sorted by path; missing parent
// directories are added with mode 0755; inode numbers count up from 1 in
// that order. The same entries and epoch always give the same bytes.
func Build(w io.Writer, epoch time.Time, entries []Entry) error {
	mtime := epoch.Unix()
	if mtime < 0 || mtime > math.MaxUint32 {
		return fmt.Errorf("build initramfs: epoch %d does not fit newc's 32-bit mtime", mtime)
	}
	byPath := map[string]Entry{}
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		if _, dup := byPath[p]; dup {
			return fmt.Errorf("build initramfs: %s added twice", p)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			e, ok := byPath[dir]
			if !ok {
				byPath[dir] = Entry{Path: dir, Mode: fs.ModeDir | 0o755}
				continue
			}
			if !e.Mode.IsDir() {
				return fmt.Errorf("build initramfs: %s: parent %s is not a directory", p, dir)
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	// Byte order puts every directory before its contents, which the
	// kernel's unpacker needs.
	slices.Sort(paths)

	cw := cpio.Newc.Writer(w)
	for i, p := range paths {
		if err := writeEntry(cw, byPath[p], uint64(i+1), uint64(mtime)); err != nil {
			return fmt.Errorf("build initramfs: %s: %w", p, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("build initramfs: trailer: %w", err)
	}
	return nil
}

func cleanPath(p string) (string, error) {
	c := strings.TrimLeft(p, "/")
	for _, part := range strings.Split(c, "/") {
		if part == ".." {
			return "", fmt.Errorf("path %q leaves the archive root", p)
		}
	}
	c = path.Clean(c)
	if c == "." {
		return "", fmt.Errorf("path %q names the root", p)
	}
	return c, nil
}

// readerAt hides a file's Close from the cpio writer, so Build closes
// every file it opens exactly once, error or not.
type readerAt struct{ io.ReaderAt }

func writeEntry(cw cpio.RecordWriter, e Entry, ino, mtime uint64) error {
	info := cpio.Info{
		Ino:   ino,
		Mode:  permBits(e.Mode),
		NLink: 1,
		MTime: mtime,
		Name:  e.Path,
	}
	rec := cpio.Record{Info: info}
	switch t := e.Mode.Type(); t {
	case 0:
		rec.Mode |= cpio.S_IFREG
		if e.HostPath == "" {
			rec.ReaderAt = bytes.NewReader(e.Data)
			rec.FileSize = uint64(len(e.Data))
			break
		}
		f, err := os.Open(e.HostPath)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("host file %s is not a regular file", e.HostPath)
		}
		rec.ReaderAt = readerAt{f}
		rec.FileSize = uint64(fi.Size())
	case fs.ModeDir:
		rec.Mode |= cpio.S_IFDIR
		rec.NLink = 2
	case fs.ModeSymlink:
		if e.Target == "" {
			return errors.New("symlink without a target")
		}
		rec.Mode |= cpio.S_IFLNK
		rec.ReaderAt = strings.NewReader(e.Target)
		rec.FileSize = uint64(len(e.Target))
	case fs.ModeDevice | fs.ModeCharDevice:
		rec.Mode |= cpio.S_IFCHR
		rec.Rmajor, rec.Rminor = uint64(e.Major), uint64(e.Minor)
	case fs.ModeDevice:
		rec.Mode |= cpio.S_IFBLK
		rec.Rmajor, rec.Rminor = uint64(e.Major), uint64(e.Minor)
	default:
		return fmt.Errorf("unsupported file type %v", t)
	}
	if rec.FileSize > math.MaxUint32 {
		return fmt.Errorf("%d bytes do not fit newc's 32-bit size", rec.FileSize)
	}
	return cw.WriteRecord(rec)
}

// permBits converts Go's mode bits to the Unix ones cpio stores. Unix
// bits 0o7000 written straight into an fs.FileMode (0o4755) are honoured
// too: Go leaves them unused, and dropping a setuid bit silently is worse.
func permBits(m fs.FileMode) uint64 {
	b := uint64(m & 0o7777)
	if m&fs.ModeSetuid != 0 {
		b |= cpio.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= cpio.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= cpio.S_ISVTX
	}
	return b
}

// Builder collects entries for Build.
type Builder struct {
	// Epoch is the mtime of every record (SOURCE_DATE_EPOCH).
	Epoch   time.Time
	entries []Entry
	err     error // first AddTree error, reported again by WriteTo
}

// New returns a Builder stamping records with epoch.
func New(epoch time.Time) *Builder { return &Builder{Epoch: epoch} }

// AddFile adds a regular file with the given content and permissions.
func (b *Builder) AddFile(p string, data []byte, perm fs.FileMode) {
	b.entries = append(b.entries, Entry{Path: p, Mode: perm &^ fs.ModeType, Data: data})
}

// AddHostFile adds a regular file whose content is read from hostPath
// when the archive is written; perm is used, not the host file's mode.
func (b *Builder) AddHostFile(p, hostPath string, perm fs.FileMode) {
	b.entries = append(b.entries, Entry{Path: p, Mode: perm &^ fs.ModeType, HostPath: hostPath})
}

// AddDir adds a directory; only needed for a mode other than 0755 or for
// an empty directory.
func (b *Builder) AddDir(p string, perm fs.FileMode) {
	b.entries = append(b.entries, Entry{Path: p, Mode: fs.ModeDir | perm&^fs.ModeType})
}

// AddSymlink adds a symbolic link to target.
func (b *Builder) AddSymlink(p, target string) {
	b.entries = append(b.entries, Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Target: target})
}

// AddCharDev adds a character device node, e.g. dev/console 5:1.
func (b *Builder) AddCharDev(p string, perm fs.FileMode, major, minor uint32) {
	b.entries = append(b.entries, Entry{Path: p, Mode: fs.ModeDevice | fs.ModeCharDevice | perm&^fs.ModeType, Major: major, Minor: minor})
}

// AddTree adds everything below hostDir under prefix: directories and
// regular files with their host permissions, symlinks with their targets.
// hostDir itself gets no entry of its own (a temporary directory is 0700),
// so prefix is created 0755 unless added explicitly. Host ownership and
// times are not used.
func (b *Builder) AddTree(prefix, hostDir string) error {
	var add []Entry
	err := filepath.WalkDir(hostDir, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(hostDir, hp)
		if err != nil || rel == "." {
			return err
		}
		p := path.Join(prefix, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		perm := fi.Mode() &^ fs.ModeType
		switch t := fi.Mode().Type(); t {
		case 0:
			add = append(add, Entry{Path: p, Mode: perm, HostPath: hp})
		case fs.ModeDir:
			add = append(add, Entry{Path: p, Mode: fs.ModeDir | perm})
		case fs.ModeSymlink:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			add = append(add, Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Target: target})
		default:
			return fmt.Errorf("%s: unsupported file type %v", hp, t)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("add tree %s: %w", hostDir, err)
		if b.err == nil {
			b.err = err
		}
		return err
	}
	b.entries = append(b.entries, add...)
	return nil
}

// Entries returns what was added so far.
func (b *Builder) Entries() []Entry { return slices.Clone(b.entries) }

// WriteTo builds the archive into w (io.WriterTo). Errors such as
// duplicate paths, a file below a symlink, or an unreadable host file
// surface here.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	cw := &countingWriter{w: w}
	err := Build(cw, b.Epoch, b.entries)
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
