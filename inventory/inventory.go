// Package inventory reads a head's hardware for the first-boot wizard:
// its physical NICs (link, speed, addresses), its disks with what each
// holds, and the default gateway. PID 1 hands (*Reader).Read to the
// wizard as its wizard.Inventory.
//
// It lives apart from both: the wizard may not import the service layers
// (internal/layout), the service layers sit below the wizard's types,
// and PID 1 only wires it up. Disks come from services/disks (the same
// scan, serials and blank test the RAID layer uses), MACs from
// services/network.
//
// Nothing here writes anything.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/wizard"
)

// The wizard refuses a peer's inventory past these (wizard.Hardware's
// check); a head that has more keeps the first ones and says so.
const (
	maxNICs  = 64
	maxDisks = 256
	maxAddrs = 16
	maxField = 128
)

// Options are the paths and the log; the zero value is the real system.
type Options struct {
	SysRoot  string // "/sys": class/net and block
	DevDir   string // "/dev"
	ProcRoot string // "/proc": the mount table and mdstat
	// ProbeTimeout bounds the read of one disk's ends (default 5 s): a
	// dying disk must not hold up the wizard.
	ProbeTimeout time.Duration
	Log          *slog.Logger

	// Test seams: nil reads netlink, and disks.ProbePath.
	net   func() (netState, error)
	probe func(path string) (disks.Content, error)
}

// Reader reads the inventory; it remembers disks whose read is still
// blocked in the kernel, so that each Read does not add one more.
type Reader struct {
	opts    Options
	finder  disks.Finder
	mu      sync.Mutex
	probing map[string]time.Time // device path -> since when its read blocks
}

// New returns a Reader; it touches nothing.
func New(opts Options) *Reader {
	if opts.SysRoot == "" {
		opts.SysRoot = "/sys"
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.net == nil {
		opts.net = readNet
	}
	if opts.probe == nil {
		opts.probe = disks.ProbePath
	}
	return &Reader{
		opts:    opts,
		finder:  disks.Finder{SysRoot: opts.SysRoot, DevDir: opts.DevDir, ProcRoot: opts.ProcRoot},
		probing: map[string]time.Time{},
	}
}

var _ wizard.Inventory = (*Reader)(nil).Read

// Read returns the head's hardware now.
func (r *Reader) Read(ctx context.Context) (wizard.Hardware, error) {
	var hw wizard.Hardware
	ns, err := r.opts.net()
	if err != nil {
		return hw, fmt.Errorf("inventory: %w", err)
	}
	if hw.NICs, err = r.nics(ns); err != nil {
		return hw, fmt.Errorf("inventory: %w", err)
	}
	hw.Gateway = ns.gateway
	if hw.Disks, err = r.disks(ctx); err != nil {
		return hw, fmt.Errorf("inventory: %w", err)
	}
	return hw, nil
}

// nics lists the physical NICs: those with a device behind them in
// sysfs. Loopback, bonds, bridges, VLANs, veths and tunnels have none.
func (r *Reader) nics(ns netState) ([]wizard.NIC, error) {
	dir := filepath.Join(r.opts.SysRoot, "class", "net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("NICs: %w", err)
	}
	var out []wizard.NIC
	for _, e := range ents {
		base := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(base, "device")); err != nil {
			continue
		}
		if len(out) == maxNICs {
			r.opts.Log.Warn("inventory: too many NICs, the rest not offered", "max", maxNICs, "skipped", e.Name())
			continue
		}
		n := wizard.NIC{Name: e.Name(), MAC: strings.ToLower(attr(base, "address"))}
		// carrier and speed fail to read (EINVAL) on a link that is down.
		n.Link = attr(base, "carrier") == "1"
		if s, err := strconv.Atoi(attr(base, "speed")); err == nil && s > 0 {
			n.SpeedMbps = s
		}
		if l, ok := ns.links[n.Name]; ok {
			if l.mac != "" {
				n.MAC = l.mac
			}
			n.Addrs = l.addrs[:min(len(l.addrs), maxAddrs)]
		}
		n.Wizard = ns.gatewayLink != "" && n.Name == ns.gatewayLink
		out = append(out, n)
	}
	return out, nil
}

// disks lists every whole disk with a usable serial, probes each (all at
// once, each bounded by ProbeTimeout) and marks the system disk.
func (r *Reader) disks(ctx context.Context) ([]wizard.Disk, error) {
	all, err := r.finder.Scan()
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, d := range all {
		count[d.Serial]++
	}
	var keep []disks.Disk
	for _, d := range all {
		// The wizard names disks "serial:X" in the site config and in
		// the operator's "destroy data on" line: a disk without a
		// serial, or with one that cannot be written so, is not offered.
		switch {
		case d.Size == 0:
			continue // a card reader or drive with no medium
		case !goodSerial(d.Serial):
			r.opts.Log.Warn("inventory: disk not offered: no serial number the site config can name it by", "disk", d.Name, "serial", d.Serial)
			continue
		case count[d.Serial] > 1:
			r.opts.Log.Warn("inventory: disk not offered: another disk has its serial number", "disk", d.Name, "serial", d.Serial)
			continue
		case len(keep) == maxDisks:
			r.opts.Log.Warn("inventory: too many disks, the rest not offered", "max", maxDisks, "skipped", d.Name)
			continue
		}
		keep = append(keep, d)
	}
	out := make([]wizard.Disk, len(keep))
	var wg sync.WaitGroup
	for i, d := range keep {
		u, err := r.finder.Usage(d)
		if err != nil {
			return nil, err
		}
		out[i] = wizard.Disk{Model: clip(d.Model), Serial: d.Serial, SizeBytes: uint64(d.Size), System: u.System()}
		wg.Go(func() {
			out[i].Signature = r.signature(ctx, d.Path)
			if out[i].Signature == "" && u.InUse() {
				// Nothing on the disk's ends, but the kernel has it
				// (device-mapper, an array): not blank to offer.
				out[i].Signature = clip("in use: " + u.String())
			}
		})
	}
	wg.Wait()
	return out, nil
}

// signature probes a disk: "" when it is blank as the RAID layer defines
// it, else what it holds. A disk that does not answer in time is not
// blank either: it says so.
func (r *Reader) signature(ctx context.Context, path string) string {
	r.mu.Lock()
	if since, ok := r.probing[path]; ok {
		r.mu.Unlock()
		return fmt.Sprintf("unreadable: a read has been blocked for %s", time.Since(since).Round(time.Second))
	}
	r.probing[path] = time.Now()
	r.mu.Unlock()
	type result struct {
		c   disks.Content
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := r.opts.probe(path)
		r.mu.Lock()
		delete(r.probing, path)
		r.mu.Unlock()
		done <- result{c, err}
	}()
	ctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
	defer cancel()
	select {
	case res := <-done:
		switch {
		case res.err != nil:
			var pe *os.PathError
			if errors.As(res.err, &pe) {
				res.err = pe.Err
			}
			return clip("unreadable: " + res.err.Error())
		case res.c.Blank:
			return ""
		case res.c.Sig != "":
			return res.c.Sig
		}
		return clip(res.c.What)
	case <-ctx.Done():
		return fmt.Sprintf("unreadable: no answer in %s", r.opts.ProbeTimeout)
	}
}

// goodSerial: a serial the site config (serial:X) and the wizard's
// "destroy data on ... disk serial:X" line can carry.
func goodSerial(s string) bool {
	if s == "" || len(s) > maxField {
		return false
	}
	for _, c := range s {
		if !unicode.IsPrint(c) || unicode.IsSpace(c) {
			return false
		}
	}
	return true
}

// clip bounds a field the peer's wizard checks, and drops what it would
// refuse.
func clip(s string) string {
	s = strings.Map(func(c rune) rune {
		if unicode.IsPrint(c) {
			return c
		}
		return -1
	}, s)
	if len(s) > maxField {
		s = strings.ToValidUTF8(s[:maxField], "")
	}
	return s
}

// attr reads a sysfs attribute, trimmed; "" if absent or unreadable.
func attr(base, rel string) string {
	b, err := os.ReadFile(filepath.Join(base, rel))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
