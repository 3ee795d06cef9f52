// Package lvm is the LVM layer: one volume group with one logical volume
// on the DRBD device, on the active head only.
//
// # Config
//
// LVM reads a config Tandem generates at every start,
// /run/tandem/lvm/lvm.conf (LVM_SYSTEM_DIR), and nothing else:
//
//   - filter and global_filter accept /dev/drbd* only. The md array under
//     DRBD carries the same PV label; LVM must never see it, or it takes
//     /dev/drbd0 for a duplicate and refuses it.
//   - udev_sync=0 udev_rules=0 obtain_device_list_from_udev=0: there is
//     no udev in the image; libdevmapper makes /dev/mapper nodes itself.
//   - auto_activation_volume_list = []: nothing activates by itself, so
//     the standby never opens the VG (its DRBD is secondary anyway), and
//     the VG is also created with --setautoactivation n.
//   - locking and backup directories under /run/tandem/lvm.
//
// # Start
//
// Start writes the config and first activates the LV alone (lvchange
// --activate y); if that works and the device node is there, it is done.
// Otherwise it looks closer:
//   - the VG exists: activate it (vgchange --activate y); if it has no LV
//     at all (a first activation interrupted after vgcreate), create the
//     LV; a VG with other LVs but not ours is refused;
//   - the DRBD device is a PV of no VG (interrupted after pvcreate):
//     vgcreate and lvcreate;
//   - the DRBD device is blank (package disks: no signature, first and
//     last MiB zero) and storage.raid.create_if_blank is set (the site
//     config's consent to build the whole stack on blank disks): pvcreate,
//     vgcreate, lvcreate;
//   - anything else is Refused, naming what the device holds.
//
// pvcreate and lvcreate never get --yes: if LVM finds anything it asks,
// reads EOF from /dev/null and stops.
//
// # Stop and Monitor
//
// Stop deactivates the VG (vgchange --activate n); an open LV (XFS still
// mounted) is a Failed error that says so. Monitor checks that the LV is
// active and healthy and the VG complete, from lvs and vgs JSON reports.
// A suspended LV (device-mapper holds its I/O, as a killed lvm command
// leaves it) blocks the clients' writes and would block the restart's
// unmount too, so Monitor resumes it (lvchange --refresh) and reports
// Failed: the layers above are restarted on a device that answers.
package lvm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/site"
)

// Name is the layer's name in the service graph.
const Name = "lvm"

// ErrSuspended: the LV's device-mapper table is suspended; I/O to it waits.
var ErrSuspended = errors.New("suspended")

// Config is the volume, as the site config describes it.
type Config struct {
	VG, LV string
	Size   string // lvcreate --size, e.g. "100%FREE"
	// PV is the device the VG lives on (the DRBD device).
	PV string
	// CreateIfBlank is storage.raid.create_if_blank: the site's consent
	// to build the whole stack on blank disks.
	CreateIfBlank bool
}

// FromSite builds the Config. pv is the device below (the DRBD device);
// "" means /dev/drbd<storage.drbd.minor>. The volume is the same on both
// heads: node is for the one constructor shape only.
func FromSite(sc *site.Config, node, pv string) (Config, error) {
	if sc == nil {
		return Config{}, configErr("no site config")
	}
	l := sc.Storage.LVM
	c := Config{
		VG: cmp.Or(l.VG, site.DefaultVG), LV: cmp.Or(l.LV, site.DefaultLV), Size: cmp.Or(l.Size, site.DefaultLVSize),
		PV:            cmp.Or(pv, fmt.Sprintf("/dev/drbd%d", sc.Storage.DRBD.Minor)),
		CreateIfBlank: sc.Storage.RAID.CreateIfBlank,
	}
	return c, c.check()
}

func (c Config) check() error {
	for _, n := range []string{c.VG, c.LV} {
		if n == "" || strings.HasPrefix(n, "-") || strings.ContainsAny(n, "/ \t") {
			return configErr("%q is not a valid LVM name", n)
		}
	}
	if c.PV == "" || c.Size == "" {
		return configErr("no PV (%q) or size (%q)", c.PV, c.Size)
	}
	return nil
}

// Options are the paths and tools; the zero value is the real system.
type Options struct {
	// SystemDir is LVM_SYSTEM_DIR; default DefaultSystemDir.
	SystemDir string
	// Lvm is the lvm binary ("lvm" from PATH by default).
	Lvm string
	// ToolTimeout caps each lvm call (default 1 minute).
	ToolTimeout time.Duration
	// SysRoot ("/sys") and DevDir ("/dev") locate device-mapper devices.
	SysRoot, DevDir string
	Log             *slog.Logger
}

// Volume is the LVM resource.
type Volume struct {
	vg, lv, size  string
	pv            string
	createIfBlank bool
	dir           string
	sysRoot       string
	devDir        string
	lvm           *Tool
	log           *slog.Logger
	mu            sync.Mutex
}

var (
	_ services.Resource = (*Volume)(nil)
	_ services.Warmer   = (*Volume)(nil)
)

// New builds the resource; it touches nothing.
func New(cfg Config, opts Options) (*Volume, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resource", Name)
	v := &Volume{
		vg: cfg.VG, lv: cfg.LV, size: cfg.Size,
		pv:            cfg.PV,
		createIfBlank: cfg.CreateIfBlank,
		dir:           cmp.Or(opts.SystemDir, DefaultSystemDir),
		sysRoot:       cmp.Or(opts.SysRoot, "/sys"),
		devDir:        cmp.Or(opts.DevDir, "/dev"),
		log:           log,
	}
	v.lvm = &Tool{Path: opts.Lvm, SystemDir: v.dir, Log: log, Timeout: opts.ToolTimeout}
	return v, nil
}

// Warm runs lvm once (version) on the standby, which reads nothing from
// the PV: a takeover's lvchange then starts from memory.
func (v *Volume) Warm(ctx context.Context) error {
	if err := WriteConfig(v.dir); err != nil {
		return err
	}
	_, err := v.lvm.Run(ctx, "version")
	return err
}

// Name is the resource's name in the graph.
func (v *Volume) Name() string { return Name }

// PV is the device the VG lives on (the DRBD device).
func (v *Volume) PV() string { return v.pv }

// ConfigPath is the generated lvm.conf.
func (v *Volume) ConfigPath() string { return filepath.Join(v.dir, "lvm.conf") }

// DMName is an LV's device-mapper name: VG and LV joined by '-', with
// each '-' inside them doubled ("my-vg", "data" -> "my--vg-data").
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// DMName is the LV's device-mapper name.
func (v *Volume) DMName() string { return DMName(v.vg, v.lv) }

// Device is the LV's device path for the layer above (XFS):
// /dev/mapper/<vg>-<lv>, the node libdevmapper itself creates.
func (v *Volume) Device() string { return filepath.Join(v.devDir, "mapper", v.DMName()) }

// The Kind of every error this layer returns is set here: given by the
// caller that knows, or read off lvm's sentinel by kindOf.

func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func (v *Volume) errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

func configErr(format string, a ...any) error {
	return fail("new", services.Config, fmt.Errorf(format, a...))
}

// toolErr classifies an lvm failure.
func (v *Volume) toolErr(op string, err error) error { return fail(op, kindOf(err), err) }

func kindOf(err error) services.Kind {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return services.Timeout
	case errors.Is(err, services.ErrHasData):
		return services.Refused
	case errors.Is(err, ErrFiltered), errors.Is(err, ErrNoSpace):
		return services.Config
	}
	return services.Failed
}

// Start activates the VG, creating PV, VG and LV on a blank DRBD device
// the first time.
func (v *Volume) Start(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := WriteConfig(v.dir); err != nil {
		return v.errorf("start", services.Failed, "write %s: %v", v.ConfigPath(), err)
	}
	// Fast path, one lvm run: a failover pays for every run (~0.5 s under
	// TCG). lvchange refuses an LV whose PV is missing, and Monitor checks
	// the VG and LV attributes right after start. The careful path below
	// still handles first activation and every refusal.
	if err := v.lvm.ActivateLV(ctx, v.vg, v.lv); err != nil {
		v.log.Debug("fast activation failed; taking the careful path", "vg", v.vg, "lv", v.lv, "err", err)
	} else if !v.hasDevice() {
		v.log.Debug("fast activation left no device node; taking the careful path", "vg", v.vg, "lv", v.lv, "device", v.Device())
	} else {
		v.log.Info("activated existing logical volume (not created; fast path)", "vg", v.vg, "lv", v.lv, "device", v.Device())
		return nil
	}
	vg, err := v.lvm.VG(ctx, v.vg)
	switch {
	case err == nil:
		return v.activate(ctx, vg)
	case !errors.Is(err, services.ErrNotFound):
		return v.toolErr("start", err)
	}

	// No VG: first activation, or a device that holds something else.
	pv, err := v.lvm.PV(ctx, v.pv)
	switch {
	case err == nil && pv.VG != "":
		return v.errorf("start", services.Refused, "%s is a PV of volume group %q, not %q (storage.lvm.vg)", v.pv, pv.VG, v.vg)
	case err == nil:
		if !v.createIfBlank {
			return v.errorf("start", services.Refused, "%s is a PV of no volume group (an interrupted first activation?) and storage.raid.create_if_blank is false", v.pv)
		}
		v.log.Warn("PV without a VG: finishing an interrupted first activation", "pv", v.pv)
		return v.create(ctx, false)
	case errors.Is(err, ErrFiltered):
		return v.toolErr("start", err)
	case !errors.Is(err, services.ErrNotFound):
		return v.toolErr("start", err)
	}
	c, err := disks.ProbePath(v.pv)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return v.errorf("start", services.Missing, "%s: %v (is DRBD up and primary?)", v.pv, err)
	case errors.Is(err, unix.EMEDIUMTYPE):
		return v.errorf("start", services.Failed, "%v (DRBD is secondary: LVM runs after promotion)", err)
	case err != nil:
		return v.errorf("start", services.Failed, "%v", err)
	}
	if !c.Blank {
		return v.errorf("start", services.Refused, "will not create volume group %q: %s holds %s", v.vg, v.pv, c)
	}
	if !v.createIfBlank {
		return v.errorf("start", services.Refused, "%s is blank and storage.raid.create_if_blank is false: set it to create volume group %q", v.pv, v.vg)
	}
	return v.create(ctx, true)
}

// create makes the PV (if needed), the VG and the LV.
func (v *Volume) create(ctx context.Context, pvcreate bool) error {
	v.log.Warn("creating the volume group on a blank device (first activation)", "pv", v.pv, "vg", v.vg, "lv", v.lv, "size", v.size)
	if pvcreate {
		if err := v.lvm.PVCreate(ctx, v.pv); err != nil {
			return v.toolErr("start", err)
		}
	}
	if err := v.lvm.VGCreate(ctx, v.vg, v.pv); err != nil {
		return v.toolErr("start", err)
	}
	if err := v.lvm.LVCreate(ctx, v.vg, v.lv, v.size); err != nil {
		return v.toolErr("start", err)
	}
	vg, err := v.lvm.VG(ctx, v.vg)
	if err != nil {
		return v.toolErr("start", err)
	}
	v.log.Info("created volume group", "vg", v.vg, "vg_uuid", vg.UUID, "lv", v.lv, "device", v.Device())
	return v.checkActive(ctx, "start")
}

// activate brings up an existing VG.
func (v *Volume) activate(ctx context.Context, vg VG) error {
	lvs, err := v.lvm.LVs(ctx, v.vg)
	if err != nil {
		return v.toolErr("start", err)
	}
	if !hasLV(lvs, v.lv) {
		if len(lvs) > 0 {
			var names []string
			for _, l := range lvs {
				names = append(names, l.Name)
			}
			return v.errorf("start", services.Refused, "volume group %q has logical volumes %s but not %q (storage.lvm.lv)", v.vg, strings.Join(names, ", "), v.lv)
		}
		if !v.createIfBlank {
			return v.errorf("start", services.Refused, "volume group %q has no logical volume and storage.raid.create_if_blank is false", v.vg)
		}
		v.log.Warn("VG without an LV: finishing an interrupted first activation", "vg", v.vg)
		if err := v.lvm.LVCreate(ctx, v.vg, v.lv, v.size); err != nil {
			return v.toolErr("start", err)
		}
	}
	if !vg.Complete() {
		return v.errorf("start", services.Failed, "volume group %q is incomplete (%s of %s PVs missing, attr %s)", v.vg, vg.MissingPVs, vg.PVCount, vg.Attr)
	}
	if err := v.lvm.VGChange(ctx, v.vg, true); err != nil {
		return v.toolErr("start", err)
	}
	v.log.Info("activated existing volume group (not created)", "vg", v.vg, "vg_uuid", vg.UUID, "lv", v.lv, "device", v.Device())
	// The device node is proof enough here: each lvm run costs a
	// failover hundreds of milliseconds, and Monitor checks the LV's
	// attributes right after. Without the node, say precisely why.
	if v.hasDevice() {
		return nil
	}
	return v.checkActive(ctx, "start")
}

// hasDevice reports whether the LV's device node exists.
func (v *Volume) hasDevice() bool {
	_, err := os.Stat(v.Device())
	return err == nil
}

func hasLV(lvs []LV, name string) bool {
	for _, l := range lvs {
		if l.Name == name {
			return true
		}
	}
	return false
}

// checkActive is Monitor's test: the LV active and healthy, the VG
// complete.
func (v *Volume) checkActive(ctx context.Context, op string) error {
	vg, err := v.lvm.VG(ctx, v.vg)
	if err != nil {
		return v.toolErr(op, err)
	}
	if !vg.Complete() {
		return v.errorf(op, services.Failed, "volume group %q is incomplete (%s of %s PVs missing, attr %s)", v.vg, vg.MissingPVs, vg.PVCount, vg.Attr)
	}
	lvs, err := v.lvm.LVs(ctx, v.vg)
	if err != nil {
		return v.toolErr(op, err)
	}
	for _, l := range lvs {
		if l.Name != v.lv {
			continue
		}
		switch {
		case l.Suspended():
			return v.errorf(op, services.Failed, "logical volume %s/%s is %w: I/O to it blocks (attr %s)", v.vg, v.lv, ErrSuspended, l.Attr)
		case !l.IsActive():
			return v.errorf(op, services.Failed, "logical volume %s/%s is not active (attr %s)", v.vg, v.lv, l.Attr)
		case !l.Healthy():
			return v.errorf(op, services.Failed, "logical volume %s/%s is unhealthy (attr %s)", v.vg, v.lv, l.Attr)
		}
		return nil
	}
	return v.errorf(op, services.Failed, "logical volume %s/%s not found", v.vg, v.lv)
}

// Stop deactivates the VG.
func (v *Volume) Stop(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := WriteConfig(v.dir); err != nil {
		return v.errorf("stop", services.Failed, "write %s: %v", v.ConfigPath(), err)
	}
	err := v.lvm.VGChange(ctx, v.vg, false)
	switch {
	case err == nil:
		v.log.Info("volume group deactivated", "vg", v.vg)
		return nil
	case errors.Is(err, services.ErrInUse):
		return v.errorf("stop", services.Failed, "%s is still open (XFS still mounted?): %w", v.Device(), err)
	case errors.Is(err, services.ErrNotFound):
		// LVM cannot see the VG (DRBD already secondary or down). That
		// is stopped, unless a mapping of ours is still in the kernel.
		if left := v.mappings(); len(left) > 0 {
			return v.errorf("stop", services.Failed, "volume group %q is not visible but device-mapper still has %s", v.vg, strings.Join(left, ", "))
		}
		return nil
	}
	return v.toolErr("stop", err)
}

// mappings lists device-mapper devices of this VG, from
// /sys/block/dm-*/dm/name.
func (v *Volume) mappings() []string {
	prefix := strings.ReplaceAll(v.vg, "-", "--") + "-"
	ents, _ := filepath.Glob(filepath.Join(v.sysRoot, "block", "dm-*", "dm", "name"))
	var out []string
	for _, p := range ents {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(b))
		// "vg-lv", and not "vg--x-lv" (the VG "vg-x").
		if rest, ok := strings.CutPrefix(name, prefix); ok && !strings.HasPrefix(rest, "-") {
			out = append(out, name)
		}
	}
	return out
}

// Monitor reports Failed unless the LV is active and healthy and the VG
// complete.
// It takes no lock: a probe must answer within its own deadline even
// while a Start is busy.
func (v *Volume) Monitor(ctx context.Context) error {
	// Never run lvm without Tandem's filter: it would scan the md array
	// too.
	if err := WriteConfig(v.dir); err != nil {
		return v.errorf("monitor", services.Failed, "write %s: %v", v.ConfigPath(), err)
	}
	err := v.checkActive(ctx, "monitor")
	if !errors.Is(err, ErrSuspended) {
		return err
	}
	if rerr := v.lvm.Refresh(ctx, v.vg, v.lv); rerr != nil {
		return v.errorf("monitor", services.KindOf(v.toolErr("monitor", rerr)), "%v; resuming it failed: %v", err, rerr)
	}
	v.log.Warn("logical volume was suspended (I/O blocked); resumed it", "vg", v.vg, "lv", v.lv)
	return v.errorf("monitor", services.Failed, "logical volume %s/%s was %w (I/O blocked); resumed", v.vg, v.lv, ErrSuspended)
}
