package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSysfs lays out /sys/devices/.../block/<disk>/<part> with the
// /sys/class/block links the kernel makes, and returns the class dir.
func fakeSysfs(t *testing.T, disks map[string][]string) string {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "class", "block")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(class, 0o755))
	for disk, parts := range disks {
		d := filepath.Join(root, "devices", "pci0", "block", disk)
		must(os.MkdirAll(d, 0o755))
		must(os.Symlink(d, filepath.Join(class, disk)))
		for _, p := range parts {
			must(os.MkdirAll(filepath.Join(d, p), 0o755))
			must(os.WriteFile(filepath.Join(d, p, "partition"), []byte("1\n"), 0o644))
			must(os.Symlink(filepath.Join(d, p), filepath.Join(class, p)))
		}
	}
	return class
}

// The state partition is formatted only once it is proven to sit on the
// root's disk; whatever sysfs cannot tell counts as "no".
func TestSameDiskFailsClosed(t *testing.T) {
	tests := []struct {
		name        string
		state, root string
		edit        func(t *testing.T, class string)
		errHas      string // "" the partition may be used
	}{
		{name: "same disk", state: "/dev/vda4", root: "/dev/vda2"},
		{name: "another disk", state: "/dev/vdb1", root: "/dev/vda2", errHas: "is on vdb, but the root is on vda"},
		{name: "root device unknown", state: "/dev/vda4", root: "", errHas: "root device is unknown"},
		{name: "state partition not in sysfs", state: "/dev/vdc1", root: "/dev/vda2", errHas: "/dev/vdc1 not found in sysfs"},
		{name: "root not in sysfs", state: "/dev/vda4", root: "/dev/vdz2", errHas: "the root's disk: /dev/vdz2 not found in sysfs"},
		{name: "partition attribute unreadable", state: "/dev/vda4", root: "/dev/vda2", edit: func(t *testing.T, class string) {
			// ENOTDIR, not ENOENT: sysfs is not what it should be.
			dir, _ := filepath.EvalSymlinks(filepath.Join(class, "vda4"))
			os.RemoveAll(dir)
			if err := os.WriteFile(dir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, errHas: "is it a partition?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class := fakeSysfs(t, map[string][]string{"vda": {"vda1", "vda2", "vda3", "vda4"}, "vdb": {"vdb1"}})
			if tt.edit != nil {
				tt.edit(t, class)
			}
			err := sameDiskIn(class, tt.state, tt.root)
			if tt.errHas == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("got %v, want an error containing %q", err, tt.errHas)
			}
		})
	}
}

// A block device whose uevent cannot be read (other than because it went
// away) fails the scan: skipping it could hide a second device carrying
// the label, and the uniqueness check would pass on half the disks.
func TestScanBlockFailsClosed(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda4": "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTNAME=tandem-state\n",
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(uevent), 0o644)
	}
	// A device that went away: only its directory entry is left.
	os.MkdirAll(filepath.Join(sys, "vdc1"), 0o755)
	if devs, err := scanBlock(sys); err != nil || len(devs) != 1 {
		t.Fatalf("a vanished device: %v %v", devs, err)
	}
	// One whose uevent is unreadable (EISDIR here; EIO on a sick bus).
	os.MkdirAll(filepath.Join(sys, "sdb1", "uevent"), 0o755)
	if devs, err := scanBlock(sys); err == nil || !strings.Contains(err.Error(), "sdb1") {
		t.Errorf("scan with an unreadable device: %v, %v", devs, err)
	}
	if _, err := scanBlock(filepath.Join(sys, "missing")); err == nil {
		t.Error("a missing sysfs listed no devices without an error")
	}
}

// The node used is the device sysfs named: a file, or a node of another
// device under its name, is refused.
func TestDevNodeChecksIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	dir := t.TempDir()
	d := blockDev{Name: "vda4", Major: "254", Minor: "4"}
	if p, err := devNodeIn(dir, d); err != nil || p != filepath.Join(dir, "vda4") {
		t.Fatalf("made: %q %v", p, err)
	}
	if _, err := devNodeIn(dir, d); err != nil {
		t.Errorf("existing right node: %v", err)
	}
	if err := unix.Mknod(filepath.Join(dir, "vda5"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 17))); err != nil {
		t.Fatal(err)
	}
	if _, err := devNodeIn(dir, blockDev{Name: "vda5", Major: "254", Minor: "5"}); err == nil || !strings.Contains(err.Error(), "is not block device 254:5") {
		t.Errorf("a node of another device: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "vda6"), nil, 0o644)
	if _, err := devNodeIn(dir, blockDev{Name: "vda6", Major: "254", Minor: "6"}); err == nil {
		t.Error("a plain file taken for the device")
	}
	if _, err := devNodeIn(dir, blockDev{Name: "vda7"}); err == nil {
		t.Error("no MAJOR/MINOR, yet a node")
	}
}
