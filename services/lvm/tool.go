package lvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/tool"
)

// Tool wraps lvm(8): the one place Tandem runs it. Every command goes
// through the lvm binary ("lvm vgs", not the vgs symlink), with
// LVM_SYSTEM_DIR pointing at Tandem's generated lvm.conf, a deadline, and
// stderr turned into the sentinels below. Reports are read as JSON
// (--reportformat json) in bytes (--units b --nosuffix).
type Tool struct {
	Path      string // default "lvm"
	SystemDir string // LVM_SYSTEM_DIR: the directory holding lvm.conf
	Log       *slog.Logger
	// Timeout caps a call when the caller's context has no earlier
	// deadline. Default 1 minute.
	Timeout time.Duration
}

// Sentinels for lvm failures; an *ExecError unwraps to one of them or
// to one of services': services.ErrNotFound (no such VG, LV, PV or device),
// services.ErrInUse (an LV is open, mounted, or the device is held), services.ErrHasData
// (pvcreate found a signature or an existing PV and, with no one to
// answer its question, left the device alone), ErrToolMissing,
// ErrToolFailed.
var (
	// ErrExists: the VG or LV already exists.
	ErrExists = errors.New("already exists")
	// ErrDuplicatePV: one PV is seen on two devices (the md device under
	// DRBD when the filter is wrong). LVM refuses to use it.
	ErrDuplicatePV = errors.New("duplicate PV")
	// ErrFiltered: the device is rejected by the filter (a config bug).
	ErrFiltered = errors.New("device rejected by the LVM filter")
	// ErrMissingPV: the VG is incomplete.
	ErrMissingPV = errors.New("VG is missing a PV")
	// ErrNoSpace: the LV does not fit.
	ErrNoSpace = errors.New("insufficient free space")
	// ErrNoKernelDM: the kernel has no device-mapper.
	ErrNoKernelDM = services.Sentinel("kernel device-mapper unavailable", services.ErrNoKernel)
)

// stderrErrors maps LVM 2.03 messages to sentinels; the first match wins.
// The phrases are from captured runs (lvm 2.03.16) and the tool's format
// strings.
var stderrErrors = tool.Rules{
	{Phrase: "is already in volume group", Err: services.ErrHasData}, // Physical volume '%s' is already in volume group '%s'
	{Phrase: "without -ff", Err: services.ErrHasData},                // Can't initialize physical volume "%s" of volume group "%s" without -ff
	{Phrase: "existing signature left", Err: services.ErrHasData},    // N existing signature(s) left on the device.
	{Phrase: "Aborted wiping", Err: services.ErrHasData},             // Aborted wiping of xfs.
	{Phrase: "appear on duplicate devices", Err: ErrDuplicatePV},     // Cannot activate LVs in VG %s while PVs appear on duplicate devices.
	{Phrase: "with duplicates", Err: ErrDuplicatePV},                 // Cannot use device %s with duplicates.
	{Phrase: "duplicate PV", Err: ErrDuplicatePV},
	{Phrase: "rejected by filter", Err: ErrFiltered}, // Cannot use /dev/x: device is rejected by filter config
	{Phrase: "excluded by a filter", Err: ErrFiltered},
	{Phrase: "already exists", Err: ErrExists},              // A volume group called %s already exists. / Logical Volume "%s" already exists in volume group "%s"
	{Phrase: "open logical volume", Err: services.ErrInUse}, // Can't deactivate volume group "%s" with %d open logical volume(s)
	{Phrase: "in use", Err: services.ErrInUse},              // Logical volume %s in use. / contains a filesystem in use.
	{Phrase: "exclusively", Err: services.ErrInUse},         // Can't open %s exclusively.  Mounted filesystem?
	{Phrase: "is missing PV", Err: ErrMissingPV},            // WARNING: VG %s is missing PV %s
	{Phrase: "Couldn't find device with uuid", Err: ErrMissingPV},
	{Phrase: "partial", Err: ErrMissingPV},                 // Refusing activation of partial LV
	{Phrase: "nsufficient free space", Err: ErrNoSpace},    // Volume group "%s" has insufficient free space / Insufficient free space: ...
	{Phrase: "not found", Err: services.ErrNotFound},       // Volume group "%s" not found / Device %s not found
	{Phrase: "Failed to find", Err: services.ErrNotFound},  // Failed to find logical volume "%s/%s" / physical volume
	{Phrase: "No device found", Err: services.ErrNotFound}, // No device found for %s.
	{Phrase: "Cannot process volume group", Err: services.ErrNotFound},
	{Phrase: "Failure to communicate with kernel device-mapper", Err: ErrNoKernelDM},
	{Phrase: "Required device-mapper target(s) not detected", Err: ErrNoKernelDM},
}

// ExecError is a failed lvm run (tool.Failure, named for this layer).
type ExecError = tool.Failure

func execError(args []string, exit int, stderr string, err error) *ExecError {
	return &ExecError{Tool: "lvm", Args: args, Exit: exit, Stderr: stderr, Err: err}
}

// classify picks the sentinel for lvm's stderr. Error lines decide
// before WARNING lines: lvm warns about any VG it scans (another VG's
// missing PV shows up in every command), and a warning is not the
// failure.
func classify(stderr string) error {
	var errs, warns []string
	for _, l := range strings.Split(stderr, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "WARNING:") {
			warns = append(warns, l)
		} else if l != "" {
			errs = append(errs, l)
		}
	}
	for _, text := range []string{strings.Join(errs, "\n"), strings.Join(warns, "\n")} {
		if r, ok := stderrErrors.Match(text); ok {
			return r.Err
		}
	}
	return services.ErrToolFailed
}

// summary joins lvm's stderr lines into one for console messages,
// leaving out the device-mapper chatter when something more specific
// was said.
func summary(stderr string) string { return tool.Lines(stderr, nil) }

func (t *Tool) log() *slog.Logger {
	if t.Log == nil {
		return slog.Default()
	}
	return t.Log
}

// Run executes `lvm args...` and returns stdout.
func (t *Tool) Run(ctx context.Context, args ...string) (string, error) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	path := t.Path
	if path == "" {
		path = "lvm"
	}
	// stdin is /dev/null: a question ("Wipe it? [y/n]") reads EOF, and lvm
	// answers no.
	r, err := tool.Run(ctx, tool.Cmd{Path: path, Args: args, Name: "lvm", Timeout: timeout,
		Env: append(os.Environ(),
			"LVM_SYSTEM_DIR="+t.SystemDir,
			// PID 1's children inherit descriptors; lvm would warn about each.
			"LVM_SUPPRESS_FD_WARNINGS=1")})
	t.log().Debug("lvm", "args", args, "ms", r.Elapsed.Milliseconds(), "err", err, "stderr", summary(r.Stderr))
	var ee *tool.ExitError
	switch {
	case err == nil:
		return r.Stdout, nil
	case errors.As(err, &ee):
		return r.Stdout, execError(args, r.Exit, r.Stderr, classify(r.Stderr))
	case tool.Missing(err):
		return "", fmt.Errorf("%w: %v", services.ErrToolMissing, err)
	}
	return "", err
}

// report is lvm's JSON report: {"report": [{"vg": [{...}]}]}.
type report struct {
	Report []map[string][]map[string]string `json:"report"`
}

func parseReport(out, kind string) ([]map[string]string, error) {
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("lvm %ss report: %w", kind, err)
	}
	var rows []map[string]string
	for _, sec := range r.Report {
		rows = append(rows, sec[kind]...)
	}
	return rows, nil
}

// reportArgs are common to every report command.
var reportArgs = []string{"--reportformat", "json", "--units", "b", "--nosuffix"}

// VG is one row of vgs.
type VG struct {
	Name       string
	UUID       string
	Attr       string
	PVCount    string
	MissingPVs string
	Partial    string
	LVCount    string
	Size       string
	Free       string
}

// Complete reports whether every PV of the VG is present.
func (v VG) Complete() bool {
	return (v.MissingPVs == "0" || v.MissingPVs == "") && v.Partial == "" && (len(v.Attr) < 4 || v.Attr[3] != 'p')
}

// VG reports one volume group. services.ErrNotFound if it does not exist.
func (t *Tool) VG(ctx context.Context, name string) (VG, error) {
	args := append([]string{"vgs"}, reportArgs...)
	args = append(args, "-o", "vg_name,vg_uuid,vg_attr,pv_count,vg_missing_pv_count,vg_partial,lv_count,vg_size,vg_free", "--", name)
	out, err := t.Run(ctx, args...)
	if err != nil {
		return VG{}, err
	}
	rows, err := parseReport(out, "vg")
	if err != nil {
		return VG{}, err
	}
	for _, r := range rows {
		if r["vg_name"] == name {
			return VG{Name: r["vg_name"], UUID: r["vg_uuid"], Attr: r["vg_attr"], PVCount: r["pv_count"],
				MissingPVs: r["vg_missing_pv_count"], Partial: r["vg_partial"], LVCount: r["lv_count"],
				Size: r["vg_size"], Free: r["vg_free"]}, nil
		}
	}
	return VG{}, execError(args, 0, fmt.Sprintf("Volume group %q not found in the report", name), services.ErrNotFound)
}

// LV is one row of lvs.
type LV struct {
	Name   string
	VG     string
	UUID   string
	Attr   string // e.g. "-wi-a-----"
	Active string // "active" or ""
	Size   string
	Path   string // /dev/vg/lv
	DMPath string // /dev/mapper/vg-lv
	Open   string // lv_device_open: "open" or ""
}

// IsActive reports whether the LV is active (attr state 'a').
func (l LV) IsActive() bool {
	return l.Active == "active" || len(l.Attr) >= 5 && l.Attr[4] == 'a'
}

// Suspended reports whether device-mapper holds the LV's I/O (attr
// state 's', or 'S' for a snapshot). lv_active still says "active".
func (l LV) Suspended() bool {
	return len(l.Attr) >= 5 && (l.Attr[4] == 's' || l.Attr[4] == 'S')
}

// Healthy is false when lvs flags the LV partial (a PV missing) or
// needing a refresh (attr health character).
func (l LV) Healthy() bool {
	if len(l.Attr) < 9 {
		return true
	}
	switch l.Attr[8] {
	case 'p', 'r', 'X':
		return false
	}
	return true
}

// LVs reports the LVs of vg. services.ErrNotFound if the VG does not exist.
func (t *Tool) LVs(ctx context.Context, vg string) ([]LV, error) {
	args := append([]string{"lvs"}, reportArgs...)
	args = append(args, "-o", "lv_name,vg_name,lv_uuid,lv_attr,lv_active,lv_size,lv_path,lv_dm_path,lv_device_open", "--", vg)
	out, err := t.Run(ctx, args...)
	if err != nil {
		return nil, err
	}
	rows, err := parseReport(out, "lv")
	if err != nil {
		return nil, err
	}
	lvs := make([]LV, 0, len(rows))
	for _, r := range rows {
		lvs = append(lvs, LV{Name: r["lv_name"], VG: r["vg_name"], UUID: r["lv_uuid"], Attr: r["lv_attr"], Active: r["lv_active"],
			Size: r["lv_size"], Path: r["lv_path"], DMPath: r["lv_dm_path"], Open: r["lv_device_open"]})
	}
	return lvs, nil
}

// PV is one row of pvs.
type PV struct {
	Name, VG, UUID string
}

// PV reports the physical volume on dev. services.ErrNotFound if dev is not one.
func (t *Tool) PV(ctx context.Context, dev string) (PV, error) {
	args := append([]string{"pvs"}, reportArgs...)
	args = append(args, "-o", "pv_name,vg_name,pv_uuid", "--", dev)
	out, err := t.Run(ctx, args...)
	if err != nil {
		return PV{}, err
	}
	rows, err := parseReport(out, "pv")
	if err != nil {
		return PV{}, err
	}
	if len(rows) == 0 {
		return PV{}, execError(args, 0, "no PV in the report", services.ErrNotFound)
	}
	return PV{Name: rows[0]["pv_name"], VG: rows[0]["vg_name"], UUID: rows[0]["pv_uuid"]}, nil
}

// PVCreate labels dev as a PV. No --yes: if pvcreate finds anything on
// the device it asks, reads EOF and stops.
func (t *Tool) PVCreate(ctx context.Context, dev string) error {
	_, err := t.Run(ctx, "pvcreate", "--", dev)
	return err
}

// VGCreate makes a VG on one PV. The VG is marked never to
// auto-activate, in case an lvm.conf without Tandem's settings ever
// scans it.
func (t *Tool) VGCreate(ctx context.Context, vg, pv string) error {
	_, err := t.Run(ctx, "vgcreate", "--setautoactivation", "n", "--", vg, pv)
	return err
}

// LVCreateArgs is the lvcreate command line: size "100%FREE" (or any
// %FREE/%VG) is in extents (-l), anything else an absolute size (-L).
func LVCreateArgs(vg, lv, size string) []string {
	args := []string{"lvcreate", "--name", lv}
	if strings.Contains(size, "%") {
		args = append(args, "--extents", size)
	} else {
		args = append(args, "--size", size)
	}
	// The device was blank: nothing to wipe, and no question to ask.
	// Zeroing the first 4 KiB keeps a stale signature from appearing.
	return append(args, "--wipesignatures", "n", "--zero", "y", "--", vg)
}

// LVCreate makes (and activates) the LV.
func (t *Tool) LVCreate(ctx context.Context, vg, lv, size string) error {
	_, err := t.Run(ctx, LVCreateArgs(vg, lv, size)...)
	return err
}

// VGChange activates (every LV of) vg, or deactivates it.
func (t *Tool) VGChange(ctx context.Context, vg string, activate bool) error {
	a := "n"
	if activate {
		a = "y"
	}
	_, err := t.Run(ctx, "vgchange", "--activate", a, "--", vg)
	return err
}

// ActivateLV activates one LV of vg (lvchange --activate y), leaving the
// VG's other LVs alone. lvchange refuses an LV with a missing PV.
func (t *Tool) ActivateLV(ctx context.Context, vg, lv string) error {
	_, err := t.Run(ctx, "lvchange", "--activate", "y", "--", vg+"/"+lv)
	return err
}

// Refresh reloads an active LV's table: a suspend and a resume under the
// VG lock, which also resumes a suspended LV.
func (t *Tool) Refresh(ctx context.Context, vg, lv string) error {
	_, err := t.Run(ctx, "lvchange", "--refresh", "--", vg+"/"+lv)
	return err
}
