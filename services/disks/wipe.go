package disks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
)

// ErrSystemDisk: the disk holds the boot image or something mounted.
var ErrSystemDisk = services.Sentinel("the system disk", services.ErrInUse)

// ErrStillData: a wiped disk still does not probe blank.
var ErrStillData = services.Sentinel("still holds data after wiping", services.ErrHasData)

// Wipe destroys what the disk whose serial number is serial holds, for
// the operator's "destroy data on serial:<serial>": it makes the disk
// blank as Probe defines it (the RAID layer's test before mdadm
// --create) by zeroing its first and last MiB, where every signature
// Probe knows lies (md superblocks, DRBD metadata, the backup GPT).
// The middle of the disk is not touched.
//
// It refuses a serial that names no disk or several, the system disk,
// and a disk that is mounted, held (md, device-mapper) or in an md
// array. The device is opened O_EXCL, so the kernel refuses it too while
// anything has it claimed, and nothing can claim it while Wipe writes.
// After opening, the node must be the disk sysfs describes, and sysfs
// must still give it serial; after writing, fsync, the block device's
// cache is dropped and the disk is probed again: not blank is an error.
// It returns what the disk held.
//
// The writes run while ctx lasts; a device that does not answer leaves
// Wipe returning at ctx's end, its write still pending in the kernel.
func (f Finder) Wipe(ctx context.Context, serial string, log *slog.Logger) (Content, error) {
	if log == nil {
		log = slog.Default()
	}
	if serial == "" {
		return Content{}, fmt.Errorf("wipe: no serial number: %w", ErrNotFound)
	}
	id := "serial:" + serial
	ms, all, err := f.Resolve([]string{id})
	if err != nil {
		return Content{}, fmt.Errorf("wipe %s: %w", id, err)
	}
	d := ms[0].Disk
	if d == nil {
		return Content{}, fmt.Errorf("wipe %s: %w; disks here: %s", id, ErrNotFound, Describe(all))
	}
	u, err := f.Usage(*d)
	if err != nil {
		return Content{}, fmt.Errorf("wipe %s (%s): %w", id, d.Name, err)
	}
	switch {
	case u.System():
		return Content{}, fmt.Errorf("wipe %s (%s): %w: %s", id, d.Name, ErrSystemDisk, u)
	case u.InUse():
		return Content{}, fmt.Errorf("wipe %s (%s): %w: %s", id, d.Name, services.ErrInUse, u)
	}
	type result struct {
		before Content
		err    error
	}
	done := make(chan result, 1)
	go func() {
		before, err := f.wipe(ctx, *d, serial)
		done <- result{before, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.before, fmt.Errorf("wipe %s (%s): %w", id, d.Name, r.err)
		}
		log.Warn("disk: wiped at the operator's request", "disk", id, "device", d.Path,
			"size", d.Size, "held", r.before.String())
		return r.before, nil
	case <-ctx.Done():
		return Content{}, fmt.Errorf("wipe %s (%s): no answer in time: %w", id, d.Name, ctx.Err())
	}
}

// wipe opens the disk exclusively, checks it is the one meant, and zeroes
// its ends.
func (f Finder) wipe(ctx context.Context, d Disk, serial string) (Content, error) {
	fd, err := os.OpenFile(d.Path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return Content{}, fmt.Errorf("%w: the kernel has %s claimed (mounted, an array, device-mapper or DRBD)", services.ErrInUse, d.Path)
	}
	if err != nil {
		return Content{}, err
	}
	defer fd.Close()
	check := f.sameNode
	if check == nil {
		check = sameNode
	}
	if err := check(fd, d.Path, attr(filepath.Join(f.sys(), "block", d.Name), "dev")); err != nil {
		return Content{}, err
	}
	// The name could have changed hands between the scan and the open
	// (a disk pulled, another one probed): ask sysfs again.
	now, ok := f.read(d.Name)
	if !ok || now.Serial != serial {
		return Content{}, fmt.Errorf("%s: its serial is now %q: %w", d.Name, now.Serial, ErrNotFound)
	}
	size, err := fd.Seek(0, io.SeekEnd)
	if err != nil {
		return Content{}, fmt.Errorf("size: %w", err)
	}
	if size != now.Size {
		return Content{}, fmt.Errorf("%s is %d bytes, sysfs says %d", d.Path, size, now.Size)
	}
	before, err := Probe(fd, size)
	if err != nil {
		// Unreadable ends are what a wipe can cure (the drive remaps
		// a sector on write); the probe afterwards decides.
		before = Content{What: "unreadable: " + err.Error()}
	}
	zero := make([]byte, 64<<10)
	for _, r := range wipeRanges(size) {
		for off := r[0]; off < r[1]; off += int64(len(zero)) {
			if err := ctx.Err(); err != nil {
				return before, err
			}
			n := min(int64(len(zero)), r[1]-off)
			if _, err := fd.WriteAt(zero[:n], off); err != nil {
				return before, fmt.Errorf("write at %d: %w", off, err)
			}
		}
	}
	if err := fd.Sync(); err != nil {
		return before, fmt.Errorf("fsync: %w", err)
	}
	block := isBlock(fd)
	if block {
		// Drop the cached pages, so the probe below reads the disk.
		if err := unix.IoctlSetInt(int(fd.Fd()), unix.BLKFLSBUF, 0); err != nil {
			return before, fmt.Errorf("flush the block device's cache: %w", err)
		}
	}
	after, err := Probe(fd, size)
	if err != nil {
		return before, fmt.Errorf("probe after wiping: %w", err)
	}
	if !after.Blank {
		return before, fmt.Errorf("%w: %s", ErrStillData, after)
	}
	if block {
		// The partitions the kernel knew are gone from the disk; have
		// it forget them. Best effort: the disk is blank either way.
		_ = unix.IoctlSetInt(int(fd.Fd()), unix.BLKRRPART, 0)
	}
	return before, nil
}

// wipeRanges are the byte ranges [start, end) Wipe zeroes: the first and
// the last ProbeArea of a device, one range when they meet.
func wipeRanges(size int64) [][2]int64 {
	if size <= 2*ProbeArea {
		return [][2]int64{{0, size}}
	}
	return [][2]int64{{0, ProbeArea}, {size - ProbeArea, size}}
}

func isBlock(fd *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(fd.Fd()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK
}

// sameNode checks that fd, opened from path, is the block device whose
// sysfs "dev" is dev ("252:16"): a stale node, or a file where the node
// should be, is refused.
func sameNode(fd *os.File, path, dev string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s is not a block device", path)
	}
	var maj, mnr uint32
	if _, err := fmt.Sscanf(dev, "%d:%d", &maj, &mnr); err != nil {
		return fmt.Errorf("%s: sysfs dev %q: %w", path, dev, err)
	}
	if st.Rdev != unix.Mkdev(maj, mnr) {
		return fmt.Errorf("%s is device %d:%d, sysfs says %s", path, unix.Major(st.Rdev), unix.Minor(st.Rdev), dev)
	}
	return nil
}
