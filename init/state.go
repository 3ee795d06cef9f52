package pid1

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/services/tool"
)

const (
	// StateDir is where the state partition is mounted.
	StateDir = "/var/lib/tandem"
	// LogDir holds the persistent log ring.
	LogDir   = StateDir + "/log"
	mkfsExt4 = "/usr/sbin/mkfs.ext4"
	e2fsck   = "/usr/sbin/e2fsck"
	// stateWait bounds the wait for the state partition to appear; the
	// root is on the same disk, so it is normally there already.
	stateWait = 5 * time.Second
)

// mountState formats the state partition at first boot (only if it is
// provably blank) and mounts it. It never formats any other device: the
// device is found by its GPT partition name alone, and must be unique.
func (b *Boot) mountState() error {
	dev, err := waitPartition(manifest.LabelState, stateWait)
	if err != nil {
		return err
	}
	if err := sameDisk(dev, b.RootDev); err != nil {
		return err
	}
	found, err := disks.ProbePath(dev)
	if err != nil {
		return err
	}
	formatted := false
	switch {
	case found.Blank:
		if err := formatState(dev); err != nil {
			return err
		}
		formatted = true
	case found.Sig == sigExt:
		if err := checkState(b, dev); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s (partition %s) is not blank, refusing to format it: %s", dev, manifest.LabelState, found.What)
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	if _, err := mount.Mount(dev, StateDir, "ext4", "", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, StateDir, err)
	}
	b.addMount(StateDir)
	if formatted {
		b.Log.Info("state: formatted", "dev", dev, "label", manifest.LabelState)
	} else {
		b.Log.Info("state: mounted (existing)", "dev", dev)
	}
	return nil
}

// sameDisk refuses a state partition on another disk than the root's: a
// data disk that happens to carry our label is still a data disk. It
// fails closed: a disk it cannot identify in sysfs is not formatted.
func sameDisk(state, root string) error { return sameDiskIn(sysClassBlock, state, root) }

func sameDiskIn(sys, state, root string) error {
	if root == "" {
		return fmt.Errorf("state partition %s: the root device is unknown, so its disk cannot be checked: refusing to touch it", state)
	}
	sp, err := parentDisk(sys, state)
	if err != nil {
		return fmt.Errorf("state partition %s: %w: refusing to touch it", state, err)
	}
	rp, err := parentDisk(sys, root)
	if err != nil {
		return fmt.Errorf("state partition %s: the root's disk: %w: refusing to touch it", state, err)
	}
	if sp != rp {
		return fmt.Errorf("state partition %s is on %s, but the root is on %s: refusing to touch another disk", state, sp, rp)
	}
	return nil
}

// parentDisk is the disk a partition belongs to, from sysfs (a whole
// disk is its own). Any lookup that fails is an error, never a guess.
func parentDisk(sys, dev string) (string, error) {
	p, err := filepath.EvalSymlinks(filepath.Join(sys, filepath.Base(dev)))
	if err != nil {
		return "", fmt.Errorf("%s not found in sysfs: %w", dev, err)
	}
	_, err = os.Stat(filepath.Join(p, "partition"))
	switch {
	case err == nil:
		return filepath.Base(filepath.Dir(p)), nil
	case errors.Is(err, fs.ErrNotExist):
		return filepath.Base(p), nil
	}
	return "", fmt.Errorf("%s: is it a partition? %w", dev, err)
}

// sigExt is the one signature (disks.Probe's name) the state partition
// may carry; anything else is refused.
const sigExt = "ext2/3/4"

func formatState(dev string) error {
	// -F: the partition is not a whole disk, but mke2fs may still ask.
	r, err := tool.Run(context.Background(), tool.Cmd{Path: mkfsExt4, Args: []string{"-q", "-F", "-L", manifest.LabelState, dev}, Timeout: 2 * time.Minute})
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(r.Stdout+r.Stderr))
	}
	return nil
}

// checkState replays the journal and fixes what e2fsck fixes without
// asking; a power pull must not leave the state unmountable.
func checkState(b *Boot, dev string) error {
	r, err := tool.Run(context.Background(), tool.Cmd{Path: e2fsck, Args: []string{"-p", dev}, Timeout: 2 * time.Minute})
	out := strings.TrimSpace(r.Stdout + r.Stderr)
	var ee *tool.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.Exit < 4:
		// 1: errors corrected; 2: corrected, reboot advised (not for an
		// unmounted fs). Either way the fs is fine to mount now.
		b.Log.Warn("state: e2fsck corrected errors", "dev", dev, "exit", ee.Exit, "out", out)
		return nil
	case errors.As(err, &ee):
		return fmt.Errorf("e2fsck %s: exit %d (uncorrected errors; not mounting): %s", dev, ee.Exit, out)
	}
	// e2fsck missing or not runnable: mounting still replays the journal.
	b.Log.Warn("state: e2fsck not run", "err", err)
	return nil
}

func (b *Boot) addMount(path string) {
	b.mu.Lock()
	b.mounts = append(b.mounts, path)
	b.mu.Unlock()
}

func (b *Boot) openLogRing() error {
	if err := b.out.ring.open(LogDir); err != nil {
		return err
	}
	b.Log.Info("persistent log", "dir", LogDir, "max_bytes", (ringKeep+1)*ringMaxSize)
	return nil
}
