package squashfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Basic inode types; directory entries always carry the basic type, even
// for an extended inode.
const (
	typeDir     = 1
	typeFile    = 2
	typeSymlink = 3
	typeBlock   = 4
	typeChar    = 5
	typeFifo    = 6
	typeSocket  = 7

	typeExtDir  = 8
	typeExtFile = 9
)

// maxName is squashfs's (and Linux's) limit on one path component.
const maxName = 256

// inode is one squashfs inode; hard links share it.
type inode struct {
	typ      uint16 // basic type
	perm     uint16 // mode & 07777, setuid/setgid/sticky included
	uid, gid uint32
	nlink    uint32
	src      string // host path, for reading content and link targets
	size     int64
	target   string
	rdev     uint32  // new_encode_dev format
	entries  []entry // directories only, sorted by name bytes
	number   uint32  // 1-based inode number

	// Filled by the data pass (regular files).
	stored  bool     // content already queued (hard links share it)
	start   uint64   // absolute offset of the first data block
	blocks  []uint32 // on-disk size per block, bit 24 = stored uncompressed, 0 = sparse
	sparse  uint64   // bytes of all-zero blocks stored as holes
	frag    uint32   // fragment block index or noFragment
	fragOff uint32

	// Filled by the metadata pass.
	ref     uint64 // inode table block << 16 | offset
	emitted bool
}

type entry struct {
	name string
	in   *inode
}

const noFragment = 0xffffffff

type devIno struct{ dev, ino uint64 }

// scan reads the tree into memory. Only names, modes and link structure
// are kept; content is streamed later.
func scan(ctx context.Context, root string, allRoot bool) (*inode, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	s := &scanner{ctx: ctx, allRoot: allRoot, links: map[devIno]*inode{}}
	in, err := s.node(root, fi)
	if err != nil {
		return nil, err
	}
	number(in, new(uint32))
	return in, nil
}

type scanner struct {
	ctx     context.Context
	allRoot bool
	links   map[devIno]*inode
}

func (s *scanner) node(p string, fi os.FileInfo) (*inode, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("%s: no stat data", p)
	}
	in := &inode{perm: uint16(st.Mode & 0o7777), uid: st.Uid, gid: st.Gid, nlink: 1, src: p}
	if s.allRoot {
		in.uid, in.gid = 0, 0
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		in.typ = typeDir
		return in, s.dir(in)
	case syscall.S_IFREG:
		// Hard links: only links inside the tree count, so host nlink is
		// never copied (it would depend on links outside srcDir).
		if st.Nlink > 1 {
			key := devIno{uint64(st.Dev), st.Ino}
			if prev := s.links[key]; prev != nil {
				prev.nlink++
				return prev, nil
			}
			s.links[key] = in
		}
		in.typ, in.size = typeFile, st.Size
	case syscall.S_IFLNK:
		t, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		if len(t) >= 4096 {
			return nil, fmt.Errorf("%s: symlink target longer than a page", p)
		}
		in.typ, in.target, in.size = typeSymlink, t, int64(len(t))
	case syscall.S_IFCHR, syscall.S_IFBLK:
		in.typ = typeChar
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			in.typ = typeBlock
		}
		maj, mnr := uint32((st.Rdev>>8)&0xfff|(st.Rdev>>32)&^0xfff), uint32(st.Rdev&0xff|(st.Rdev>>12)&^0xff)
		in.rdev = mnr&0xff | maj<<8 | (mnr&^0xff)<<12
	case syscall.S_IFIFO:
		in.typ = typeFifo
	case syscall.S_IFSOCK:
		in.typ = typeSocket
	default:
		return nil, fmt.Errorf("%s: unsupported file type %#o", p, st.Mode&syscall.S_IFMT)
	}
	return in, nil
}

func (s *scanner) dir(in *inode) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	des, err := os.ReadDir(in.src)
	if err != nil {
		return err
	}
	// squashfs lookups binary-search names in strcmp order; Go string
	// comparison is the same byte order.
	slices.SortFunc(des, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	in.nlink = 2
	for _, de := range des {
		name := de.Name()
		if len(name) > maxName {
			return fmt.Errorf("%s: name longer than %d bytes", filepath.Join(in.src, name), maxName)
		}
		p := filepath.Join(in.src, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		child, err := s.node(p, fi)
		if err != nil {
			return err
		}
		if child.typ == typeDir {
			in.nlink++
		}
		in.entries = append(in.entries, entry{name: name, in: child})
	}
	return nil
}

// number assigns inode numbers in post-order (children before their
// directory), the order the inode table is written in; the root is last.
func number(d *inode, next *uint32) {
	for _, e := range d.entries {
		switch {
		case e.in.typ == typeDir:
			number(e.in, next)
		case e.in.number == 0:
			*next++
			e.in.number = *next
		}
	}
	*next++
	d.number = *next
}
