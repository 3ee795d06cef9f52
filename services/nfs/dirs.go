package nfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// errSymlink: a path the layer makes or exports has a symbolic link
// below the mountpoint.
var errSymlink = errors.New("is a symbolic link: refusing to follow it")

// mkdirNoFollow makes dir, which lies below base, and its missing
// parents, resolving every component below base with O_NOFOLLOW. NFS
// clients can write below the mountpoint: a symlink they planted would
// otherwise make Start create directories, and exportfs export them,
// wherever it points (the state directory, the root filesystem).
// os.Root would not do: it follows a link that stays inside its root.
func mkdirNoFollow(base, dir string, perm os.FileMode) error {
	rel, err := filepath.Rel(base, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return fmt.Errorf("%s is not below %s", dir, base)
	}
	fd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: base, Err: err}
	}
	defer func() { unix.Close(fd) }()
	if rel == "." {
		return nil
	}
	at := base
	for _, c := range strings.Split(rel, "/") {
		at = filepath.Join(at, c)
		if err := unix.Mkdirat(fd, c, uint32(perm.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdir", Path: at, Err: err}
		}
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return fmt.Errorf("%s %w", at, errSymlink)
			}
			return &os.PathError{Op: "open", Path: at, Err: err}
		}
		unix.Close(fd)
		fd = next
	}
	return nil
}
