package lvm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
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

// Sentinels for lvm failures; an *ExecError unwraps to one of them.
var (
	// ErrNotFound: no such VG, LV, PV or device.
	ErrNotFound = errors.New("not found")
	// ErrExists: the VG or LV already exists.
	ErrExists = errors.New("already exists")
	// ErrDuplicatePV: one PV is seen on two devices (the md device under
	// DRBD when the filter is wrong). LVM refuses to use it.
	ErrDuplicatePV = errors.New("duplicate PV")
	// ErrFiltered: the device is rejected by the filter (a config bug).
	ErrFiltered = errors.New("device rejected by the LVM filter")
	// ErrInUse: an LV is open (mounted) or the device is held.
	ErrInUse = errors.New("in use")
	// ErrHasData: pvcreate found a signature or an existing PV and, with
	// no one to answer its question, left the device alone.
	ErrHasData = errors.New("device holds data")
	// ErrMissingPV: the VG is incomplete.
	ErrMissingPV = errors.New("VG is missing a PV")
	// ErrNoSpace: the LV does not fit.
	ErrNoSpace = errors.New("insufficient free space")
	// ErrNoKernelDM: the kernel has no device-mapper.
	ErrNoKernelDM = errors.New("kernel device-mapper unavailable")
	// ErrNoTool: the lvm binary is missing.
	ErrNoTool = errors.New("lvm not installed")
	// ErrFailed: any other failure.
	ErrFailed = errors.New("lvm failed")
)

// stderrErrors maps LVM 2.03 messages to sentinels; the first match wins.
// The phrases are from captured runs (lvm 2.03.16) and the tool's format
// strings.
var stderrErrors = []struct {
	phrase string
	err    error
}{
	{"is already in volume group", ErrHasData},      // Physical volume '%s' is already in volume group '%s'
	{"without -ff", ErrHasData},                     // Can't initialize physical volume "%s" of volume group "%s" without -ff
	{"existing signature left", ErrHasData},         // N existing signature(s) left on the device.
	{"Aborted wiping", ErrHasData},                  // Aborted wiping of xfs.
	{"appear on duplicate devices", ErrDuplicatePV}, // Cannot activate LVs in VG %s while PVs appear on duplicate devices.
	{"with duplicates", ErrDuplicatePV},             // Cannot use device %s with duplicates.
	{"duplicate PV", ErrDuplicatePV},
	{"rejected by filter", ErrFiltered}, // Cannot use /dev/x: device is rejected by filter config
	{"excluded by a filter", ErrFiltered},
	{"already exists", ErrExists},     // A volume group called %s already exists. / Logical Volume "%s" already exists in volume group "%s"
	{"open logical volume", ErrInUse}, // Can't deactivate volume group "%s" with %d open logical volume(s)
	{"in use", ErrInUse},              // Logical volume %s in use. / contains a filesystem in use.
	{"exclusively", ErrInUse},         // Can't open %s exclusively.  Mounted filesystem?
	{"is missing PV", ErrMissingPV},   // WARNING: VG %s is missing PV %s
	{"Couldn't find device with uuid", ErrMissingPV},
	{"partial", ErrMissingPV},              // Refusing activation of partial LV
	{"nsufficient free space", ErrNoSpace}, // Volume group "%s" has insufficient free space / Insufficient free space: ...
	{"not found", ErrNotFound},             // Volume group "%s" not found / Device %s not found
	{"Failed to find", ErrNotFound},        // Failed to find logical volume "%s/%s" / physical volume
	{"No device found", ErrNotFound},       // No device found for %s.
	{"Cannot process volume group", ErrNotFound},
	{"Failure to communicate with kernel device-mapper", ErrNoKernelDM},
	{"Required device-mapper target(s) not detected", ErrNoKernelDM},
}

// ExecError is a failed lvm run.
type ExecError struct {
	Args   []string
	Exit   int
	Stderr string
	Err    error // a sentinel
}

func (e *ExecError) Error() string {
	msg := summary(e.Stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Exit)
	}
	return fmt.Sprintf("lvm %s: %v: %s", strings.Join(e.Args, " "), e.Err, msg)
}

func (e *ExecError) Unwrap() error { return e.Err }

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
		for _, m := range stderrErrors {
			if strings.Contains(text, m.phrase) {
				return m.err
			}
		}
	}
	return ErrFailed
}

// summary joins lvm's stderr lines into one for console messages,
// leaving out the device-mapper chatter when something more specific
// was said.
func summary(stderr string) string {
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	path := t.Path
	if path == "" {
		path = "lvm"
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(),
		"LVM_SYSTEM_DIR="+t.SystemDir,
		// PID 1's children inherit descriptors; lvm would warn about each.
		"LVM_SUPPRESS_FD_WARNINGS=1")
	// stdin is /dev/null: a question ("Wipe it? [y/n]") reads EOF, and lvm
	// answers no.
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	t.log().Debug("lvm", "args", args, "ms", time.Since(start).Milliseconds(), "err", err, "stderr", summary(stderr.String()))
	if err == nil {
		return stdout.String(), nil
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("lvm %s: no answer in %s: %w", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), ctx.Err())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %v", ErrNoTool, err)
		}
		return "", fmt.Errorf("lvm %s: %w", strings.Join(args, " "), err)
	}
	return stdout.String(), &ExecError{Args: args, Exit: ee.ExitCode(), Stderr: stderr.String(), Err: classify(stderr.String())}
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

// VG reports one volume group. ErrNotFound if it does not exist.
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
	return VG{}, &ExecError{Args: args, Stderr: fmt.Sprintf("Volume group %q not found in the report", name), Err: ErrNotFound}
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

// LVs reports the LVs of vg. ErrNotFound if the VG does not exist.
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

// PV reports the physical volume on dev. ErrNotFound if dev is not one.
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
		return PV{}, &ExecError{Args: args, Stderr: "no PV in the report", Err: ErrNotFound}
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
