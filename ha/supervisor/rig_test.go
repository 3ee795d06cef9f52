package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/decide"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// The fakes below stand for PID 1's parts; the loop under test is the
// real one.

// testSite is the lab's site config with the heads' replication
// addresses (where the control channel dials) moved to loopback, so a
// control call to the peer is refused at once instead of leaving this
// machine. site.Parse refuses loopback, hence the change after it.
func testSite(t *testing.T) *site.Config {
	t.Helper()
	sc, err := site.Load("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range sc.Nodes {
		sc.Nodes[i].Replication.Address = fmt.Sprintf("127.0.10.%d/8", 11+i)
	}
	return sc
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeHB is the heartbeat: the test says what the peer announces.
type fakeHB struct {
	mu    sync.Mutex
	snap  heartbeat.Snapshot
	state heartbeat.State // what this head announces
}

func (f *fakeHB) Snapshot() heartbeat.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	if s.Peer != nil {
		p := *s.Peer
		s.Peer = &p
	}
	return s
}

func (f *fakeHB) SetState(s heartbeat.State) {
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
}

func (f *fakeHB) announced() ha.Role {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Role
}

func (f *fakeHB) Run(context.Context) error { return nil }

type fakeWitness struct {
	mu       sync.Mutex
	held     bool
	outdates int
	writer   bool      // the witness records this head as the only current copy
	outdated bool      // it records the peer so
	lastAt   time.Time // when its last answer came
	clears   int
	requests int
	slow     func(context.Context) // set before the loop runs: how OutdatePeer spends its ctx
}

func (f *fakeWitness) Held() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *fakeWitness) Vote() witness.Vote {
	f.mu.Lock()
	defer f.mu.Unlock()
	return witness.Vote{Held: f.held, Writer: f.writer, Outdated: f.outdated, LastAt: f.lastAt}
}

func (f *fakeWitness) Request(context.Context) (bool, time.Duration, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	return f.held, time.Second, "", nil
}

func (f *fakeWitness) Release(context.Context) error { return nil }

func (f *fakeWitness) OutdatePeer(ctx context.Context) error {
	if f.slow != nil {
		f.slow(ctx)
	}
	f.mu.Lock()
	f.outdates++
	f.writer = true
	f.mu.Unlock()
	return nil
}

func (f *fakeWitness) ClearWriter(context.Context) error {
	f.mu.Lock()
	f.clears++
	f.writer = false
	f.mu.Unlock()
	return nil
}

func (f *fakeWitness) cleared() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clears
}

type fakeDRBD struct {
	mu       sync.Mutex
	st       drbd.State
	cfg      drbd.Config
	dropped  int
	slowDrop bool // DropPeer leaves DRBD's (stale) view of the peer as it was
	outdated int  // drbdadm outdate runs (the disk state stays: the loop's own override must hold)
	resumes  int
	resume   func(context.Context) error // set before the loop runs: nil resumes at once
}

func (f *fakeDRBD) State() drbd.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeDRBD) set(fn func(*drbd.State)) {
	f.mu.Lock()
	fn(&f.st)
	f.mu.Unlock()
}

func (f *fakeDRBD) Config() drbd.Config { return f.cfg }

func (f *fakeDRBD) DropPeer(context.Context) error {
	if f.slowDrop {
		return nil
	}
	f.set(func(st *drbd.State) {
		st.Connection, st.PeerDisk, st.PeerRole = drbd.StandAlone, drbd.DUnknown, drbd.Unknown
	})
	f.mu.Lock()
	f.dropped++
	f.mu.Unlock()
	return nil
}

func (f *fakeDRBD) Reconnect(context.Context) error { return nil }

// ResumeIO thaws the fake's frozen I/O, or fails as resume does.
func (f *fakeDRBD) ResumeIO(ctx context.Context) error {
	f.mu.Lock()
	f.resumes++
	resume := f.resume
	f.mu.Unlock()
	if resume != nil {
		if err := resume(ctx); err != nil {
			return err
		}
	}
	f.set(func(st *drbd.State) { st.Suspended = "no" })
	return nil
}

func (f *fakeDRBD) Outdate(context.Context) error {
	f.mu.Lock()
	f.outdated++
	f.mu.Unlock()
	return nil
}

// fakeLayers is the service supervisor. Starting the active layers
// makes DRBD primary; a closed-over gate holds a start or stop until
// the test lets it go.
type fakeLayers struct {
	mu        sync.Mutex
	drbd      *fakeDRBD
	starts    int
	stops     int
	startGate chan struct{} // nil: starts at once
	stopHangs bool          // a stop that never finishes
	escalated string        // a layer escalated
	panics    bool          // Status panics (a bug in the loop's path)
}

func (f *fakeLayers) StartRoles(ctx context.Context, roles ...graph.Role) error {
	f.mu.Lock()
	f.starts++
	gate := f.startGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.drbd.set(func(st *drbd.State) { st.Role = drbd.Primary })
	return nil
}

func (f *fakeLayers) StopRoles(ctx context.Context, roles ...graph.Role) error {
	f.mu.Lock()
	f.stops++
	hangs := f.stopHangs
	f.mu.Unlock()
	if hangs {
		<-ctx.Done()
		return ctx.Err()
	}
	f.drbd.set(func(st *drbd.State) { st.Role = drbd.Secondary })
	return nil
}

func (f *fakeLayers) counts() (starts, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.stops
}

func (f *fakeLayers) Status() []supervise.ResourceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panics {
		panic("injected")
	}
	out := []supervise.ResourceStatus{{Name: "nfs", Role: graph.ActiveOnly, State: supervise.Running}}
	if f.escalated != "" {
		out[0].Name, out[0].Escalated = f.escalated, true
	}
	return out
}

func (f *fakeLayers) Maintenance(bool)     {}
func (f *fakeLayers) InMaintenance() bool  { return false }
func (f *fakeLayers) Cleanup(string) error { return nil }

type fakeHost struct {
	mu       sync.Mutex
	restarts []string
}

func (f *fakeHost) Stopping() bool { return false }
func (f *fakeHost) Restart(why string) {
	f.mu.Lock()
	f.restarts = append(f.restarts, why)
	f.mu.Unlock()
}
func (f *fakeHost) LocalStatus() status.Status { return status.Status{} }

func (f *fakeHost) restarted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.restarts)
}

type fakeWatch struct {
	mu     sync.Mutex
	bound  time.Time
	lifted int
}

func (f *fakeWatch) BoundBy(t time.Time) {
	f.mu.Lock()
	if f.bound.IsZero() || t.Before(f.bound) {
		f.bound = t
	}
	f.mu.Unlock()
}

func (f *fakeWatch) Lift(t time.Time) {
	f.mu.Lock()
	if f.bound.Equal(t) {
		f.bound, f.lifted = time.Time{}, f.lifted+1
	}
	f.mu.Unlock()
}

func (f *fakeWatch) armed() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bound
}

// rig is one head (head-b, not preferred at equal epochs, unless the
// test says otherwise) with its fakes.
type rig struct {
	t      *testing.T
	ctx    context.Context
	s      *Supervisor
	clock  *fakeClock
	hb     *fakeHB
	wit    *fakeWitness
	drbd   *fakeDRBD
	layers *fakeLayers
	host   *fakeHost
	watch  *fakeWatch
	dir    string
}

func newRig(t *testing.T, node string, tune func(*decide.Params)) *rig {
	t.Helper()
	return newRigIn(t, t.TempDir(), node, tune)
}

// newRigIn is a head whose state partition is dir: a second rig on the
// same dir is the head after a reboot.
func newRigIn(t *testing.T, dir, node string, tune func(*decide.Params)) *rig {
	t.Helper()
	sc := testSite(t)
	for _, d := range []string{"conf", "state", "ha"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	dr := &fakeDRBD{cfg: drbd.Config{Resource: "r0", ConfDir: filepath.Join(dir, "conf"), StateDir: filepath.Join(dir, "state")},
		st: drbd.State{Role: drbd.Secondary, PeerRole: drbd.Secondary, Connection: drbd.Connected, Disk: drbd.UpToDate, PeerDisk: drbd.UpToDate, Suspended: "no"}}
	r := &rig{t: t, ctx: t.Context(), clock: &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)},
		hb: &fakeHB{}, wit: &fakeWitness{}, drbd: dr, layers: &fakeLayers{drbd: dr}, host: &fakeHost{}, watch: &fakeWatch{}, dir: dir}
	p := Params(sc, 6*time.Second)
	if tune != nil {
		tune(&p)
	}
	s, err := New(Config{Site: sc, Node: node, Key: make([]byte, 32), Params: p, Layers: r.layers, DRBD: dr,
		Watch: r.watch, Host: r.host, Heartbeat: r.hb, Witness: r.wit, Clock: r.clock,
		EpochFile: filepath.Join(dir, "ha", "epoch"), ModeFile: filepath.Join(dir, "ha", "mode.json"),
		OutdatedFile: filepath.Join(dir, "ha", "outdated")})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	t.Cleanup(s.tasks.Wait)
	return r
}

// peer sets what the heartbeat says of the peer: seen (both ways) and
// announcing role, or silent since the last packet.
func (r *rig) peer(seen bool, role ha.Role, epoch uint64) {
	now := r.clock.Now()
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	if !seen {
		r.hb.snap.At, r.hb.snap.Seen, r.hb.snap.Alive = now, false, false
		return
	}
	r.hb.snap = heartbeat.Snapshot{At: now, Seen: true, Alive: true, PeerName: r.s.peer,
		Peer: &heartbeat.PeerStatus{State: heartbeat.State{Role: role, Disk: ha.UpToDate, Epoch: epoch}, LastHeard: now, HeardUs: now}}
}

// step runs one round after d, then waits for what it started.
func (r *rig) step(d time.Duration) decide.Decision {
	r.clock.advance(d)
	r.s.Step(r.ctx, r.clock.Now())
	r.s.tasks.Wait()
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.last
}

// stepAsync runs one round without waiting for a role change it starts.
func (r *rig) stepAsync(d time.Duration) decide.Decision {
	r.clock.advance(d)
	r.s.Step(r.ctx, r.clock.Now())
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.last
}

// silentPeerTakeover brings a standby head to the point where the peer,
// active until now, fell silent and the witness granted the vote.
func (r *rig) silentPeerTakeover() {
	r.peer(true, ha.Active, 1)
	r.drbd.set(func(st *drbd.State) { st.PeerRole = drbd.Primary })
	r.step(0)
	r.peer(false, "", 0)
	r.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
	})
	r.wit.mu.Lock()
	r.wit.held = true
	r.wit.mu.Unlock()
}

func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
