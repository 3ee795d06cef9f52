// Package raid is the bottom layer of a head's stack: one md RAID10 array
// over the data disks the site config names for this node. Both heads
// run it; DRBD sits on top.
//
//   - Start assembles this head's array, or creates it on blank disks
//     with storage.raid.create_if_blank; any other content is Refused.
//     It finds disks by stable identity, never by /dev/sdX order, and
//     never passes --force or adds a disk by itself.
//   - Monitor reads sysfs and /proc/mdstat, never mdadm, so it cannot
//     hang on a tool; a degraded array keeps serving.
//
// docs/storage.md, "RAID10", has the rules and the reasons.
package raid

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/site"
)

const (
	// Name is the layer's name in the service graph.
	Name = "raid10"
	// ArrayName is the md name; the full name is "<node>:tandem".
	ArrayName = "tandem"
)

// Config is this head's array, as the site config describes it.
type Config struct {
	Node string // the homehost in the array's name
	// Disks are the members by stable identity (serial, WWN, by-id).
	Disks         []string
	CreateIfBlank bool
	ChunkKiB      int
	// UUID, if known (from the node's persistent state), is the array this
	// head must assemble; a superblock with another UUID is refused.
	UUID string
}

// FromSite builds node's Config. uuid is the array this head assembled
// before ("" at first boot): the site config cannot know it.
func FromSite(sc *site.Config, node, uuid string) (Config, error) {
	if sc == nil {
		return Config{}, configErr("no site config")
	}
	nd := sc.Node(node)
	if nd == nil {
		return Config{}, configErr("node %q is not in the site config", node)
	}
	rc := sc.Storage.RAID
	if rc.Level != "" && rc.Level != "raid10" {
		return Config{}, configErr("storage.raid.level %q: only raid10 is supported", rc.Level)
	}
	c := Config{Node: node, Disks: slices.Clone(nd.Disks), CreateIfBlank: rc.CreateIfBlank, ChunkKiB: cmp.Or(rc.ChunkKiB, site.DefaultChunkKiB), UUID: uuid}
	return c, c.check()
}

func (c Config) check() error {
	if n := len(c.Disks); n < 4 || n%2 != 0 {
		return configErr("node %s: RAID10 needs an even number of disks, at least 4; the config names %d", c.Node, n)
	}
	return nil
}

// Options are the paths and tools; the zero value is the real system.
type Options struct {
	SysRoot  string // "/sys"
	DevDir   string // "/dev"
	ProcRoot string // "/proc"
	RunDir   string // "/run": mdadm keeps its map file in <RunDir>/mdadm/map
	// Mdadm is the mdadm binary ("mdadm" from PATH by default).
	Mdadm string
	// ToolTimeout caps each mdadm call (default 2 minutes).
	ToolTimeout time.Duration
	Log         *slog.Logger
}

// RAID is the RAID10 resource.
type RAID struct {
	node          string
	ids           []string
	createIfBlank bool
	chunkKiB      int
	finder        disks.Finder
	sysRoot       string
	procRoot      string
	runDir        string
	devDir        string
	md            *Mdadm
	log           *slog.Logger

	mu   sync.Mutex
	uuid string // expected, or learned at Start

	bmu     sync.Mutex // guards reading
	reading time.Time  // when a state read still running began; zero: none
}

var _ services.Resource = (*RAID)(nil)

// New builds the resource; it touches nothing.
func New(cfg Config, opts Options) (*RAID, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resource", Name)
	r := &RAID{
		node:          cfg.Node,
		ids:           slices.Clone(cfg.Disks),
		createIfBlank: cfg.CreateIfBlank,
		chunkKiB:      cfg.ChunkKiB,
		finder:        disks.Finder{SysRoot: opts.SysRoot, DevDir: opts.DevDir},
		sysRoot:       cmp.Or(opts.SysRoot, "/sys"),
		procRoot:      cmp.Or(opts.ProcRoot, "/proc"),
		runDir:        cmp.Or(opts.RunDir, "/run"),
		devDir:        cmp.Or(opts.DevDir, "/dev"),
		md:            &Mdadm{Path: opts.Mdadm, Log: log, Timeout: opts.ToolTimeout},
		log:           log,
		uuid:          cfg.UUID,
	}
	return r, nil
}

// Name is the resource's name in the graph.
func (r *RAID) Name() string { return Name }

// Device is the array's device path for the layer above (DRBD's disk).
func (r *RAID) Device() string { return filepath.Join(r.devDir, "md", ArrayName) }

// UUID is the array's UUID once Start has found or made it.
func (r *RAID) UUID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uuid
}

// The Kind of every error this layer returns is set here: given by the
// caller that knows, or read off mdadm's sentinel by kindOf.

func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func (r *RAID) errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

func configErr(format string, a ...any) error {
	return fail("new", services.Config, fmt.Errorf(format, a...))
}

// toolErr classifies an mdadm failure.
func (r *RAID) toolErr(op string, err error) error { return fail(op, kindOf(err), err) }

func kindOf(err error) services.Kind {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return services.Timeout
	case errors.Is(err, ErrNotEnough):
		return services.Missing
	case errors.Is(err, ErrNeedsForce), errors.Is(err, services.ErrHasData), errors.Is(err, ErrWrongUUID):
		return services.Refused
	}
	return services.Failed
}

// kernelName finds the running array's kernel name (md127): from the
// /dev/md/tandem link mdadm made, else from mdadm's map file.
func (r *RAID) kernelName() (string, bool) {
	if t, err := filepath.EvalSymlinks(r.Device()); err == nil {
		return filepath.Base(t), true
	}
	f, err := os.Open(filepath.Join(r.runDir, "mdadm", "map"))
	if err != nil {
		return "", false
	}
	defer f.Close()
	// "md127 1.2 3a7c1d0e:5b2f0a9c:1e2d3c4b:5a697887 /dev/md/tandem"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 4 && strings.HasSuffix(fs[3], "/md/"+ArrayName) {
			return fs[0], true
		}
	}
	return "", false
}

// Start assembles the array, or creates it on blank disks when allowed.
func (r *RAID) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	if k, ok := r.kernelName(); ok {
		st, err := readStatus(r.sysRoot, r.procRoot, k)
		switch {
		case err == nil && st.Serving():
			d, err := r.md.Detail(ctx, r.Device())
			if err != nil {
				return r.toolErr("start", err)
			}
			if r.uuid != "" && d.UUID != r.uuid {
				return r.errorf("start", services.Refused, "%s is running array %s (%s), but this head's array is %s", r.Device(), d.UUID, d.Name, r.uuid)
			}
			r.uuid = d.UUID
			r.log.Info("array already running", "device", r.Device(), "kernel", k, "uuid", d.UUID, "status", st.String())
			return nil
		case err == nil:
			// Inactive or stopped half-way: it holds its members busy, so
			// assembling again needs it gone first.
			r.log.Warn("array present but not running; stopping it to assemble again", "kernel", k, "state", st.State)
			if err := r.md.Stop(ctx, r.Device()); err != nil && !errors.Is(err, services.ErrNotFound) {
				return r.toolErr("start", err)
			}
		}
	}

	ms, all, err := r.inspect(ctx)
	if err != nil {
		return err
	}
	d := decide(ms, r.createIfBlank, r.uuid, disks.Describe(all))
	if d.err != nil {
		return fail("start", d.kind, d.err)
	}
	for _, n := range d.notes {
		r.log.Warn(n)
	}
	switch d.action {
	case actAssemble:
		report, err := r.md.Assemble(ctx, r.Device(), d.uuid, r.node, d.devices)
		if err != nil {
			if errors.Is(err, ErrNotEnough) {
				return r.errorf("start", services.Missing, "too few members to start the array %s: %v (missing: %s)", d.uuid, err, strings.Join(d.missing, ", "))
			}
			return r.toolErr("start", err)
		}
		r.uuid = d.uuid
		r.log.Info("assembled existing array (not created)", "device", r.Device(), "uuid", d.uuid, "members", d.devices, "mdadm", report)
	case actCreate:
		spec := CreateSpec{Array: r.Device(), Name: ArrayName, Homehost: r.node, ChunkKiB: r.chunkKiB, Members: d.devices}
		r.log.Warn("creating a new RAID10 array: every member is blank and create_if_blank is set", "members", d.devices, "ids", r.ids)
		report, err := r.md.Create(ctx, spec)
		if err != nil {
			return r.toolErr("start", err)
		}
		det, err := r.md.Detail(ctx, r.Device())
		if err != nil {
			return r.toolErr("start", fmt.Errorf("created, but: %w", err))
		}
		r.uuid = det.UUID
		r.log.Info("created new array", "device", r.Device(), "uuid", det.UUID, "name", det.Name, "members", d.devices, "chunk_kib", r.chunkKiB, "mdadm", report)
	}
	if st, err := r.status(); err == nil && st.Degraded > 0 {
		r.log.Warn("array started degraded; it serves, Monitor reports it", "status", st.String())
	}
	return nil
}

// inspect resolves the configured disks and reads what each holds.
func (r *RAID) inspect(ctx context.Context) ([]member, []disks.Disk, error) {
	matches, all, err := r.finder.Resolve(r.ids)
	if errors.Is(err, disks.ErrAmbiguous) {
		return nil, all, r.errorf("start", services.Refused, "%v; disks here: %s", err, disks.Describe(all))
	}
	if err != nil {
		return nil, all, r.errorf("start", services.Failed, "%v", err)
	}
	ms := make([]member, len(matches))
	for i, m := range matches {
		ms[i] = member{ID: m.ID, Disk: m.Disk}
		if m.Disk == nil {
			continue
		}
		sb, err := r.md.Examine(ctx, m.Disk.Path)
		switch {
		case err == nil:
			ms[i].SB = &sb
			continue
		case !errors.Is(err, ErrNoSuperblock):
			return nil, all, r.toolErr("start", err)
		}
		c, err := disks.ProbePath(m.Disk.Path)
		if err != nil {
			return nil, all, r.errorf("start", services.Failed, "%s: %v", m.ID, err)
		}
		ms[i].Content = c
	}
	return ms, all, nil
}

// member is one configured disk and what it holds.
type member struct {
	ID      string
	Disk    *disks.Disk // nil: not present
	SB      *Superblock // nil: no md superblock
	Content disks.Content
}

func (m member) label() string {
	if m.Disk == nil {
		return m.ID
	}
	return fmt.Sprintf("%s (%s)", m.ID, m.Disk.Name)
}

type action int

const (
	actNone action = iota
	actAssemble
	actCreate
)

type decision struct {
	action  action
	uuid    string
	devices []string // member paths, config order
	missing []string // configured ids not present
	notes   []string // configured disks left out, for the log
	kind    services.Kind
	err     error
}

// isTandem reports whether an md name is a Tandem array's
// ("<homehost>:tandem"; mdadm drops the homehost part on a match).
func isTandem(name string) bool {
	return name == ArrayName || strings.HasSuffix(name, ":"+ArrayName)
}

// decide is Start's policy, on what inspect found. It never creates
// unless every configured disk is present and blank and createIfBlank is
// set, and it never uses a disk outside ms.
func decide(ms []member, createIfBlank bool, wantUUID, here string) decision {
	var d decision
	refuse := func(kind services.Kind, format string, a ...any) decision {
		return decision{kind: kind, err: fmt.Errorf(format, a...)}
	}
	var present []member
	for _, m := range ms {
		if m.Disk == nil {
			d.missing = append(d.missing, m.ID)
		} else {
			present = append(present, m)
		}
	}
	if len(present) == 0 {
		return refuse(services.Missing, "none of the %d configured disks is present (%s); disks here: %s", len(ms), strings.Join(d.missing, ", "), here)
	}

	// Tandem superblocks, by UUID.
	uuids := map[string][]member{}
	var order []string
	var foreign []string
	for _, m := range present {
		switch {
		case m.SB == nil:
		case !isTandem(m.SB.Name):
			foreign = append(foreign, fmt.Sprintf("%s holds md array %q (uuid %s), not a Tandem array", m.label(), m.SB.Name, m.SB.UUID))
		default:
			if _, ok := uuids[m.SB.UUID]; !ok {
				order = append(order, m.SB.UUID)
			}
			uuids[m.SB.UUID] = append(uuids[m.SB.UUID], m)
		}
	}

	if len(uuids) > 0 {
		uuid := wantUUID
		switch {
		case uuid != "" && len(uuids[uuid]) == 0:
			var got []string
			for _, u := range order {
				got = append(got, fmt.Sprintf("%s on %s", u, labels(uuids[u])))
			}
			return refuse(services.Refused, "this head's array is %s, but the configured disks hold %s", uuid, strings.Join(got, "; "))
		case uuid == "" && len(uuids) > 1:
			var got []string
			for _, u := range order {
				got = append(got, fmt.Sprintf("array %s (%s) on %s", u, uuids[u][0].SB.Name, labels(uuids[u])))
			}
			return refuse(services.Refused, "the configured disks belong to %d different Tandem arrays: %s; which one is this head's is for an operator to say", len(uuids), strings.Join(got, "; "))
		case uuid == "":
			uuid = order[0]
		}
		ours := uuids[uuid]
		sb := ours[0].SB
		if sb.Level != "" && sb.Level != "raid10" {
			return refuse(services.Refused, "array %s (%s) on %s is %s, not raid10", uuid, sb.Name, labels(ours), sb.Level)
		}
		if sb.Devices != 0 && sb.Devices != len(ms) {
			return refuse(services.Config, "array %s has %d members, but the config names %d disks for this node; Tandem does not grow or shrink arrays", uuid, sb.Devices, len(ms))
		}
		for _, m := range present {
			switch {
			case m.SB != nil && m.SB.UUID == uuid:
				d.devices = append(d.devices, m.Disk.Path)
			case m.SB != nil && isTandem(m.SB.Name):
				d.notes = append(d.notes, fmt.Sprintf("%s holds another Tandem array (%s, uuid %s); left alone", m.label(), m.SB.Name, m.SB.UUID))
			case m.SB != nil:
				d.notes = append(d.notes, fmt.Sprintf("%s holds md array %q (uuid %s); left alone", m.label(), m.SB.Name, m.SB.UUID))
			case m.Content.Blank:
				d.notes = append(d.notes, fmt.Sprintf("%s is blank: not a member; add it to the array by hand to rebuild", m.label()))
			default:
				d.notes = append(d.notes, fmt.Sprintf("%s holds %s: not a member; left alone", m.label(), m.Content))
			}
		}
		for _, id := range d.missing {
			d.notes = append(d.notes, id+" is not present: starting degraded")
		}
		d.action, d.uuid = actAssemble, uuid
		return d
	}

	// Nothing to assemble: this is a create, or a refusal.
	if wantUUID != "" {
		return refuse(services.Refused, "this head's array is %s, but no configured disk holds it (%s)", wantUUID, describe(present))
	}
	if len(d.missing) > 0 {
		return refuse(services.Missing, "%s not found, and no present disk holds the array; disks here: %s", strings.Join(d.missing, ", "), here)
	}
	var held []string
	for _, m := range present {
		if m.SB == nil && !m.Content.Blank {
			held = append(held, fmt.Sprintf("%s holds %s", m.label(), m.Content))
		}
	}
	held = append(held, foreign...)
	if len(held) > 0 {
		return refuse(services.Refused, "will not create the RAID10 array: %s; Tandem creates only on blank disks (no signature, first and last MiB zero): wipe them if their data is not needed, or fix the disk list", strings.Join(held, "; "))
	}
	if !createIfBlank {
		return refuse(services.Refused, "all %d disks are blank and storage.raid.create_if_blank is false: set it to true to build the array on %s", len(present), labels(present))
	}
	for _, m := range present {
		d.devices = append(d.devices, m.Disk.Path)
	}
	d.action = actCreate
	return d
}

func labels(ms []member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.label())
	}
	return strings.Join(s, ", ")
}

func describe(ms []member) string {
	var s []string
	for _, m := range ms {
		switch {
		case m.SB != nil:
			s = append(s, fmt.Sprintf("%s: md %s uuid %s", m.label(), m.SB.Name, m.SB.UUID))
		default:
			s = append(s, fmt.Sprintf("%s: %s", m.label(), m.Content))
		}
	}
	return strings.Join(s, "; ")
}

// Stop stops the array. Not running is success.
func (r *RAID) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.kernelName(); !ok {
		return nil
	}
	err := r.md.Stop(ctx, r.Device())
	switch {
	case err == nil:
		r.log.Info("array stopped", "device", r.Device())
		return nil
	case errors.Is(err, services.ErrNotFound):
		return nil
	case errors.Is(err, services.ErrInUse):
		return r.errorf("stop", services.Failed, "%s is still in use (DRBD attached?): %w", r.Device(), err)
	}
	return r.toolErr("stop", err)
}

// Status reads the running array's health for `tandem status`, with
// members named by their configured identity.
func (r *RAID) Status() (Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), statusWait)
	defer cancel()
	st, err := r.readBounded(ctx)
	st.Device, st.UUID = r.Device(), r.UUID()
	if err != nil {
		return st, err
	}
	if matches, _, err := r.finder.Resolve(r.ids); err == nil {
		for i := range st.Members {
			for _, m := range matches {
				if m.Disk != nil && m.Disk.Name == st.Members[i].Kernel {
					st.Members[i].ID = m.ID
				}
			}
		}
	}
	return st, nil
}

func (r *RAID) status() (Status, error) {
	k, ok := r.kernelName()
	if !ok {
		return Status{}, fmt.Errorf("%s is not running", r.Device())
	}
	st, err := readStatus(r.sysRoot, r.procRoot, k)
	if err != nil {
		return st, fmt.Errorf("%s (%s): %w", r.Device(), k, err)
	}
	return st, nil
}

// statusWait bounds Status, which `tandem status` calls without a
// deadline of its own.
const statusWait = 2 * time.Second

// readBounded reads the array's state, which can block on the md lock of
// a wedged array past any deadline, and returns when the read does or
// ctx ends. While an earlier read is still blocked, no new one starts
// (as in the XFS layer): it would only queue behind it, one goroutine
// more per monitor tick, without bound.
func (r *RAID) readBounded(ctx context.Context) (Status, error) {
	r.bmu.Lock()
	if since := r.reading; !since.IsZero() {
		r.bmu.Unlock()
		return Status{}, fmt.Errorf("the previous read of the array's state is still blocked (for %s): %w",
			time.Since(since).Round(time.Millisecond), context.DeadlineExceeded)
	}
	r.reading = time.Now()
	r.bmu.Unlock()
	type result struct {
		st  Status
		err error
	}
	ch := make(chan result, 1)
	go func() {
		st, err := r.status()
		r.bmu.Lock()
		r.reading = time.Time{}
		r.bmu.Unlock()
		ch <- result{st, err}
	}()
	select {
	case res := <-ch:
		return res.st, res.err
	case <-ctx.Done():
		return Status{}, fmt.Errorf("reading the array's state: no answer in time: %w", ctx.Err())
	}
}

// Monitor reports Failed if the array is not serving, Degraded if it
// serves with reduced redundancy, nil if healthy, and Timeout while
// reading its state blocks.
func (r *RAID) Monitor(ctx context.Context) error {
	st, err := r.readBounded(ctx)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fail("monitor", services.Timeout, err)
	case err != nil:
		return r.errorf("monitor", services.Failed, "%v", err)
	}
	return r.judge(st)
}

// judge turns a Status into Monitor's answer.
func (r *RAID) judge(st Status) error {
	if !st.Serving() {
		return r.errorf("monitor", services.Failed, "array %s is %s", st.Kernel, st.State)
	}
	var bad []string
	var inArray = map[string]bool{}
	for _, m := range st.Members {
		inArray[m.Kernel] = true
		if strings.Contains(m.State, "faulty") {
			bad = append(bad, r.idOf(m.Kernel)+" faulty")
		}
	}
	if st.Degraded > 0 || len(bad) > 0 {
		if matches, _, err := r.finder.Resolve(r.ids); err == nil {
			for _, m := range matches {
				switch {
				case m.Disk == nil:
					bad = append(bad, m.ID+" not present")
				case !inArray[m.Disk.Name]:
					bad = append(bad, fmt.Sprintf("%s (%s) not in the array", m.ID, m.Disk.Name))
				}
			}
		}
		msg := fmt.Sprintf("%d of %d members missing or failed", st.Degraded, st.RaidDisks)
		if len(bad) > 0 {
			msg += ": " + strings.Join(bad, ", ")
		}
		if st.SyncAction == "recover" {
			msg += "; rebuilding"
			if st.Progress != "" {
				msg += " (" + st.Progress + ")"
			}
		}
		return r.errorf("monitor", services.Degraded, "%s; still serving", msg)
	}
	return nil
}

// idOf names a member kernel device by its configured identity.
func (r *RAID) idOf(kernel string) string {
	if matches, _, err := r.finder.Resolve(r.ids); err == nil {
		for _, m := range matches {
			if m.Disk != nil && m.Disk.Name == kernel {
				return fmt.Sprintf("%s (%s)", m.ID, kernel)
			}
		}
	}
	return kernel
}
