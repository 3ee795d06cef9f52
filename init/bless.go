package pid1

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
)

const espMount = "/run/tandem/esp"

// countedEntry matches a Boot Loader Spec entry with a boot counter:
// tandem-a+3.conf as built, tandem-a+2-1.conf after one try.
var countedEntry = regexp.MustCompile(`^(.+)\+\d+(-\d+)?\.conf$`)

// blessedName is the entry's name once the boot is known good: without
// the counter, so systemd-boot stops counting tries down.
func blessedName(entry string) (string, bool) {
	m := countedEntry.FindStringSubmatch(entry)
	if m == nil {
		return entry, false
	}
	return m[1] + ".conf", true
}

// blessBoot marks this slot good once the node is ready. Until then
// systemd-boot counts each boot as a try; after three failed tries it
// prefers the other slot.
func (b *Boot) blessBoot() error {
	dev, err := waitPartition(manifest.LabelESP, 2*time.Second)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(espMount, 0o755); err != nil {
		return err
	}
	if _, err := mount.Mount(dev, espMount, "vfat", "", unix.MS_NOEXEC|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return fmt.Errorf("mount %s (ESP): %w", dev, err)
	}
	defer mount.Unmount(espMount, false, true)
	entries, err := filepath.Glob(filepath.Join(espMount, "loader/entries", "tandem-"+b.Slot+"+*.conf"))
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		b.Log.Info("boot: slot already marked good", "slot", b.Slot)
		return nil
	}
	for _, e := range entries {
		good, ok := blessedName(filepath.Base(e))
		if !ok {
			continue
		}
		if err := os.Rename(e, filepath.Join(filepath.Dir(e), good)); err != nil {
			return fmt.Errorf("bless %s: %w", filepath.Base(e), err)
		}
		b.Log.Info(fmt.Sprintf("boot: slot %s marked good (%s → %s)", b.Slot, filepath.Base(e), good))
	}
	unix.Sync()
	return nil
}
