// Package manifest is the contract between the image builder and PID 1:
// the builder writes it into the initramfs, init reads it at boot.
// It imports nothing heavy so that init stays small.
package manifest

import (
	"bytes"
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"
)

// Path is where the manifest lives inside the initramfs.
const Path = "/etc/tandem/image.toml"

// Partition labels (GPT PARTLABEL) of the Tandem disk layout.
const (
	LabelESP    = "esp"
	LabelRootA  = "tandem-root-a"
	LabelRootB  = "tandem-root-b"
	LabelConfig = "TANDEM-CFG" // also the FAT volume label
	LabelState  = "tandem-state"
)

// Kernel command-line keys init reads.
const (
	CmdlineSlot  = "tandem.slot"
	CmdlineDebug = "tandem.debug"
)

// RootMountpoints must exist as directories in the read-only root: init
// mounts or overlays them and cannot create them there.
var RootMountpoints = []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/var", "/srv"}

// CLIPath is the CLI's path in the root; it links to SelfPath.
const CLIPath = "/usr/bin/tandem"

// SelfPath is where init keeps a copy of its own binary after switch_root;
// the root squashfs links /usr/bin/tandem to it.
const SelfPath = "/run/tandem/tandem"

// Manifest describes one built image.
type Manifest struct {
	Version string `toml:"version"` // image version, derived from the inputs' hash
	Kernel  string `toml:"kernel"`  // kernel release, e.g. 6.1.0-28-amd64 (names /lib/modules/<kernel>)
	Board   string `toml:"board"`
	Console string `toml:"console"` // e.g. ttyS0
	// InitramfsModules load in order before the root is mounted (from the initramfs).
	InitramfsModules []string `toml:"initramfs_modules"`
	// BootModules load after switch_root, from the root's /lib/modules.
	BootModules []string `toml:"boot_modules"`
	// Watchdog is the hardware watchdog device PID 1 pets, if any.
	Watchdog string `toml:"watchdog"`
	// LabChannel names the virtio-serial port of the lab's guest agent;
	// empty on boards that are not lab boards.
	LabChannel string `toml:"lab_channel"`
}

// Read loads the manifest from path.
func Read(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var m Manifest
	d := toml.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return &m, nil
}

// Marshal renders the manifest deterministically.
func (m *Manifest) Marshal() ([]byte, error) { return toml.Marshal(m) }
