package xfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/tool"
)

// Sentinels for the filesystem tools and mount(2); *ToolError and
// *MountError unwrap to one of them or to one of services': services.ErrHasData
// (mkfs.xfs found a filesystem or partition table and, without -f, never
// passed, refused), ErrInUse (the device or mountpoint is mounted or has
// open files), services.ErrNotFound (the device or mountpoint does not exist),
// ErrToolMissing, ErrToolFailed.
var (
	// ErrTooSmall: the device is too small for XFS.
	ErrTooSmall = errors.New("device too small")
	// ErrNotXFS: the device holds no XFS, or mount(2) could not read it as
	// XFS with these options.
	ErrNotXFS = errors.New("not an XFS filesystem")
	// ErrCorrupt: XFS found corruption ("Structure needs cleaning");
	// xfs_repair is for an operator.
	ErrCorrupt = errors.New("filesystem corrupt")
	// ErrReadOnly: the device is read-only (DRBD secondary?).
	ErrReadOnly = errors.New("device read-only")
	// ErrIO: an I/O error.
	ErrIO = errors.New("I/O error")
	// ErrNoKernelFS: the kernel has no XFS.
	ErrNoKernelFS = services.Sentinel("kernel has no xfs", services.ErrNoKernel)
	// ErrUsage: the tool rejected its command line (a bug here).
	ErrUsage = errors.New("bad arguments")
)

// stderrErrors maps mkfs.xfs and xfs_admin messages (xfsprogs 6.x,
// captured runs and format strings) to sentinels; first match wins.
var stderrErrors = tool.Rules{
	{Phrase: "contains a mounted", Err: services.ErrInUse},          // %s contains a mounted filesystem / mounted and writable filesystem
	{Phrase: "possibly contains a mounted", Err: services.ErrInUse}, // %s possibly contains a mounted filesystem
	{Phrase: "Device or resource busy", Err: services.ErrInUse},     // cannot open %s: Device or resource busy
	{Phrase: "appears to contain", Err: services.ErrHasData},        // appears to contain an existing filesystem (ext4). / a partition table (gpt). / something weird
	{Phrase: "Use the -f option", Err: services.ErrHasData},         // Use the -f option to force overwrite.
	{Phrase: "is not a valid XFS filesystem", Err: ErrNotXFS},
	{Phrase: "too small", Err: ErrTooSmall},                 // size 2560 of data subvolume is too small, minimum 4096 blocks
	{Phrase: "Log size must be at least", Err: ErrTooSmall}, // small devices with stripe alignment
	{Phrase: "not a file or block device", Err: services.ErrNotFound},
	{Phrase: "No such file or directory", Err: services.ErrNotFound},
	{Phrase: "Read-only file system", Err: ErrReadOnly},
	{Phrase: "Input/output error", Err: ErrIO},
	{Phrase: "Invalid value", Err: ErrUsage},
	{Phrase: "Usage:", Err: ErrUsage},
}

func classify(stderr string) error { return stderrErrors.Classify(stderr, services.ErrToolFailed) }

// ToolError is a failed mkfs.xfs or xfs_admin run.
type ToolError struct {
	Tool   string
	Args   []string
	Exit   int
	Stderr string
	Err    error // a sentinel
}

func (e *ToolError) Error() string {
	msg := summary(e.Stderr)
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Exit)
	}
	return fmt.Sprintf("%s %s: %v: %s", e.Tool, strings.Join(e.Args, " "), e.Err, msg)
}

func (e *ToolError) Unwrap() error { return e.Err }

// summary joins the lines that say something into one, without
// mkfs.xfs's usage text (everything from "Usage:" on).
func summary(stderr string) string {
	if i := strings.Index(stderr, "Usage:"); i >= 0 {
		stderr = stderr[:i]
	}
	return tool.Lines(stderr, nil)
}

// program is one external program, run with a deadline.
type program struct {
	name    string // for messages: "mkfs.xfs"
	path    string
	timeout time.Duration
	log     *slog.Logger
}

func (t program) run(ctx context.Context, args ...string) (string, error) {
	timeout := t.timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	path := t.path
	if path == "" {
		path = t.name
	}
	r, err := tool.Run(ctx, tool.Cmd{Path: path, Args: args, Name: t.name, Timeout: timeout})
	if t.log != nil {
		t.log.Debug(t.name, "args", args, "ms", r.Elapsed.Milliseconds(), "err", err, "stderr", summary(r.Stderr))
	}
	var ee *tool.ExitError
	switch {
	case err == nil:
		return r.Stdout + r.Stderr, nil
	case errors.As(err, &ee):
		return "", &ToolError{Tool: t.name, Args: args, Exit: r.Exit, Stderr: r.Stderr, Err: classify(r.Stderr)}
	case tool.Missing(err):
		return "", fmt.Errorf("%s: %w: %v", t.name, services.ErrToolMissing, err)
	}
	return "", err
}

// Label is the filesystem label mkfs writes (XFS allows 12 characters).
const Label = "tandem"

// MkfsSpec is a new filesystem.
type MkfsSpec struct {
	Device string
	// StripeKiB and StripeWidth align the data to the RAID10 array
	// (chunk size, data disks). Zero: no alignment (-d noalign), for
	// devices too small for it to matter.
	StripeKiB   int
	StripeWidth int
}

// Args is the mkfs.xfs command line. Never -f: mkfs.xfs's own check for
// an existing filesystem or partition table is a second guard behind
// Tandem's blank check.
func (s MkfsSpec) Args() []string {
	args := []string{"-q", "-L", Label,
		// -K: no discard pass; on a blank device it only costs time, and
		// through DRBD it would be sent to both heads.
		"-K"}
	if s.StripeKiB > 0 && s.StripeWidth > 0 {
		// DRBD and LVM do not reliably pass md's geometry up; give it.
		args = append(args, "-d", fmt.Sprintf("su=%dk,sw=%d", s.StripeKiB, s.StripeWidth))
	} else {
		args = append(args, "-d", "noalign")
	}
	return append(args, s.Device)
}

// Mkfs wraps mkfs.xfs.
type Mkfs struct{ program }

// Run makes the filesystem.
func (m Mkfs) Run(ctx context.Context, s MkfsSpec) (string, error) {
	out, err := m.run(ctx, s.Args()...)
	return summary(out), err
}

// Admin wraps xfs_admin (read-only use: UUID and label).
type Admin struct{ program }

// Info is what xfs_admin -u -l reports.
type Info struct{ UUID, Label string }

// Info reads an unmounted filesystem's UUID and label.
func (a Admin) Info(ctx context.Context, dev string) (Info, error) {
	out, err := a.run(ctx, "-u", "-l", dev)
	if err != nil {
		return Info{}, err
	}
	return parseAdmin(out), nil
}

// parseAdmin reads `UUID = 7228886c-...` and `label = "tandem"`.
func parseAdmin(out string) Info {
	var in Info
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "UUID":
			in.UUID = v
		case "label":
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			in.Label = v
		}
	}
	return in
}

// MountError is a failed mount(2) or umount(2). There is no mount(8)
// in between: the errno is the error to classify.
type MountError struct {
	Op     string // "mount" or "umount"
	Target string
	Errno  syscall.Errno
	Err    error // a sentinel
}

func (e *MountError) Error() string {
	return fmt.Sprintf("%s %s: %v (%v)", e.Op, e.Target, e.Err, e.Errno)
}

// Unwrap gives both the sentinel and the errno to errors.Is.
func (e *MountError) Unwrap() []error { return []error{e.Err, e.Errno} }

// errnoErrors maps mount(2)/umount(2) errnos to sentinels.
var errnoErrors = map[syscall.Errno]error{
	unix.EBUSY:       services.ErrInUse,
	unix.ENOENT:      services.ErrNotFound,
	unix.ENXIO:       services.ErrNotFound,
	unix.ENOTBLK:     services.ErrNotFound,
	unix.ENODEV:      ErrNoKernelFS,
	unix.EINVAL:      ErrNotXFS,
	unix.EUCLEAN:     ErrCorrupt, // EFSCORRUPTED: "Structure needs cleaning"
	unix.EROFS:       ErrReadOnly,
	unix.EACCES:      ErrReadOnly,
	unix.EMEDIUMTYPE: ErrReadOnly,
	unix.EIO:         ErrIO,
}

func mountErr(op, target string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s %s: %w", op, target, err)
	}
	s, ok := errnoErrors[errno]
	if !ok {
		s = services.ErrToolFailed
	}
	return &MountError{Op: op, Target: target, Errno: errno, Err: s}
}

// mounter is mount(2) and umount(2); tests replace it.
type mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
}

type sysMounter struct{}

func (sysMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func (sysMounter) Unmount(target string, flags int) error { return unix.Unmount(target, flags) }
