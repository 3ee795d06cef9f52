package pid1

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// mnt is one mount as data.
type mnt struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (m mnt) String() string {
	return fmt.Sprintf("%s on %s (%s)", m.source, m.target, m.fstype)
}

// earlyMounts are the API file systems PID 1 needs before anything else.
var earlyMounts = []mnt{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// mountOnce creates the target and mounts m, unless the target is already a
// mount point (PID 1 may mount /proc or /dev before its steps run).
func mountOnce(m mnt) error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.target, err)
	}
	if isMountpoint(m.target) {
		return nil
	}
	if _, err := mount.Mount(m.source, m.target, m.fstype, m.data, m.flags); err != nil {
		return err
	}
	return nil
}

// isMountpoint compares the device of dir with its parent's; good enough for
// the fresh mounts PID 1 makes (it misses same-fs bind mounts).
func isMountpoint(dir string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(filepath.Join(dir, ".."), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}
