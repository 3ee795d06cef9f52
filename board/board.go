// Package board holds the hardware profiles: which kernel modules a head
// needs, its console and watchdog, and how it names disks and NICs by
// stable identity. Profiles are data (one TOML file each, embedded).
package board

import (
	"embed"
	"fmt"
	"sort"
	"strings"

	"tandem.dev/tandem/internal/tomlpos"
)

//go:embed *.toml
var files embed.FS

// Board is one hardware profile.
type Board struct {
	Name        string `toml:"name"`
	Description string `toml:"description"`
	// Console is the serial console device; Cmdline is added to the kernel
	// command line of every boot entry.
	Console string `toml:"console"`
	Cmdline string `toml:"cmdline"`
	// Watchdog is the hardware watchdog device PID 1 pets.
	Watchdog string `toml:"watchdog"`
	// Lab boards have a virtio-serial guest-agent port; real boards never do.
	LabChannel string  `toml:"lab_channel"`
	Modules    Modules `toml:"modules"`
	Disks      Match   `toml:"disks"`
	NICs       Match   `toml:"nics"`
	// IPoIB boards carry replication over InfiniBand (bond in active-backup
	// with fail_over_mac=active, connected mode).
	IPoIB    bool `toml:"ipoib"`
	IPoIBMTU int  `toml:"ipoib_mtu"`
}

// Modules are kernel module names (without .ko).
type Modules struct {
	// Initramfs: what finding and mounting the root needs, loaded first.
	Initramfs []string `toml:"initramfs"`
	// Boot: loaded by PID 1 after switch_root.
	Boot []string `toml:"boot"`
	// Extra: shipped in the root but loaded on demand (by tools or later layers).
	Extra []string `toml:"extra"`
}

// Match lists the sysfs drivers / by-id prefixes that identify the
// devices of a class, so that nodes never rely on /dev/sdX or ethN order.
type Match struct {
	Drivers  []string `toml:"drivers"`
	IDPrefix []string `toml:"id_prefix"`
}

// All returns every module the root must ship (before dependency closure).
func (b *Board) All() []string {
	var all []string
	all = append(all, b.Modules.Initramfs...)
	all = append(all, b.Modules.Boot...)
	all = append(all, b.Modules.Extra...)
	return all
}

// Lab reports whether b is a QEMU lab board: only there may lab
// material run (the lab agent, the published lab key, the rescue shell).
func (b *Board) Lab() bool { return strings.HasPrefix(b.Name, "qemu-") }

// Names lists the built-in boards.
func Names() []string {
	ents, _ := files.ReadDir(".")
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".toml"))
	}
	sort.Strings(names)
	return names
}

// Load returns the built-in board called name.
func Load(name string) (*Board, error) {
	data, err := files.ReadFile(name + ".toml")
	if err != nil {
		return nil, fmt.Errorf("unknown board %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return Parse("board/"+name+".toml", data)
}

// Parse decodes and checks one board profile.
func Parse(file string, data []byte) (*Board, error) {
	var b Board
	doc, err := tomlpos.Decode(file, data, &b)
	if err != nil {
		return nil, err
	}
	var es tomlpos.Errors
	if b.Name == "" {
		es = append(es, doc.Errorf("name", "is required"))
	}
	if b.Console == "" {
		es = append(es, doc.Errorf("console", "is required (the serial console device, e.g. ttyS0)"))
	}
	if len(b.Modules.Initramfs) == 0 {
		es = append(es, doc.Errorf("modules.initramfs", "is empty: the initramfs could not find the root disk"))
	}
	if b.IPoIB && b.IPoIBMTU == 0 {
		es = append(es, doc.Errorf("ipoib_mtu", "is required on IPoIB boards"))
	}
	if b.LabChannel != "" && !b.Lab() {
		es = append(es, doc.Errorf("lab_channel", "is only allowed on qemu-* boards: a real head must have no guest-agent channel"))
	}
	return &b, es.Err()
}
