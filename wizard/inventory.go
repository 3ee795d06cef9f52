package wizard

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Inventory reads a head's hardware. PID 1 provides it (from sysfs and
// blkid); tests provide fakes.
type Inventory func(ctx context.Context) (Hardware, error)

// Hardware is what a head offers the pair.
type Hardware struct {
	NICs  []NIC  `json:"nics"`
	Disks []Disk `json:"disks"`
	// Gateway is the default gateway the head uses now (DHCP), if any:
	// a suggestion for the site form.
	Gateway string `json:"gateway,omitempty"`
}

// NIC is a network interface.
type NIC struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac"`
	Link      bool     `json:"link"`
	SpeedMbps int      `json:"speed_mbps,omitempty"` // 0: unknown
	Addrs     []string `json:"addrs,omitempty"`      // current addresses, CIDR
	// Wizard is true for the NIC the wizard is reached on: the
	// management NIC to suggest.
	Wizard bool `json:"wizard,omitempty"`
}

// Disk is a block device that could be a RAID member.
type Disk struct {
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	SizeBytes uint64 `json:"size_bytes"`
	// Signature is what blkid found on it ("xfs", "linux_raid_member",
	// "gpt", ...); empty for a blank disk.
	Signature string `json:"signature,omitempty"`
	// System marks the disk the head boots from: never offered.
	System bool `json:"system,omitempty"`
}

// Limits on an inventory from the network.
const (
	maxNICs  = 64
	maxDisks = 256
	maxField = 128
)

// check bounds an inventory that came from the peer: it is shown in the
// operator's browser and its names end up in the site config.
func (h Hardware) check() error {
	if len(h.NICs) > maxNICs || len(h.Disks) > maxDisks {
		return fmt.Errorf("%d NICs and %d disks: too many", len(h.NICs), len(h.Disks))
	}
	ok := func(s string, empty bool) bool { return (empty && s == "") || printable(s, maxField) }
	seen := map[string]bool{}
	for _, n := range h.NICs {
		if !ok(n.Name, false) || !ok(n.MAC, true) || len(n.Addrs) > 16 || strings.ContainsAny(n.Name, " /:") {
			return fmt.Errorf("NIC %q: malformed", n.Name)
		}
		for _, a := range n.Addrs {
			if _, err := netip.ParsePrefix(a); err != nil {
				return fmt.Errorf("NIC %q: address %q: %w", n.Name, a, err)
			}
		}
	}
	for _, d := range h.Disks {
		if !ok(d.Serial, false) || !ok(d.Model, true) || !ok(d.Signature, true) || strings.TrimSpace(d.Serial) != d.Serial || strings.ContainsAny(d.Serial, " \t") {
			return fmt.Errorf("disk %q: malformed", d.Serial)
		}
		if seen[d.Serial] {
			return fmt.Errorf("disk serial %q twice", d.Serial)
		}
		seen[d.Serial] = true
	}
	if h.Gateway != "" {
		if _, err := netip.ParseAddr(h.Gateway); err != nil {
			return fmt.Errorf("gateway %q: %w", h.Gateway, err)
		}
	}
	return nil
}

func (h Hardware) disk(serial string) (Disk, bool) {
	for _, d := range h.Disks {
		if d.Serial == serial {
			return d, true
		}
	}
	return Disk{}, false
}

// nicByNameOrMAC finds a NIC as a site config names it.
func (h Hardware) nicByNameOrMAC(s string) (NIC, bool) {
	for _, n := range h.NICs {
		if n.Name == s || (n.MAC != "" && strings.EqualFold(n.MAC, s)) {
			return n, true
		}
	}
	return NIC{}, false
}

func (h Hardware) nic(name string) (NIC, bool) {
	for _, n := range h.NICs {
		if n.Name == name {
			return n, true
		}
	}
	return NIC{}, false
}

// Contents says what the disk holds, in the words the wizard and tandem
// pair show.
func (d Disk) Contents() string {
	switch {
	case d.System:
		return "system disk"
	case d.Signature != "":
		return "holds " + d.Signature
	}
	return "blank"
}

// HumanSize renders a disk size the way disk vendors print it.
func HumanSize(b uint64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(b)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if f >= 100 || i == 0 {
		return fmt.Sprintf("%.0f %s", f, units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func humanSpeed(mbps int) string {
	switch {
	case mbps <= 0:
		return "unknown"
	case mbps >= 1000 && mbps%1000 == 0:
		return fmt.Sprintf("%d Gb/s", mbps/1000)
	case mbps >= 1000:
		return fmt.Sprintf("%.1f Gb/s", float64(mbps)/1000)
	}
	return fmt.Sprintf("%d Mb/s", mbps)
}
