// Package disks finds a head's data disks by stable identity and tells
// whether a block device is blank.
//
// Kernel names (sda, vdb, nvme0n1) follow probe order and can change
// between boots, so the site config names disks by identity instead:
//
//	serial:S455NY0M100003        the drive's serial number
//	wwn:0x5002538e40a10004       the World Wide Name (NAA), from the wwid
//	by-id/ata-MODEL_SERIAL       a udev-style /dev/disk/by-id name
//
// There is no udev in the image, so the by-id names are rebuilt here from
// sysfs, as udev's 60-persistent-storage rules would build them:
//
//	virtio   /sys/block/vdX/serial               by-id/virtio-SERIAL
//	NVMe     /sys/block/nvmeXnY/{wwid,device/serial,device/model}
//	                                             by-id/nvme-MODEL_SERIAL, by-id/nvme-WWID
//	ATA      /sys/block/sdX/device/{vendor,model,vpd_pg80}
//	                                             by-id/ata-MODEL_SERIAL
//	SCSI     /sys/block/sdX/device/{vendor,model,vpd_pg80,wwid}
//	                                             by-id/scsi-SVENDOR_MODEL_SERIAL
//	any      wwid naa.HEX                        by-id/wwn-0xHEX, wwn:0xHEX
//
// udev's SCSI names come from scsi_id's VPD 0x83 parsing, which this does
// not reproduce in full; serial: and wwn: are the dependable spellings, and
// a disk that is not found is reported with every identity of every disk
// present, so the operator can copy the right one.
//
// Nothing here writes to a disk except Wipe (wipe.go), which the
// operator asks for by serial number.
package disks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"tandem.dev/tandem/services"
)

// Disk is one whole disk found in sysfs.
type Disk struct {
	// Name is the kernel name ("vdb"): valid for this boot only.
	Name string
	// Path is the device node ("/dev/vdb").
	Path string
	// Size in bytes.
	Size   int64
	Serial string
	WWID   string
	Vendor string
	Model  string
	// IDs are every identity the disk answers to, in config spelling:
	// "serial:...", "wwn:0x...", "by-id/...".
	IDs []string
}

func (d Disk) String() string {
	return fmt.Sprintf("%s (%s)", d.Name, strings.Join(d.IDs, ", "))
}

// Finder reads sysfs. The zero value reads the real /sys, /dev and /proc.
type Finder struct {
	SysRoot  string // default "/sys"; tests point it at a fake tree
	DevDir   string // default "/dev"
	ProcRoot string // default "/proc": self/mountinfo and mdstat, for Usage

	// sameNode checks that an opened device node is the disk sysfs
	// describes ("dev", major:minor); nil is the real check. Tests with
	// image files replace it.
	sameNode func(fd *os.File, path, dev string) error
}

func (f Finder) sys() string {
	if f.SysRoot == "" {
		return "/sys"
	}
	return f.SysRoot
}

func (f Finder) proc() string {
	if f.ProcRoot == "" {
		return "/proc"
	}
	return f.ProcRoot
}

func (f Finder) dev() string {
	if f.DevDir == "" {
		return "/dev"
	}
	return f.DevDir
}

// virtualPrefixes are block devices that are never RAID members: they
// are built on other disks, or are not disks at all.
var virtualPrefixes = []string{"loop", "ram", "zram", "md", "dm-", "drbd", "sr", "fd", "nbd", "mtdblock"}

// Scan lists the whole disks in /sys/block with their identities, sorted
// by kernel name. Partitions are not in /sys/block; virtual devices are
// skipped.
func (f Finder) Scan() ([]Disk, error) {
	dir := filepath.Join(f.sys(), "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	var out []Disk
	for _, e := range ents {
		name := e.Name()
		if slices.ContainsFunc(virtualPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		d, ok := f.read(name)
		if ok {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// read builds one disk from /sys/block/<name>; ok is false for a block
// device without a backing device (nothing to identify it by).
func (f Finder) read(name string) (Disk, bool) {
	base := filepath.Join(f.sys(), "block", name)
	if _, err := os.Stat(filepath.Join(base, "device")); err != nil {
		return Disk{}, false
	}
	d := Disk{Name: name, Path: filepath.Join(f.dev(), name)}
	if s, err := strconv.ParseInt(attr(base, "size"), 10, 64); err == nil {
		d.Size = s * 512 // sysfs counts 512-byte sectors whatever the logical block size
	}
	switch {
	case strings.HasPrefix(name, "vd"):
		d.Serial = attr(base, "serial")
		if d.Serial != "" {
			d.addByID("virtio-" + d.Serial)
		}
	case strings.HasPrefix(name, "nvme"):
		d.Serial = attr(base, "device/serial")
		d.Model = attr(base, "device/model")
		d.WWID = attr(base, "wwid")
		if d.WWID == "" {
			d.WWID = attr(base, "device/wwid")
		}
		if d.Model != "" && d.Serial != "" {
			d.addByID("nvme-" + d.Model + "_" + d.Serial)
		}
		if d.WWID != "" {
			d.addByID("nvme-" + d.WWID)
		}
	default: // SCSI, ATA behind libata, USB, SAS
		d.Vendor = attr(base, "device/vendor")
		d.Model = attr(base, "device/model")
		d.WWID = attr(base, "device/wwid")
		d.Serial = attr(base, "device/serial")
		if d.Serial == "" {
			d.Serial = vpdSerial(filepath.Join(base, "device", "vpd_pg80"))
		}
		if d.Serial != "" {
			if d.Vendor == "ATA" {
				d.addByID("ata-" + d.Model + "_" + d.Serial)
			} else {
				d.addByID("scsi-S" + d.Vendor + "_" + d.Model + "_" + d.Serial)
			}
		}
	}
	if d.Serial != "" {
		d.IDs = append([]string{"serial:" + d.Serial}, d.IDs...)
	}
	if w := naaWWN(d.WWID); w != "" {
		d.IDs = append(d.IDs, "wwn:"+w)
		d.addByID("wwn-" + w)
	}
	return d, true
}

func (d *Disk) addByID(name string) {
	id := "by-id/" + udevEscape(name)
	if !slices.Contains(d.IDs, id) {
		d.IDs = append(d.IDs, id)
	}
}

// attr reads a sysfs attribute, trimmed; "" if absent.
func attr(base, rel string) string {
	b, err := os.ReadFile(filepath.Join(base, rel))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
}

// vpdSerial reads the Unit Serial Number VPD page (0x80): a 4-byte header
// whose last two bytes are the length, then the serial in ASCII.
func vpdSerial(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return strings.TrimSpace(strings.TrimRight(string(b[4:4+n]), "\x00"))
}

// naaWWN turns a wwid "naa.5000C500A1B2C3D4" into "0x5000c500a1b2c3d4";
// other designators (t10., eui.) are not WWNs.
func naaWWN(wwid string) string {
	h, ok := strings.CutPrefix(strings.ToLower(wwid), "naa.")
	if !ok || (len(h) != 16 && len(h) != 32) {
		return ""
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return "0x" + h
}

// udevEscape does what udev does to a by-id name: runs of whitespace
// become one '_' (leading and trailing whitespace dropped), and bytes
// outside [A-Za-z0-9#+-.:=@_] become '_'.
func udevEscape(s string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.TrimSpace(s) {
		switch {
		case r == ' ' || r == '\t' || r == '\n':
			space = true
			continue
		case space:
			b.WriteByte('_')
			space = false
		}
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune("#+-.:=@_", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Normalize returns the spelling identities are compared in: wwn: in
// lower case, everything else as written.
func Normalize(id string) string {
	if w, ok := strings.CutPrefix(id, "wwn:"); ok {
		return "wwn:" + strings.ToLower(w)
	}
	return id
}

// ErrNotFound: no disk here answers to an identity.
var ErrNotFound = services.Sentinel("disk not found", services.ErrNotFound)

// ErrAmbiguous: more than one disk answers to an identity (duplicate
// serials, or one disk seen twice through multipath).
var ErrAmbiguous = errors.New("identity matches more than one disk")

// Match is one configured identity and the disk it resolved to.
type Match struct {
	ID   string
	Disk *Disk // nil: not present
}

// Resolve maps each identity to the one disk that answers to it. A
// missing disk is a Match with a nil Disk (the caller decides whether it
// can do without); an identity matching several disks, or two identities
// matching one disk, is an error, because guessing could format the
// wrong disk.
func (f Finder) Resolve(ids []string) ([]Match, []Disk, error) {
	all, err := f.Scan()
	if err != nil {
		return nil, nil, err
	}
	out := make([]Match, len(ids))
	usedBy := map[string]string{}
	for i, id := range ids {
		out[i].ID = id
		want := Normalize(id)
		var hits []int
		for j := range all {
			if slices.Contains(all[j].IDs, want) {
				hits = append(hits, j)
			}
		}
		switch len(hits) {
		case 0:
			continue
		case 1:
		default:
			var names []string
			for _, j := range hits {
				names = append(names, all[j].Name)
			}
			return nil, all, fmt.Errorf("%s: %w: %s", id, ErrAmbiguous, strings.Join(names, ", "))
		}
		d := &all[hits[0]]
		if prev, ok := usedBy[d.Name]; ok {
			return nil, all, fmt.Errorf("%s and %s are the same disk (%s): %w", prev, id, d.Name, ErrAmbiguous)
		}
		usedBy[d.Name] = id
		out[i].Disk = d
	}
	return out, all, nil
}

// Describe lists disks for an operator message: "vdb (serial:x, by-id/virtio-x); vdc (...)".
func Describe(all []Disk) string {
	if len(all) == 0 {
		return "no disks"
	}
	parts := make([]string, len(all))
	for i, d := range all {
		if len(d.IDs) == 0 {
			parts[i] = d.Name + " (no serial or WWN)"
			continue
		}
		parts[i] = d.String()
	}
	return strings.Join(parts, "; ")
}
