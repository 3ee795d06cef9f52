package squashfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

const (
	magic             = 0x73717368
	superblockSize    = 96
	metadataSize      = 8192
	compressionZstd   = 6
	flagNoXattrs      = 0x0200
	flagCompOpts      = 0x0400
	flagExportable    = 0x0080
	blockUncompressed = 1 << 24
	metaUncompressed  = 1 << 15
	noTable           = math.MaxUint64
	padTo             = 4096
)

// writer streams one archive into f. Data blocks are compressed by a pool
// of workers and written strictly in submission order, so the output does
// not depend on scheduling.
type writer struct {
	f    *os.File
	opts Options
	enc  *zstd.Encoder
	bufs sync.Pool

	// data pipeline
	work   chan *job
	order  chan *job
	wg     sync.WaitGroup
	out    *bufio.Writer
	pos    uint64 // next write offset, owned by the writer goroutine
	werr   error  // first write error, owned by the writer goroutine
	failed atomic.Bool
	input  int64

	frag      []byte       // the fragment block being filled
	fragments []*fragEntry // one per fragment block, filled by the writer goroutine
	closed    bool
}

type fragEntry struct {
	start uint64
	size  uint32
}

// job is one data or fragment block on its way through the pipeline.
type job struct {
	raw    []byte // nil for a sparse (all-zero) block
	out    []byte
	stored bool // kept uncompressed because compression did not help
	done   chan struct{}
	place  func(pos uint64, size uint32)
}

func newWriter(f *os.File, opts Options) (*writer, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(opts.Level)),
		zstd.WithEncoderConcurrency(opts.Workers),
		// The kernel sizes its zstd window from the block size, and a
		// frame checksum only costs 4 bytes per block.
		zstd.WithSingleSegment(true),
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	w := &writer{
		f: f, opts: opts, enc: enc,
		work:  make(chan *job, 4*opts.Workers),
		order: make(chan *job, 4*opts.Workers),
		out:   bufio.NewWriterSize(f, 1<<20),
	}
	w.bufs.New = func() any { return make([]byte, opts.BlockSize) }
	for range opts.Workers {
		w.wg.Add(1)
		go w.compressLoop()
	}
	w.wg.Add(1)
	go w.writeLoop()
	return w, nil
}

// close stops the pipeline; safe to call twice.
func (w *writer) close() {
	if w.closed {
		return
	}
	w.closed = true
	close(w.work)
	close(w.order)
	w.wg.Wait()
	_ = w.enc.Close()
}

func (w *writer) compressLoop() {
	defer w.wg.Done()
	for j := range w.work {
		if j.raw != nil {
			c := w.enc.EncodeAll(j.raw, make([]byte, 0, len(j.raw)))
			if len(c) < len(j.raw) {
				j.out = c
				w.bufs.Put(j.raw[:cap(j.raw)])
			} else {
				j.out, j.stored = j.raw, true
			}
		}
		close(j.done)
	}
}

func (w *writer) writeLoop() {
	defer w.wg.Done()
	for j := range w.order {
		<-j.done
		if j.raw == nil {
			j.place(w.pos, 0)
			continue
		}
		if w.werr == nil {
			if _, w.werr = w.out.Write(j.out); w.werr != nil {
				w.failed.Store(true)
			}
		}
		size := uint32(len(j.out))
		if j.stored {
			size |= blockUncompressed
			w.bufs.Put(j.raw[:cap(j.raw)])
		}
		j.place(w.pos, size)
		w.pos += uint64(len(j.out))
	}
}

func (w *writer) submit(raw []byte, place func(uint64, uint32)) {
	j := &job{raw: raw, done: make(chan struct{}), place: place}
	w.order <- j
	if raw == nil {
		close(j.done)
		return
	}
	w.work <- j
}

// write produces the whole archive.
func (w *writer) write(ctx context.Context, root *inode) (Stats, error) {
	// Superblock placeholder, then the zstd options as an uncompressed
	// metadata block, as mksquashfs writes them.
	head := make([]byte, superblockSize+6)
	binary.LittleEndian.PutUint16(head[superblockSize:], metaUncompressed|4)
	binary.LittleEndian.PutUint32(head[superblockSize+2:], uint32(w.opts.Level))
	if _, err := w.out.Write(head); err != nil {
		return Stats{}, err
	}
	w.pos = uint64(len(head))

	if err := w.data(ctx, root); err != nil {
		w.close()
		return Stats{}, err
	}
	if len(w.frag) > 0 {
		w.flushFragment()
	}
	w.close() // waits for every block to be written
	if w.werr != nil {
		return Stats{}, fmt.Errorf("write data: %w", w.werr)
	}

	// Metadata is small (a few MB for a full root), so it is built in
	// memory and appended.
	var ids idTable
	inodes, dirs := newMeta(w.enc), newMeta(w.enc)
	emitDir(root, root.number+1, inodes, dirs, &ids, uint32(w.opts.Epoch.Unix()))
	inodeStart := w.pos
	inodeTable := inodes.finish()
	dirStart := inodeStart + uint64(len(inodeTable))
	dirTable := dirs.finish()
	tail := append(inodeTable, dirTable...)
	pos := dirStart + uint64(len(dirTable))

	fragStart := uint64(noTable)
	if len(w.fragments) > 0 {
		fm := newMeta(w.enc)
		for _, fe := range w.fragments {
			e := make([]byte, 16)
			binary.LittleEndian.PutUint64(e, fe.start)
			binary.LittleEndian.PutUint32(e[8:], fe.size)
			fm.write(e)
		}
		var index []byte
		tail, pos, index = appendTable(tail, pos, fm)
		fragStart = pos
		tail = append(tail, index...)
		pos += uint64(len(index))
	}

	// The export table (inode number -> inode reference) lets the kernel
	// decode NFS file handles: nfsd refuses to export a squashfs without
	// it, and NFSv4 exports the root as the pseudo filesystem's top.
	refs := make([]uint64, root.number)
	collectRefs(root, refs)
	em := newMeta(w.enc)
	for _, r := range refs {
		em.write(binary.LittleEndian.AppendUint64(nil, r))
	}
	var eindex []byte
	tail, pos, eindex = appendTable(tail, pos, em)
	exportStart := pos
	tail = append(tail, eindex...)
	pos += uint64(len(eindex))

	im := newMeta(w.enc)
	for _, id := range ids.list {
		im.write(binary.LittleEndian.AppendUint32(nil, id))
	}
	var index []byte
	tail, pos, index = appendTable(tail, pos, im)
	idStart := pos
	tail = append(tail, index...)
	bytesUsed := pos + uint64(len(index))
	if pad := bytesUsed % padTo; pad != 0 {
		tail = append(tail, make([]byte, padTo-pad)...)
	}
	if _, err := w.out.Write(tail); err != nil {
		return Stats{}, fmt.Errorf("write tables: %w", err)
	}
	if err := w.out.Flush(); err != nil {
		return Stats{}, fmt.Errorf("write tables: %w", err)
	}

	sb := make([]byte, superblockSize)
	le := binary.LittleEndian
	le.PutUint32(sb[0:], magic)
	le.PutUint32(sb[4:], root.number) // the root is numbered last
	le.PutUint32(sb[8:], uint32(w.opts.Epoch.Unix()))
	le.PutUint32(sb[12:], uint32(w.opts.BlockSize))
	le.PutUint32(sb[16:], uint32(len(w.fragments)))
	le.PutUint16(sb[20:], compressionZstd)
	le.PutUint16(sb[22:], uint16(bits.TrailingZeros(uint(w.opts.BlockSize))))
	le.PutUint16(sb[24:], flagNoXattrs|flagCompOpts|flagExportable)
	le.PutUint16(sb[26:], uint16(len(ids.list)))
	le.PutUint16(sb[28:], 4)
	le.PutUint16(sb[30:], 0)
	le.PutUint64(sb[32:], root.ref)
	le.PutUint64(sb[40:], bytesUsed)
	le.PutUint64(sb[48:], idStart)
	le.PutUint64(sb[56:], noTable) // xattrs
	le.PutUint64(sb[64:], inodeStart)
	le.PutUint64(sb[72:], dirStart)
	le.PutUint64(sb[80:], fragStart)
	le.PutUint64(sb[88:], exportStart)
	if _, err := w.f.WriteAt(sb, 0); err != nil {
		return Stats{}, fmt.Errorf("write superblock: %w", err)
	}
	return Stats{
		Inodes: int(root.number), Fragments: len(w.fragments),
		Input: w.input, Output: int64(bytesUsed+padTo-1) / padTo * padTo,
	}, nil
}

// collectRefs fills refs[number-1] with each inode's reference.
func collectRefs(d *inode, refs []uint64) {
	refs[d.number-1] = d.ref
	for _, e := range d.entries {
		if e.in.typ == typeDir {
			collectRefs(e.in, refs)
		} else {
			refs[e.in.number-1] = e.in.ref
		}
	}
}

// appendTable appends a table's metadata blocks at pos and returns the
// index of their absolute offsets, which the superblock points at.
func appendTable(tail []byte, pos uint64, m *meta) ([]byte, uint64, []byte) {
	blocks := m.finish()
	var index []byte
	for _, off := range m.offsets {
		index = binary.LittleEndian.AppendUint64(index, pos+uint64(off))
	}
	return append(tail, blocks...), pos + uint64(len(blocks)), index
}

// data streams every regular file's content, first links only, in the
// same post-order as the inode table.
func (w *writer) data(ctx context.Context, d *inode) error {
	for _, e := range d.entries {
		in := e.in
		switch {
		case in.typ == typeDir:
			if err := w.data(ctx, in); err != nil {
				return err
			}
		case in.typ == typeFile && !in.stored:
			if err := ctx.Err(); err != nil {
				return err
			}
			if w.failed.Load() {
				return nil // the write error is reported after close
			}
			if err := w.file(in); err != nil {
				return fmt.Errorf("%s: %w", in.src, err)
			}
		}
	}
	return nil
}

func (w *writer) file(in *inode) error {
	in.stored = true
	bs := int64(w.opts.BlockSize)
	full := int(in.size / bs)
	in.blocks = make([]uint32, full)
	in.frag = noFragment
	w.input += in.size
	if in.size == 0 {
		return nil
	}
	f, err := os.Open(in.src)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := range full {
		b := w.bufs.Get().([]byte)[:bs]
		if err := readFull(f, b); err != nil {
			return err
		}
		if allZero(b) {
			// A hole costs nothing on disk; the kernel reads zeros.
			w.bufs.Put(b)
			b = nil
			in.sparse += uint64(bs)
		}
		i := i
		w.submit(b, func(pos uint64, size uint32) {
			if i == 0 {
				in.start = pos
			}
			in.blocks[i] = size
		})
	}
	tail := int(in.size % bs)
	if tail == 0 {
		return nil
	}
	// Tail ends are packed into shared fragment blocks.
	if len(w.frag)+tail > int(bs) {
		w.flushFragment()
	}
	if w.frag == nil {
		w.frag = w.bufs.Get().([]byte)[:0]
	}
	in.frag, in.fragOff = uint32(len(w.fragments)), uint32(len(w.frag))
	n := len(w.frag)
	w.frag = w.frag[:n+tail]
	return readFull(f, w.frag[n:])
}

func (w *writer) flushFragment() {
	fe := &fragEntry{}
	w.fragments = append(w.fragments, fe)
	w.submit(w.frag, func(pos uint64, size uint32) { fe.start, fe.size = pos, size })
	w.frag = nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// meta accumulates a metadata table: 8 KiB blocks, each compressed if
// that helps, behind a 2-byte length header.
type meta struct {
	enc     *zstd.Encoder
	out     []byte
	cur     []byte
	offsets []int // start of each block within out
}

func newMeta(enc *zstd.Encoder) *meta { return &meta{enc: enc} }

// ref is the position the next byte will have: block start << 16 | offset.
func (m *meta) ref() (block uint32, offset uint16) {
	return uint32(len(m.out)), uint16(len(m.cur))
}

func (m *meta) write(b []byte) {
	m.cur = append(m.cur, b...)
	for len(m.cur) >= metadataSize {
		m.flush(m.cur[:metadataSize])
		m.cur = append(m.cur[:0], m.cur[metadataSize:]...)
	}
}

func (m *meta) flush(b []byte) {
	m.offsets = append(m.offsets, len(m.out))
	c := m.enc.EncodeAll(b, nil)
	hdr := uint16(len(c))
	if len(c) >= len(b) {
		c, hdr = b, uint16(len(b))|metaUncompressed
	}
	m.out = binary.LittleEndian.AppendUint16(m.out, hdr)
	m.out = append(m.out, c...)
}

func (m *meta) finish() []byte {
	if len(m.cur) > 0 {
		m.flush(m.cur)
		m.cur = nil
	}
	return m.out
}

// idTable maps uids and gids to their 16-bit index, in first-use order.
type idTable struct {
	list []uint32
	idx  map[uint32]uint16
}

func (t *idTable) get(id uint32) uint16 {
	if t.idx == nil {
		t.idx = map[uint32]uint16{}
	}
	if i, ok := t.idx[id]; ok {
		return i
	}
	i := uint16(len(t.list))
	t.idx[id] = i
	t.list = append(t.list, id)
	return i
}

// emitDir writes d's subtree: children's inodes, then d's listing into
// the directory table, then d's own inode, which points at the listing.
func emitDir(d *inode, parent uint32, inodes, dirs *meta, ids *idTable, mtime uint32) {
	for _, e := range d.entries {
		switch {
		case e.in.typ == typeDir:
			emitDir(e.in, d.number, inodes, dirs, ids, mtime)
		case !e.in.emitted:
			emitInode(e.in, 0, 0, 0, 0, inodes, ids, mtime)
		}
	}
	listing := dirListing(d.entries)
	blk, off := dirs.ref()
	dirs.write(listing)
	emitInode(d, parent, blk, off, uint32(len(listing))+3, inodes, ids, mtime)
}

// dirListing encodes directory entries under headers. A new header starts
// when the inode block changes, after 256 entries, when the inode number
// delta leaves int16, or when the run would exceed a metadata block (the
// same rules as mksquashfs, which the kernel's readdir expects).
func dirListing(entries []entry) []byte {
	var (
		b                []byte
		hdrAt, count     int
		hdrBlock, hdrIno uint32
	)
	le := binary.LittleEndian
	for _, e := range entries {
		blk, off := uint32(e.in.ref>>16), uint16(e.in.ref)
		delta := int64(e.in.number) - int64(hdrIno)
		size := 8 + len(e.name)
		if count == 0 || count == 256 || blk != hdrBlock || delta < math.MinInt16 || delta > math.MaxInt16 ||
			len(b)-hdrAt+size > metadataSize {
			hdrAt, count, hdrBlock, hdrIno, delta = len(b), 0, blk, e.in.number, 0
			b = le.AppendUint32(b, 0)
			b = le.AppendUint32(b, blk)
			b = le.AppendUint32(b, e.in.number)
		}
		count++
		le.PutUint32(b[hdrAt:], uint32(count-1))
		b = le.AppendUint16(b, off)
		b = le.AppendUint16(b, uint16(int16(delta)))
		b = le.AppendUint16(b, e.in.typ)
		b = le.AppendUint16(b, uint16(len(e.name)-1))
		b = append(b, e.name...)
	}
	return b
}

// emitInode appends one inode; for directories blk/off/size locate the
// listing in the directory table.
func emitInode(in *inode, parent, blk uint32, off uint16, size uint32, inodes *meta, ids *idTable, mtime uint32) {
	le := binary.LittleEndian
	typ := in.typ
	switch {
	case typ == typeDir && size > math.MaxUint16:
		typ = typeExtDir
	case typ == typeFile && (in.nlink > 1 || in.sparse > 0 || in.start > math.MaxUint32 || in.size > math.MaxUint32):
		typ = typeExtFile
	}
	b := le.AppendUint16(nil, typ)
	b = le.AppendUint16(b, in.perm)
	b = le.AppendUint16(b, ids.get(in.uid))
	b = le.AppendUint16(b, ids.get(in.gid))
	b = le.AppendUint32(b, mtime)
	b = le.AppendUint32(b, in.number)
	switch typ {
	case typeDir:
		b = le.AppendUint32(b, blk)
		b = le.AppendUint32(b, in.nlink)
		b = le.AppendUint16(b, uint16(size))
		b = le.AppendUint16(b, off)
		b = le.AppendUint32(b, parent)
	case typeExtDir:
		b = le.AppendUint32(b, in.nlink)
		b = le.AppendUint32(b, size)
		b = le.AppendUint32(b, blk)
		b = le.AppendUint32(b, parent)
		b = le.AppendUint16(b, 0) // no directory index: lookups scan
		b = le.AppendUint16(b, off)
		b = le.AppendUint32(b, math.MaxUint32) // no xattrs
	case typeFile:
		b = le.AppendUint32(b, uint32(in.start))
		b = le.AppendUint32(b, in.frag)
		b = le.AppendUint32(b, in.fragOff)
		b = le.AppendUint32(b, uint32(in.size))
		for _, s := range in.blocks {
			b = le.AppendUint32(b, s)
		}
	case typeExtFile:
		b = le.AppendUint64(b, in.start)
		b = le.AppendUint64(b, uint64(in.size))
		b = le.AppendUint64(b, in.sparse)
		b = le.AppendUint32(b, in.nlink)
		b = le.AppendUint32(b, in.frag)
		b = le.AppendUint32(b, in.fragOff)
		b = le.AppendUint32(b, math.MaxUint32)
		for _, s := range in.blocks {
			b = le.AppendUint32(b, s)
		}
	case typeSymlink:
		b = le.AppendUint32(b, in.nlink)
		b = le.AppendUint32(b, uint32(len(in.target)))
		b = append(b, in.target...)
	case typeBlock, typeChar:
		b = le.AppendUint32(b, in.nlink)
		b = le.AppendUint32(b, in.rdev)
	case typeFifo, typeSocket:
		b = le.AppendUint32(b, in.nlink)
	}
	blkI, offI := inodes.ref()
	in.ref = uint64(blkI)<<16 | uint64(offI)
	in.emitted = true
	inodes.write(b)
}
