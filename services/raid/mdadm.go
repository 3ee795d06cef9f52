package raid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/tool"
)

// Mdadm wraps mdadm(8): the one place Tandem runs it. Every call has a
// deadline, reads no mdadm.conf (--config=none: the arrays are found from
// the members' superblocks, so there is no file to get out of date), and
// turns mdadm's stderr into the sentinel errors below.
type Mdadm struct {
	Path string // default "mdadm"
	Log  *slog.Logger
	// Timeout caps a call when the caller's context has no earlier
	// deadline. Default 2 minutes.
	Timeout time.Duration
}

// Sentinels for mdadm failures; an *ExecError unwraps to one of them or
// to one of services': ErrInUse (a device is held open: mounted, DRBD
// attached, another array), services.ErrHasData (mdadm --create found a partition
// table, filesystem or old superblock on a member and declined to go on),
// services.ErrNotFound (no such array or device), ErrToolMissing, ErrToolFailed.
var (
	// ErrNoSuperblock: the device holds no md superblock.
	ErrNoSuperblock = errors.New("no md superblock")
	// ErrActive: the array, or an array using these members, is already
	// running.
	ErrActive = services.Sentinel("array already active", services.ErrInUse)
	// ErrNotEnough: too few members to start the array, even degraded.
	ErrNotEnough = errors.New("not enough members to start the array")
	// ErrNeedsForce: the members disagree (the array was not shut down
	// cleanly and is degraded); mdadm asks for --force, which may lose
	// the latest writes. Tandem never forces: an operator decides.
	ErrNeedsForce = errors.New("members are out of date with each other; mdadm wants --force")
	// ErrWrongUUID: a member belongs to another array.
	ErrWrongUUID = errors.New("member has the wrong UUID")
	// ErrNoKernelMD: the kernel has no md support (module not loaded).
	ErrNoKernelMD = services.Sentinel("kernel md driver unavailable", services.ErrNoKernel)
)

// stderrErrors maps mdadm's messages (mdadm 4.x: Assemble.c, Create.c,
// Manage.c, util.c) to sentinels. First match wins, so the more specific
// phrase comes first ("not enough ... consider --force" before "not
// enough").
var stderrErrors = tool.Rules{
	{Phrase: "No md superblock detected", Err: ErrNoSuperblock},
	{Phrase: "has no superblock - assembly aborted", Err: ErrNoSuperblock},
	{Phrase: "no recogniseable superblock", Err: ErrNoSuperblock},
	{Phrase: "No superblock found on", Err: ErrNoSuperblock},
	{Phrase: "already active, cannot restart it", Err: ErrActive},
	{Phrase: "Found some drive for an array that is already active", Err: ErrActive},
	{Phrase: "is already in use", Err: ErrActive},
	{Phrase: "consider --force", Err: ErrNeedsForce},
	{Phrase: "not enough to start", Err: ErrNotEnough},
	{Phrase: "Cannot get exclusive access", Err: services.ErrInUse},
	{Phrase: "is busy - skipping", Err: services.ErrInUse},
	{Phrase: "Device or resource busy", Err: services.ErrInUse},
	{Phrase: "Device is busy", Err: services.ErrInUse},
	{Phrase: "It is busy", Err: services.ErrInUse},
	{Phrase: "appears to be part of a raid array", Err: services.ErrHasData},
	{Phrase: "appears to contain", Err: services.ErrHasData},
	{Phrase: "partition table exists", Err: services.ErrHasData},
	{Phrase: "create aborted", Err: services.ErrHasData},
	{Phrase: "has wrong uuid", Err: ErrWrongUUID},
	{Phrase: "does not appear to be a component of", Err: ErrWrongUUID},
	{Phrase: "unexpected failure opening", Err: ErrNoKernelMD},
	{Phrase: "does not appear to be an md device", Err: services.ErrNotFound},
	{Phrase: "No such file or directory", Err: services.ErrNotFound},
	{Phrase: "No such device or address", Err: services.ErrNotFound},
	{Phrase: "no devices found for", Err: services.ErrNotFound},
	{Phrase: "No arrays found", Err: services.ErrNotFound},
}

// ExecError is a failed mdadm run (tool.Failure, named for this layer).
type ExecError = tool.Failure

func execError(args []string, exit int, stderr string, err error) *ExecError {
	return &ExecError{Tool: "mdadm", Args: args, Exit: exit, Stderr: stderr, Err: err, Clean: cleanMdadm}
}

// classify picks the sentinel for mdadm's stderr.
func classify(stderr string) error { return stderrErrors.Classify(stderr, services.ErrToolFailed) }

// summary joins mdadm's stderr lines into one, without the "mdadm: "
// prefixes, for messages on the console.
func summary(stderr string) string { return tool.Lines(stderr, cleanMdadm) }

// cleanMdadm drops mdadm's own prefix from a stderr line.
func cleanMdadm(l string) string { return strings.TrimPrefix(strings.TrimSpace(l), "mdadm:") }

func (m *Mdadm) log() *slog.Logger {
	if m.Log == nil {
		return slog.Default()
	}
	return m.Log
}

// run executes mdadm and returns its stdout and stderr (mdadm reports
// success on stderr too, e.g. "started with 3 drives (out of 4)").
func (m *Mdadm) run(ctx context.Context, args ...string) (string, string, error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	path := m.Path
	if path == "" {
		path = "mdadm"
	}
	r, err := tool.Run(ctx, tool.Cmd{Path: path, Args: args, Name: "mdadm", Timeout: timeout,
		// No udev in the image: mdadm makes /dev/md* itself and must not
		// wait for udev or try to start mdmon through systemctl.
		Env: append(os.Environ(), "MDADM_NO_UDEV=1", "MDADM_NO_SYSTEMCTL=1")})
	// stdin is /dev/null: a question ("Continue creating array?") reads
	// EOF, and mdadm gives up instead of going ahead.
	m.log().Debug("mdadm", "args", args, "ms", r.Elapsed.Milliseconds(), "err", err, "stderr", summary(r.Stderr))
	var ee *tool.ExitError
	switch {
	case err == nil:
		return r.Stdout, r.Stderr, nil
	case errors.As(err, &ee):
		return r.Stdout, r.Stderr, execError(args, r.Exit, r.Stderr, classify(r.Stderr))
	case tool.Missing(err):
		return "", "", fmt.Errorf("%w: %v", services.ErrToolMissing, err)
	}
	return "", "", err
}

// Superblock is what mdadm --examine --export reports for one member.
type Superblock struct {
	UUID    string // array UUID, mdadm's form: 8:8:8:8 hex
	Name    string // "homehost:name"
	Level   string // "raid10"
	Devices int    // raid disks
	Events  uint64
	DevUUID string
}

// Examine reads a member's superblock. ErrNoSuperblock if it has none.
func (m *Mdadm) Examine(ctx context.Context, dev string) (Superblock, error) {
	out, _, err := m.run(ctx, "--examine", "--export", "--config=none", dev)
	if err != nil {
		return Superblock{}, err
	}
	kv := parseExport(out)
	if kv["MD_UUID"] == "" {
		// mdadm 4.x prints nothing but exits 0 for some foreign formats.
		return Superblock{}, execError([]string{"--examine", dev}, 0, "no MD_UUID in --export output", ErrNoSuperblock)
	}
	sb := Superblock{UUID: kv["MD_UUID"], Name: kv["MD_NAME"], Level: kv["MD_LEVEL"], DevUUID: kv["MD_DEV_UUID"]}
	sb.Devices, _ = strconv.Atoi(kv["MD_DEVICES"])
	sb.Events, _ = strconv.ParseUint(kv["MD_EVENTS"], 10, 64)
	return sb, nil
}

// Detail is what mdadm --detail --export reports for a running array.
type Detail struct {
	UUID    string
	Name    string
	Level   string
	Devices int
	// Members maps a member device ("/dev/vdb") to its role ("0", "spare").
	Members map[string]string
}

// Detail queries a running array.
func (m *Mdadm) Detail(ctx context.Context, array string) (Detail, error) {
	out, _, err := m.run(ctx, "--detail", "--export", "--config=none", array)
	if err != nil {
		return Detail{}, err
	}
	kv := parseExport(out)
	d := Detail{UUID: kv["MD_UUID"], Name: kv["MD_NAME"], Level: kv["MD_LEVEL"], Members: map[string]string{}}
	d.Devices, _ = strconv.Atoi(kv["MD_DEVICES"])
	// MD_DEVICE_<key>_DEV=/dev/vdb and MD_DEVICE_<key>_ROLE=0 pair up by key.
	for k, v := range kv {
		key, ok := strings.CutSuffix(strings.TrimPrefix(k, "MD_DEVICE_"), "_DEV")
		if !ok || !strings.HasPrefix(k, "MD_DEVICE_") {
			continue
		}
		d.Members[v] = kv["MD_DEVICE_"+key+"_ROLE"]
	}
	return d, nil
}

// Assemble starts the array uuid from exactly the given members (never a
// scan: only disks the config names are touched). --run starts it
// degraded when members are missing; it does not override an unclean
// array, which stays ErrNeedsForce. It returns mdadm's report.
func (m *Mdadm) Assemble(ctx context.Context, array, uuid, homehost string, members []string) (string, error) {
	args := []string{"--assemble", array, "--config=none", "--run", "--uuid=" + uuid, "--homehost=" + homehost}
	_, stderr, err := m.run(ctx, append(args, members...)...)
	return summary(stderr), err
}

// CreateSpec is a new RAID10 array.
type CreateSpec struct {
	Array    string // "/dev/md/tandem"
	Name     string // "tandem"
	Homehost string // the node name: the full name is homehost:name
	ChunkKiB int
	Members  []string
}

// Args is the mdadm command line for the spec.
func (s CreateSpec) Args() []string {
	args := []string{
		"--create", s.Array, "--config=none",
		"--level=10", "--layout=n2", // near copies: each mirror pair holds whole chunks
		"--raid-devices=" + strconv.Itoa(len(s.Members)),
		"--chunk=" + strconv.Itoa(s.ChunkKiB), // KiB
		"--metadata=1.2",
		// A write-intent bitmap: after a crash or a member's brief
		// absence, only dirty regions resync.
		"--bitmap=internal",
		"--homehost=" + s.Homehost, "--name=" + s.Name,
	}
	// No --run and no --force: if mdadm itself finds anything on a
	// member it asks, reads EOF, and aborts.
	return append(args, s.Members...)
}

// Create builds a new array and starts it.
func (m *Mdadm) Create(ctx context.Context, s CreateSpec) (string, error) {
	_, stderr, err := m.run(ctx, s.Args()...)
	return summary(stderr), err
}

// Stop stops an array. services.ErrNotFound if it is not running.
func (m *Mdadm) Stop(ctx context.Context, array string) error {
	_, _, err := m.run(ctx, "--stop", "--config=none", array)
	return err
}

// parseExport reads KEY=value lines.
func parseExport(s string) map[string]string {
	kv := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && k != "" {
			kv[k] = v
		}
	}
	return kv
}
