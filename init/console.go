package pid1

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openConsole returns /dev/console and makes it fds 0, 1 and 2.
//
// The kernel opens /dev/console for init only if the initramfs has it; if
// not, fds 0-2 are closed (the Go runtime then points them at /dev/null, or
// aborts if that is missing too). Without the node we mount devtmpfs on /dev
// early, and as a last resort mknod it.
func openConsole() (*os.File, error) {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if errors.Is(err, os.ErrNotExist) {
		if merr := mountDevtmpfs(); merr != nil {
			os.MkdirAll("/dev", 0o755)
			unix.Mknod("/dev/console", unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1)))
		}
		f, err = os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open /dev/console: %w", err)
	}
	// Child processes and the Go runtime's own crash output use 0-2.
	for fd := 0; fd <= 2; fd++ {
		if !sameFile(fd, int(f.Fd())) {
			unix.Dup3(int(f.Fd()), fd, 0)
		}
	}
	return f, nil
}

// sameFile reports whether two fds refer to the same open device.
func sameFile(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Rdev == sb.Rdev && sa.Mode == sb.Mode
}

// mountDevtmpfs mounts devtmpfs on /dev unless something already is.
func mountDevtmpfs() error {
	return mountOnce(mnt{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"})
}
