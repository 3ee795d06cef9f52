package rootfs

import (
	"io/fs"
	"syscall"
)

type owner struct{ uid, gid int }

func statOwner(info fs.FileInfo) (owner, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{int(st.Uid), int(st.Gid)}, true
}

// chmod takes the full mode, setuid/setgid/sticky included, as chmod(2) does.
func chmod(p string, mode uint32) error { return syscall.Chmod(p, mode) }
