package disks

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"tandem.dev/tandem/image/manifest"
)

// Usage is what on this machine uses a disk now: the reasons it must not
// be offered as a RAID member, or wiped.
type Usage struct {
	// Boot lists the disk's partitions that carry the image's GPT
	// labels, "vda2 (tandem-root-a)": the disk the head boots from. A
	// second disk with them would stop the head from booting (init
	// refuses a label found twice), so the labels identify it.
	Boot []string
	// Mounted lists the disk or its partitions where mounted, "vda3 on
	// /var/lib/tandem" (the running root, the state partition).
	Mounted []string
	// Holders lists the kernel devices built on the disk or its
	// partitions (md127, dm-0), from sysfs.
	Holders []string
	// Arrays lists the md arrays /proc/mdstat names it or a partition
	// in, running or inactive.
	Arrays []string
}

// System reports whether the disk is the system disk: it holds the boot
// image or something mounted.
func (u Usage) System() bool { return len(u.Boot) > 0 || len(u.Mounted) > 0 }

// InUse reports whether anything uses the disk.
func (u Usage) InUse() bool {
	return u.System() || len(u.Holders) > 0 || len(u.Arrays) > 0
}

func (u Usage) String() string {
	var parts []string
	add := func(what string, l []string) {
		if len(l) > 0 {
			parts = append(parts, what+" "+strings.Join(l, ", "))
		}
	}
	add("boot partitions", u.Boot)
	add("mounted:", u.Mounted)
	add("held by", u.Holders)
	add("in md array", u.Arrays)
	if len(parts) == 0 {
		return "unused"
	}
	return strings.Join(parts, "; ")
}

// bootLabels are the GPT partition names of the Tandem disk layout.
var bootLabels = []string{manifest.LabelESP, manifest.LabelRootA, manifest.LabelRootB, manifest.LabelConfig, manifest.LabelState}

// part is a block device of a disk: the whole disk or a partition.
type part struct {
	name, label, dev string // kernel name, GPT name, "major:minor"
	dir              string // its sysfs directory
}

// parts returns the disk itself and its partitions, from sysfs.
func (f Finder) parts(name string) ([]part, error) {
	base := filepath.Join(f.sys(), "block", name)
	out := []part{{name: name, dev: attr(base, "dev"), dir: base}}
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", name, err)
	}
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "uevent"))
		p := part{name: e.Name(), dev: attr(dir, "dev"), dir: dir}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "PARTNAME="); ok {
				p.label = v
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// Usage reads what uses disk d: sysfs for its partitions and holders,
// /proc/self/mountinfo and /proc/mdstat. A mount table it cannot read is
// an error: "not mounted" must be known, not assumed.
func (f Finder) Usage(d Disk) (Usage, error) {
	var u Usage
	ps, err := f.parts(d.Name)
	if err != nil {
		return u, err
	}
	mounts, err := readMountinfo(filepath.Join(f.proc(), "self", "mountinfo"))
	if err != nil {
		return u, err
	}
	arrays, err := readMdstat(filepath.Join(f.proc(), "mdstat"))
	if err != nil {
		return u, err
	}
	for _, p := range ps {
		if p.name != d.Name && slices.Contains(bootLabels, p.label) {
			u.Boot = append(u.Boot, fmt.Sprintf("%s (%s)", p.name, p.label))
		}
		for _, m := range mounts {
			if p.dev != "" && m.dev == p.dev {
				u.Mounted = append(u.Mounted, p.name+" on "+m.target)
			}
		}
		hs, err := os.ReadDir(filepath.Join(p.dir, "holders"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return u, fmt.Errorf("%s holders: %w", p.name, err)
		}
		for _, h := range hs {
			if !slices.Contains(u.Holders, h.Name()) {
				u.Holders = append(u.Holders, h.Name())
			}
		}
		for md, members := range arrays {
			if slices.Contains(members, p.name) && !slices.Contains(u.Arrays, md) {
				u.Arrays = append(u.Arrays, md)
			}
		}
	}
	slices.Sort(u.Arrays)
	return u, nil
}

type mountEntry struct{ dev, target string }

// readMountinfo reads the device numbers and mountpoints of mountinfo(5):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
func readMountinfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 5 {
			out = append(out, mountEntry{dev: fl[2], target: unescapeOctal(fl[4])})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	return out, nil
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mdMemberRE is a member in an mdstat array line: "vdb[0]", "vdc1[2](F)".
var mdMemberRE = regexp.MustCompile(`^([^\[\s]+)\[\d+\]`)

// readMdstat maps each md array to its members' kernel names:
//
//	md127 : active raid10 vde[3] vdc[1] vdb[0]
//	md126 : inactive vdf[0](S)
//
// No /proc/mdstat means no md driver, and so no arrays.
func readMdstat(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("md arrays: %w", err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		md, rest, ok := strings.Cut(sc.Text(), " : ")
		if !ok || !strings.HasPrefix(md, "md") {
			continue
		}
		for _, tok := range strings.Fields(rest) {
			if m := mdMemberRE.FindStringSubmatch(tok); m != nil {
				out[md] = append(out[md], m[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("md arrays: %w", err)
	}
	return out, nil
}
