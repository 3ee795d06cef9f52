// Package drbd is the DRBD layer of a Tandem head: one resource, protocol
// C, replicating the head's RAID10 array to the peer over the replication
// bond. It runs on both heads as Secondary (Start) and is made Primary on
// the active head only (Promote).
//
// The kernel module is the in-tree DRBD 8.4; the userland is drbd-utils 9,
// whose drbdadm and drbdsetup exec /lib/drbd/drbdadm-84 and drbdsetup-84
// when /proc/drbd says 8.4. So the resource file uses 8.4 syntax, and the
// state stream is drbdsetup-84's events2 dialect (see tracker).
//
// Every drbdadm/drbdsetup/drbdmeta call goes through run, and classify
// turns its stderr into a *services.Error with a sentinel from errors.go.
package drbd

import (
	"bufio"
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

	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services"
)

// Name is the resource's name in the service graph.
const Name = "drbd"

// justCreatedUUID is the current UUID drbdmeta create-md writes
// (UUID_JUST_CREATED in DRBD): this device has never held data.
const justCreatedUUID = 4

// Resource is the DRBD layer; it implements services.Promoter.
type Resource struct {
	cfg    Config
	log    *slog.Logger
	run    runner
	stream streamer

	// Paths and probes, replaced in tests.
	procDRBD  string
	sysBlock  string
	libDir    string // drbdadm-84's registry, /var/lib/drbd
	readAt    func(dev string, off int64, n int) ([]byte, error)
	pollEvery time.Duration
	settleFor time.Duration // how long Start waits for a new pair to initialise
	now       func() time.Time
	// reconnectAfter is how long a StandAlone connection is left alone
	// before the monitor reconnects it (reconnectGrace).
	reconnectAfter time.Duration

	mu          sync.Mutex
	wantPrimary bool
	inChange    int       // promotes and demotes under way
	changedAt   time.Time // when the last one ended
	w           *watcher

	standAloneSince time.Time // when the monitor first saw StandAlone
	dropped         bool      // DropPeer disconnected; Reconnect undoes it
	reconnects      int       // attempts since the last connection
	nextReconnect   time.Time
}

var _ services.Promoter = (*Resource)(nil)

// Options are what the resource needs beyond its Config. The tools, the
// kernel's files and the clocks are replaced by this package's tests
// through unexported fields.
type Options struct {
	Log *slog.Logger
}

// New returns the DRBD resource for cfg; it touches nothing.
func New(cfg Config, opts Options) (*Resource, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Resource{
		cfg: cfg, log: log.With("resource", Name), run: execRunner{}, stream: execRunner{},
		procDRBD: "/proc/drbd", sysBlock: "/sys/block", libDir: "/var/lib/drbd", readAt: readDevice, pollEvery: 200 * time.Millisecond, settleFor: settleFor,
		now: time.Now, reconnectAfter: reconnectGrace,
	}, nil
}

// Name implements services.Resource.
func (r *Resource) Name() string { return Name }

// Config returns the resource's configuration.
func (r *Resource) Config() Config { return r.cfg }

func (r *Resource) adm(ctx context.Context, op string, args ...string) (result, error) {
	full := append([]string{"-c", r.cfg.ResFile()}, args...)
	res := r.run.Run(ctx, "drbdadm", full...)
	return res, classify(op, res, "drbdadm "+strings.Join(args, " "))
}

func (r *Resource) setup(ctx context.Context, op string, args ...string) (result, error) {
	res := r.run.Run(ctx, "drbdsetup", args...)
	return res, classify(op, res, "drbdsetup "+strings.Join(args, " "))
}

// writeConfig writes the resource file and the directories drbdadm needs.
func (r *Resource) writeConfig(op string) error {
	data, err := r.cfg.Render()
	if err != nil {
		return fail(op, services.Config, err)
	}
	// drbdadm-84 keeps its minor -> config registry in /var/lib/drbd, and
	// the kernel's handler calls find the -c file through it.
	for _, d := range []string{r.cfg.ConfDir, r.cfg.StateDir, r.libDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return errorf(op, services.Failed, "%v", err)
		}
	}
	if err := atomicfile.Write(r.cfg.ResFile(), data, 0o600); err != nil {
		return errorf(op, services.Failed, "write %s: %v", r.cfg.ResFile(), err)
	}
	return nil
}

// Start brings the resource up as Secondary: it writes the resource file,
// creates metadata if (and only if) the backing device has none, runs
// drbdadm adjust, starts the events2 watcher and, on a brand-new pair,
// skips the initial sync (see skipInitialSync).
func (r *Resource) Start(ctx context.Context) error {
	const op = "start"
	if err := r.writeConfig(op); err != nil {
		return err
	}
	// dump parses the file the way up will: a host-name mismatch or a
	// syntax error is a Config error now, not a puzzle later.
	if _, err := r.adm(ctx, op, "dump", r.cfg.Resource); err != nil {
		return err
	}
	st, err := r.oneshot(ctx, op)
	if err != nil {
		return err
	}
	if !attached(st) {
		if err := r.ensureMetadata(ctx, op); err != nil {
			return err
		}
	}
	if _, err := r.adm(ctx, op, "adjust", r.cfg.Resource); err != nil {
		return err
	}
	r.watch()
	if r.fresh() {
		r.settleFreshPair(ctx)
	}
	r.log.Info("drbd up", "state", r.State())
	return nil
}

func attached(st State) bool {
	return st.Configured && st.Disk != "" && st.Disk != Diskless && st.Disk != Failed && st.Disk != Detaching
}

// Promote makes this head Primary. It refuses unless the local disk is
// UpToDate: promoting Inconsistent or Outdated data would serve stale
// blocks. The fence-peer handler runs inside drbdadm primary when the
// peer is not connected.
func (r *Resource) Promote(ctx context.Context) error {
	const op = "promote"
	defer r.changing()()
	st, err := r.current(ctx, op)
	if err != nil {
		return err
	}
	if st.Role == Primary {
		r.setWant(true)
		return nil
	}
	if st.Disk != UpToDate {
		return errorf(op, services.Refused, "%w: local disk is %s (peer %s, connection %s)", ErrNoUpToDateDisk, orUnknown(st.Disk), orUnknown(st.PeerDisk), orUnknown(st.Connection))
	}
	if _, err := r.adm(ctx, op, "primary", r.cfg.Resource); err != nil {
		if !errors.Is(err, ErrPeerNotOutdated) || st.Connection != Connected || !r.peerDropped(ctx, op) {
			return err
		}
		// The HA supervisor promotes once the peer has been silent for
		// one dead time, which can be shorter than DRBD's own ping takes
		// to notice (ping-int 3 s plus ping-timeout 1 s, conf.go),
		// yet an idle DRBD may still count the lost peer as Connected:
		// the request then goes to the peer, DRBD drops the connection
		// for want of an answer, and refuses before the fence-peer
		// handler could outdate the peer. Now that the connection is
		// down, the handler decides: ask once more.
		r.log.Warn("drbd promote refused while DRBD was dropping the lost peer; trying again", "err", err)
		if _, err := r.adm(ctx, op, "primary", r.cfg.Resource); err != nil {
			return err
		}
	}
	r.setWant(true)
	r.log.Info("drbd primary")
	return nil
}

// DropPeer makes DRBD let go of a peer that the HA supervisor has found
// dead and fenced (heartbeats silent on every path, the witness vote
// held, the verdict written), rather than wait for its own ping timeout:
// a promotion asked of a DRBD that still counts the peer goes to the dead
// peer and waits for that timeout before the fence-peer handler even
// runs. The forced disconnect asks nothing of the peer. DRBD stays
// StandAlone until Reconnect, which the caller runs once the service is
// up, off the takeover's path.
func (r *Resource) DropPeer(ctx context.Context) error {
	const op = "drop-peer"
	st, err := r.current(ctx, op)
	if err != nil {
		return err
	}
	if !st.Configured || !peerCounted(st.Connection) {
		return nil
	}
	if _, err := r.adm(ctx, op, "disconnect", "--force", r.cfg.Resource); err != nil {
		return err
	}
	r.mu.Lock()
	r.dropped = true
	r.mu.Unlock()
	r.log.Warn("drbd: dropped the silent peer without waiting for DRBD's ping timeout", "was", st.Connection)
	return nil
}

// Reconnect lets DRBD listen for the peer again after DropPeer, so the
// peer resyncs from this head when it is back. Without a DropPeer it
// does nothing: a StandAlone the monitor found is the monitor's.
func (r *Resource) Reconnect(ctx context.Context) error {
	r.mu.Lock()
	dropped := r.dropped
	r.dropped = false
	r.mu.Unlock()
	if !dropped {
		return nil
	}
	_, err := r.adm(ctx, "reconnect", "connect", r.cfg.Resource)
	return err
}

// peerCounted reports whether DRBD still counts a peer in this
// connection state (events2 naming: the tracker has made 8.4's
// WFReportParams handshake Connected). A word this code does not know
// counts, so that DropPeer rather disconnects once too often.
func peerCounted(conn ConnState) bool {
	switch conn {
	case "", StandAlone, Disconnecting, Unconnected, Timeout, BrokenPipe, NetworkFailure,
		ProtocolError, TearDown, Connecting:
		return false
	}
	return true
}

// peerDropped polls DRBD dropPolls times, pollEvery apart (3 s), for it
// to leave Connected after a refused promotion that raced its loss of
// the peer, and reports whether it did. The refusal itself comes from
// DRBD giving up on the peer, so the state follows within moments.
func (r *Resource) peerDropped(ctx context.Context, op string) bool {
	for i := 0; ; i++ {
		st, err := r.oneshot(ctx, op)
		if err == nil && st.Configured && st.Connection != Connected {
			return true
		}
		if i == dropPolls {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(r.pollEvery):
		}
	}
}

const dropPolls = 15

// ResumeIO thaws I/O that fencing froze, once the caller has made sure
// the peer can no longer serve without this head's writes.
func (r *Resource) ResumeIO(ctx context.Context) error {
	if _, err := r.adm(ctx, "resume-io", "resume-io", r.cfg.Resource); err != nil {
		return err
	}
	r.log.Warn("drbd: I/O resumed after fencing")
	return nil
}

// Outdate marks this head's disk Outdated in DRBD's metadata (drbdadm
// outdate): it can then not be promoted before a resync from the peer,
// even after a reboot. DRBD refuses it on a Primary or a connected
// device.
func (r *Resource) Outdate(ctx context.Context) error {
	if _, err := r.adm(ctx, "outdate", "outdate", r.cfg.Resource); err != nil {
		return err
	}
	r.log.Warn("drbd: this head's disk is marked Outdated until it resyncs from the peer")
	return nil
}

// Demote makes this head Secondary again; it fails while the stack above
// still holds the device open.
func (r *Resource) Demote(ctx context.Context) error {
	const op = "demote"
	defer r.changing()()
	r.setWant(false)
	st, err := r.current(ctx, op)
	if err != nil {
		return err
	}
	if !st.Configured || st.Role != Primary {
		return nil
	}
	if _, err := r.adm(ctx, op, "secondary", r.cfg.Resource); err != nil {
		return err
	}
	r.log.Info("drbd secondary")
	return nil
}

// Stop demotes and takes the resource down.
func (r *Resource) Stop(ctx context.Context) error {
	const op = "stop"
	r.setWant(false)
	st, err := r.current(ctx, op)
	if err != nil {
		return err
	}
	if st.Configured {
		if st.Role == Primary {
			if _, err := r.adm(ctx, op, "secondary", r.cfg.Resource); err != nil {
				return err
			}
		}
		if _, err := r.adm(ctx, op, "down", r.cfg.Resource); err != nil && !errors.Is(err, ErrUnknownResource) {
			return err
		}
	}
	r.unwatch()
	r.log.Info("drbd down")
	return nil
}

// Monitor checks role, connection and disks from the events2 stream.
// Degraded means the data is served but not replicated (peer gone, resync
// running, split brain); Failed means this head cannot serve.
func (r *Resource) Monitor(ctx context.Context) error {
	const op = "monitor"
	st, err := r.current(ctx, op)
	if err != nil {
		return err
	}
	if r.fresh() {
		r.maybeSkipInitialSync(ctx, st)
		if st.Disk == UpToDate {
			r.clearFresh()
		}
	}
	// after-resync-target runs on the peer, not here: the fence record
	// of this head goes once the peer is seen caught up.
	if st.Connection == Connected && st.PeerDisk == UpToDate {
		if rec, ok := PeerFenced(r.cfg.StateDir, r.cfg.Resource); ok {
			if err := os.Remove(FenceFile(r.cfg.StateDir, r.cfg.Resource)); err == nil {
				r.log.Info("peer resynced; fence lifted", "fenced_at", rec.At)
			}
		}
	}
	r.reconnect(ctx, st)
	want, settled := r.wantSettled()
	return evaluate(st, want, settled)
}

// reconnectGrace is how long the monitor leaves a StandAlone connection
// alone before it reconnects: DRBD never leaves StandAlone by itself (a
// `drbdadm disconnect`, a refused handshake, a split brain), and an
// unreplicated pair cannot fail over. The grace is for an operator who
// disconnected on purpose for a short test.
const reconnectGrace = 30 * time.Second

// reconnectMax caps the wait between attempts. After a split brain DRBD
// drops every new connection again (after-sb-* disconnect: the data is
// never discarded by itself), so retrying costs a log line, nothing more.
const reconnectMax = 10 * time.Minute

// reconnect runs `drbdadm adjust` (what Start runs; it restores the
// connection from the resource file) once the connection has been
// StandAlone for the grace, then again with a doubling wait.
func (r *Resource) reconnect(ctx context.Context, st State) {
	now := r.now()
	r.mu.Lock()
	if !st.Configured || st.Connection != StandAlone {
		r.standAloneSince = time.Time{}
		if st.Connection == Connected {
			r.reconnects, r.nextReconnect = 0, time.Time{}
		}
		r.mu.Unlock()
		return
	}
	if r.standAloneSince.IsZero() {
		r.standAloneSince = now
	}
	since := r.standAloneSince
	if now.Sub(since) < r.reconnectAfter || now.Before(r.nextReconnect) {
		r.mu.Unlock()
		return
	}
	r.reconnects++
	n := r.reconnects
	wait := r.reconnectAfter
	for i := 1; i < n && wait < reconnectMax; i++ {
		wait *= 2
	}
	r.nextReconnect = now.Add(min(wait, reconnectMax))
	r.mu.Unlock()
	r.log.Warn(fmt.Sprintf("drbd: StandAlone for %s: reconnecting (drbdadm adjust, attempt %d)", now.Sub(since).Round(time.Second), n),
		"attempt", n)
	if _, err := r.adm(ctx, "monitor", "adjust", r.cfg.Resource); err != nil {
		r.log.Warn("drbd: reconnect failed; retrying later", "err", err, "next_in", min(wait, reconnectMax))
	}
}

// evaluate is Monitor's verdict on a State.
func evaluate(st State, wantPrimary, checkRole bool) error {
	const op = "monitor"
	fail := func(kind services.Kind, format string, a ...any) error { return errorf(op, kind, format, a...) }
	switch {
	case !st.Configured:
		return fail(services.Failed, "resource is not configured in the kernel")
	case checkRole && wantPrimary && st.Role != Primary:
		return fail(services.Failed, "role is %s, want Primary", orUnknown(st.Role))
	case checkRole && !wantPrimary && st.Role == Primary:
		return fail(services.Failed, "role is Primary, want Secondary")
	case st.FrozenByFencing():
		// Fencing froze it: the HA supervisor resumes it once the peer is
		// outdated, or stops the head. A restart could only hang on it.
		return fail(services.Degraded, "I/O frozen (%s) until the peer is outdated", st.Suspended)
	case !attached(st):
		return fail(services.Failed, "local disk is %s", orUnknown(st.Disk))
	case st.Disk != UpToDate && wantPrimary:
		return fail(services.Failed, "primary with a %s disk", st.Disk)
	case st.Connection == StandAlone:
		return fail(services.Degraded, "StandAlone: not replicating (disconnected by hand or by a takeover, or refused by the peer; the kernel log says which); the monitor reconnects after %s, then with backoff", reconnectGrace)
	case st.Connection != Connected:
		return fail(services.Degraded, "peer not connected (%s); writes are not replicated", orUnknown(st.Connection))
	case st.Syncing():
		return fail(services.Degraded, "resync %s at %.1f%% (disk %s, peer %s)", st.Replication, st.SyncPercent, st.Disk, st.PeerDisk)
	case st.Disk != UpToDate || st.PeerDisk != UpToDate:
		return fail(services.Degraded, "disk %s, peer disk %s", st.Disk, orUnknown(st.PeerDisk))
	}
	return nil
}

func orUnknown[T ~string](s T) string {
	if s == "" {
		return "unknown"
	}
	return string(s)
}

func (r *Resource) setWant(p bool) {
	r.mu.Lock()
	r.wantPrimary = p
	r.mu.Unlock()
}

// roleSettle is how long after a promote or demote the monitor leaves
// the role alone: the events2 stream reports the change a little later,
// and a monitor running during the change must not see a half-done one
// as a failure (and restart DRBD under the switchover).
const roleSettle = 5 * time.Second

// changing marks a promote or demote under way; call the result when done.
func (r *Resource) changing() func() {
	r.mu.Lock()
	r.inChange++
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.inChange--
		r.changedAt = time.Now()
		r.mu.Unlock()
	}
}

// wantSettled returns the wanted role and whether the monitor may judge
// the role now.
func (r *Resource) wantSettled() (want, settled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wantPrimary, r.inChange == 0 && time.Since(r.changedAt) >= roleSettle
}

// State returns the latest state seen on the events2 stream (zero if the
// watcher has not finished its initial dump).
func (r *Resource) State() State {
	r.mu.Lock()
	w := r.w
	r.mu.Unlock()
	if w == nil {
		return State{}
	}
	st, _ := w.state()
	return st
}

// current is the watcher's state once its initial dump is in, else a
// one-shot query.
func (r *Resource) current(ctx context.Context, op string) (State, error) {
	r.mu.Lock()
	w := r.w
	r.mu.Unlock()
	if w != nil {
		if st, ok := w.state(); ok {
			return st, nil
		}
	}
	return r.oneshot(ctx, op)
}

// oneshot runs `drbdsetup events2 --now --statistics`, falling back to
// /proc/drbd where the module has no events2.
func (r *Resource) oneshot(ctx context.Context, op string) (State, error) {
	res, err := r.setup(ctx, op, "events2", "--now", "--statistics", r.cfg.Resource)
	if err == nil {
		t := newTracker(r.cfg.Resource, r.cfg.Minor, r.deviceKiB)
		now := time.Now()
		for _, l := range strings.Split(res.Stdout, "\n") {
			t.feed(l, now)
		}
		return t.st, nil
	}
	switch {
	case errors.Is(err, ErrUnknownResource):
		return State{}, nil // not up yet
	case services.KindOf(err) == services.Timeout || errors.Is(err, ErrNoModule):
		return State{}, err
	}
	data, perr := os.ReadFile(r.procDRBD)
	if perr != nil {
		return State{}, err
	}
	r.log.Debug("events2 unavailable, read /proc/drbd", "err", err)
	t := newTracker(r.cfg.Resource, r.cfg.Minor, r.deviceKiB)
	for _, l := range strings.Split(string(data), "\n") {
		t.feed(l, time.Now())
	}
	return t.st, nil
}

// deviceKiB is the DRBD device's size, for 8.4's resync percentage.
func (r *Resource) deviceKiB() uint64 {
	b, err := os.ReadFile(filepath.Join(r.sysBlock, fmt.Sprintf("drbd%d", r.cfg.Minor), "size"))
	if err != nil {
		return 0
	}
	sectors, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return sectors / 2
}

// watcher follows the events2 stream and keeps the latest State.
type watcher struct {
	mu     sync.Mutex
	tr     *tracker
	cancel context.CancelFunc
	done   chan struct{}
}

func (w *watcher) state() (State, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tr.st, w.tr.synced
}

// watch starts the watcher if it is not running.
func (r *Resource) watch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{tr: newTracker(r.cfg.Resource, r.cfg.Minor, r.deviceKiB), cancel: cancel, done: make(chan struct{})}
	r.w = w
	go r.follow(ctx, w)
}

func (r *Resource) unwatch() {
	r.mu.Lock()
	w := r.w
	r.w = nil
	r.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

// follow reads the stream until ctx ends, restarting it when it exits.
// A restart resets the state: the new stream's initial dump rebuilds it,
// and until then current() falls back to a one-shot query.
func (r *Resource) follow(ctx context.Context, w *watcher) {
	defer close(w.done)
	args := []string{"events2", "--statistics", r.cfg.Resource}
	backoff := time.Second
	for ctx.Err() == nil {
		w.mu.Lock()
		w.tr.st, w.tr.synced = State{}, false
		w.mu.Unlock()
		started := time.Now()
		out, wait, err := r.stream.Stream(ctx, "drbdsetup", args...)
		if err == nil {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				w.mu.Lock()
				if w.tr.feed(sc.Text(), time.Now()) && w.tr.synced {
					r.log.Debug("drbd event", "line", sc.Text())
				}
				w.mu.Unlock()
			}
			err = wait()
		}
		if ctx.Err() != nil {
			return
		}
		// An old 8.x module has no events2: follow the legacy stream.
		if err != nil && strings.Contains(err.Error(), "Kernel does not know how to handle your request") && args[0] == "events2" {
			args = []string{"events", r.cfg.Resource}
		}
		r.log.Warn("drbd event stream ended; restarting", "err", err)
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
