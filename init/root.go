package pid1

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
)

const (
	newRoot     = "/newroot"
	overlayBase = "/run/tandem/overlay"
	rootWait    = 10 * time.Second
)

// writable lists the paths of the read-only root that get a writable layer.
// Overlay upper dirs live in a tmpfs, so changes vanish at reboot; persistent
// state is the state partition's job.
var writable = []struct {
	path    string
	overlay bool // else a plain tmpfs
	data    string
}{
	{"/etc", true, ""},
	{"/var", true, ""},
	{"/tmp", false, "mode=1777"},
}

// rootNeeds are directories the root squashfs must have: it is read-only,
// so PID 1 cannot create mount points in it.
var rootNeeds = manifest.RootMountpoints

// parseUevent parses a sysfs uevent file (KEY=value lines).
func parseUevent(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	return m
}

// blockDev is one block device as sysfs describes it.
type blockDev struct {
	Name, PartName string
	Major, Minor   string
}

// sysClassBlock is where the kernel lists block devices.
const sysClassBlock = "/sys/class/block"

// scanBlock lists the block devices under sys (/sys/class/block).
func scanBlock(sys string) ([]blockDev, error) {
	ents, err := os.ReadDir(sys)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []blockDev
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sys, e.Name(), "uevent"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // device went away
		}
		if err != nil {
			// Skipping it could hide a second device with the label
			// we look for: the lookup must fail, not guess.
			return nil, fmt.Errorf("block device %s: %w", e.Name(), err)
		}
		u := parseUevent(string(b))
		name := u["DEVNAME"]
		if name == "" {
			name = e.Name()
		}
		out = append(out, blockDev{Name: name, PartName: u["PARTNAME"], Major: u["MAJOR"], Minor: u["MINOR"]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// findPartition returns the devices whose GPT partition name is label.
func findPartition(devs []blockDev, label string) []blockDev {
	var out []blockDev
	for _, d := range devs {
		if d.PartName == label {
			out = append(out, d)
		}
	}
	return out
}

// waitPartition polls sysfs until the labelled partition shows up (no udev:
// the disk driver may still be probing) and returns its /dev path.
func waitPartition(label string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		devs, err := scanBlock(sysClassBlock)
		if err != nil {
			return "", err
		}
		switch found := findPartition(devs, label); len(found) {
		case 0:
			if time.Now().After(deadline) {
				names := []string{"none"}
				if len(devs) > 0 {
					names = nil
				}
				for _, d := range devs {
					names = append(names, d.Name+"("+d.PartName+")")
				}
				return "", fmt.Errorf("no partition labelled %s after %s; block devices: %s",
					label, timeout, strings.Join(names, " "))
			}
			time.Sleep(50 * time.Millisecond)
		case 1:
			return devNode(found[0])
		default:
			// Booting the wrong disk's root is worse than not booting.
			var names []string
			for _, d := range found {
				names = append(names, d.Name)
			}
			return "", fmt.Errorf("partition label %s is on several devices: %s", label, strings.Join(names, " "))
		}
	}
}

// devNode returns /dev/<name>, creating the node if devtmpfs has not yet.
func devNode(d blockDev) (string, error) { return devNodeIn("/dev", d) }

// devNodeIn checks that the node is the block device sysfs described
// (its major:minor): a stale node or a file of that name is refused, not
// formatted or mounted.
func devNodeIn(dir string, d blockDev) (string, error) {
	p := filepath.Join(dir, d.Name)
	var maj, min uint32
	if _, err := fmt.Sscan(d.Major+" "+d.Minor, &maj, &min); err != nil {
		return "", fmt.Errorf("%s: bad MAJOR/MINOR in uevent: %w", d.Name, err)
	}
	want := unix.Mkdev(maj, min)
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(want)); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("mknod %s: %w", p, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != want {
		return "", fmt.Errorf("%s is not block device %d:%d, which sysfs names %s (mode %#o, rdev %d:%d)",
			p, maj, min, d.Name, st.Mode&unix.S_IFMT, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return p, nil
}

// mountRoot mounts the slot's squashfs read-only at /newroot.
func mountRoot(dev string) error {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if _, err := mount.Mount(dev, newRoot, "squashfs", "", unix.MS_RDONLY|unix.MS_NODEV); err != nil {
		return err
	}
	var missing []string
	for _, d := range rootNeeds {
		if fi, err := os.Stat(newRoot + d); err != nil || !fi.IsDir() {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("root %s lacks directories %v", dev, missing)
	}
	return nil
}

// mountWritable gives the writable paths their overlay or tmpfs.
func mountWritable() error {
	if err := mountOnce(mnt{"tmpfs", overlayBase, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}); err != nil {
		return err
	}
	for _, w := range writable {
		target := newRoot + w.path
		if !w.overlay {
			if _, err := mount.Mount("tmpfs", target, "tmpfs", w.data, unix.MS_NOSUID|unix.MS_NODEV); err != nil {
				return err
			}
			continue
		}
		base := filepath.Join(overlayBase, strings.Trim(w.path, "/"))
		upper, work := base+"/upper", base+"/work"
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		// The lower dir is the squashfs dir the overlay then covers.
		data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", target, upper, work)
		if _, err := mount.Mount("overlay", target, "overlay", data, 0); err != nil {
			return err
		}
	}
	return nil
}

// copySelf copies the running binary to manifest.SelfPath, which the root's
// /usr/bin/tandem points at, so the CLI exists after the initramfs is freed.
func copySelf() error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(manifest.SelfPath), 0o755); err != nil {
		return err
	}
	tmp := manifest.SelfPath + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy to %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, manifest.SelfPath)
}

// switchRoot moves the API mounts into /newroot, makes it / and frees the
// initramfs, like switch_root(8) but without its exec: PID 1 keeps running
// the root steps, and the "re-exec" step (reexec.go) execs the copy later.
// It returns how many initramfs entries it deleted.
func switchRoot() (int, error) {
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := mount.MoveMount(m, newRoot+m); err != nil {
			return 0, fmt.Errorf("move %s: %w", m, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return 0, err
	}
	old, err := os.Open("/")
	if err != nil {
		return 0, err
	}
	defer old.Close()
	if err := mount.MoveMount(".", "/"); err != nil {
		return 0, fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return 0, fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return 0, err
	}
	// Never delete anything that is not the initramfs.
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(old.Fd()), &st); err != nil {
		return 0, fmt.Errorf("statfs old root: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return 0, fmt.Errorf("old root is not an initramfs (fs magic %#x); not freeing it", st.Type)
	}
	var fst unix.Stat_t
	if err := unix.Fstat(int(old.Fd()), &fst); err != nil {
		return 0, err
	}
	return freeDir(int(old.Fd()), fst.Dev), nil
}

// freeDir deletes what it can below the directory fd, staying on device dev.
// Best effort: whatever stays just costs memory. It returns the count.
func freeDir(fd int, dev uint64) (n int) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return 0
	}
	dir := os.NewFile(uintptr(dup), "oldroot")
	names, _ := dir.Readdirnames(-1)
	dir.Close()
	for _, name := range names {
		child, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil { // a file or symlink
			if unix.Unlinkat(fd, name, 0) == nil {
				n++
			}
			continue
		}
		var st unix.Stat_t
		same := unix.Fstat(child, &st) == nil && st.Dev == dev
		if same {
			n += freeDir(child, dev)
		}
		unix.Close(child)
		if same && unix.Unlinkat(fd, name, unix.AT_REMOVEDIR) == nil {
			n++
		}
	}
	return n
}
