// Package squashfs builds the read-only root filesystem of a Tandem image: a
// squashfs 4.0 archive, zstd-compressed, reproducible byte for byte.
//
// It carries its own small writer instead of go-diskfs's. go-diskfs v1.9.4
// (the newest release) cannot archive a Debian root tree: its Finalize reads
// symlink targets with os.Readlink on a path relative to the process working
// directory (every symlink fails unless the caller chdirs into the
// workspace) and lists xattrs through the symlink (every dangling link such
// as /etc/mtab -> ../proc/self/mounts fails; absolute links resolve against
// the build host). It also stamps time.Now(), copies host mtimes and nlinks,
// never splits directory headers at 256 entries, and compresses on one core
// with a fresh encoder per block (about 26 MB/s here, and its output of a
// Go tree fails unsquashfs). go-diskfs's reader still reads every archive
// back in the tests, and Debian's unsquashfs checks it too.
//
// Layout follows mksquashfs exactly (the kernel's sanity checks rely on
// it): superblock, compressor options, data and fragment blocks, inode
// table, directory table, fragment table, id table; no export or xattr
// table.
package squashfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Defaults for Options.
const (
	DefaultBlockSize = 128 << 10
	DefaultLevel     = 3
)

// Options tune Build. The zero value is valid and builds at the Unix epoch.
type Options struct {
	// Epoch (SOURCE_DATE_EPOCH) becomes every inode's mtime and the
	// superblock's mkfs_time. squashfs stores uint32 seconds.
	Epoch time.Time
	// AllRoot forces uid and gid 0 on every inode; otherwise they are taken
	// from the source tree, which the builder populates as root.
	AllRoot bool
	// BlockSize is the data block size, a power of two in [4 KiB, 1 MiB];
	// 0 means 128 KiB.
	BlockSize int
	// Level is the zstd level 1..22 (klauspost/compress maps it onto its
	// four encoder speeds); 0 means 3.
	Level int
	// Workers compress blocks in parallel; 0 means GOMAXPROCS. The output
	// does not depend on it.
	Workers int
	// Logger receives a summary line; nil means slog.Default().
	Logger *slog.Logger
}

// Stats describe one finished build.
type Stats struct {
	Inodes    int
	Fragments int
	Input     int64 // bytes of regular file content
	Output    int64 // archive size including the 4 KiB padding
	Duration  time.Duration
}

func (o *Options) normalize() error {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 4<<10 || o.BlockSize > 1<<20 || o.BlockSize&(o.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d: want a power of two from 4 KiB to 1 MiB", o.BlockSize)
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Level < 1 || o.Level > 22 {
		return fmt.Errorf("zstd level %d: want 1..22", o.Level)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Unix(0, 0)
	}
	if s := o.Epoch.Unix(); s < 0 || s > math.MaxUint32 {
		return fmt.Errorf("epoch %s does not fit squashfs's uint32 seconds", o.Epoch.UTC())
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Build archives the tree at srcDir into a squashfs at outPath. The file
// appears at outPath only when complete (temp file, fsync, rename).
func Build(ctx context.Context, srcDir, outPath string, opts Options) error {
	_, err := BuildStats(ctx, srcDir, outPath, opts)
	return err
}

// BuildStats is Build that also returns figures for the caller's log.
func BuildStats(ctx context.Context, srcDir, outPath string, opts Options) (st Stats, err error) {
	if err := opts.normalize(); err != nil {
		return st, fmt.Errorf("squashfs %s: %w", outPath, err)
	}
	began := time.Now()
	root, err := scan(ctx, srcDir, opts.AllRoot)
	if err != nil {
		return st, fmt.Errorf("squashfs: scan %s: %w", srcDir, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(outPath), filepath.Base(outPath)+".tmp-*")
	if err != nil {
		return st, fmt.Errorf("squashfs: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	w, err := newWriter(tmp, opts)
	if err != nil {
		return st, fmt.Errorf("squashfs %s: %w", outPath, err)
	}
	defer w.close()
	if st, err = w.write(ctx, root); err != nil {
		return st, fmt.Errorf("squashfs %s: %w", outPath, err)
	}
	// fsync so a crash cannot leave a renamed but empty archive behind.
	if err = tmp.Sync(); err != nil {
		return st, fmt.Errorf("squashfs %s: sync: %w", outPath, err)
	}
	// CreateTemp makes 0600; the archive holds nothing secret.
	if err = tmp.Chmod(0o644); err != nil {
		return st, fmt.Errorf("squashfs %s: %w", outPath, err)
	}
	if err = tmp.Close(); err != nil {
		return st, fmt.Errorf("squashfs %s: close: %w", outPath, err)
	}
	if err = os.Rename(tmp.Name(), outPath); err != nil {
		return st, fmt.Errorf("squashfs: %w", err)
	}
	st.Duration = time.Since(began)
	opts.Logger.Info("squashfs built", "path", outPath, "inodes", st.Inodes,
		"in_mb", mb(st.Input), "out_mb", mb(st.Output),
		"seconds", st.Duration.Round(time.Millisecond).Seconds(),
		"mb_per_s", mb(int64(float64(st.Input)/st.Duration.Seconds())))
	return st, nil
}

func mb(n int64) float64 { return math.Round(float64(n)/1e5) / 10 }

// errChanged reports a source file that changed size while being archived.
var errChanged = errors.New("file changed while being archived")

// readFull is io.ReadFull that names a short read as errChanged.
func readFull(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return errChanged
		}
		return err
	}
	return nil
}
