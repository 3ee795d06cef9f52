package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/control"
	"tandem.dev/tandem/ha/decide"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/status"
)

// These tests drive the loop's glue, observe → decide → act, against
// fakes of PID 1's parts (rig_test.go), with the clock in the test's
// hands. ha/decide's own tests prove the rule table; these prove that
// the loop feeds it the right inputs and carries out what it says.

func TestTakeover(t *testing.T) {
	tests := []struct {
		name         string
		node         string
		setup        func(r *rig)
		after        time.Duration // the round that decides
		wantAction   decide.Action
		wantStarts   int
		wantEpoch    uint64
		wantOutdates int  // the witness records the peer as outdated
		wantVerdict  bool // DRBD's fence-peer verdict is "down", then removed
		wantKind     string
	}{
		{
			name: "the active peer falls silent: fence it, start a new epoch, take over",
			node: "head-b", setup: (*rig).silentPeerTakeover, after: 3 * time.Second,
			wantAction: decide.FencePromote, wantStarts: 1, wantEpoch: 2, wantOutdates: 1, wantKind: "takeover",
		},
		{
			name: "no vote: a silent peer is not taken over",
			node: "head-b",
			setup: func(r *rig) {
				r.silentPeerTakeover()
				r.wit.held = false
			},
			// In sync with the active peer until it fell silent: its epoch.
			after: 3 * time.Second, wantAction: decide.Alert, wantEpoch: 1,
		},
		{
			name:  "cold start beside a standby peer, preferred: start, same epoch, no fencing",
			node:  "head-a",
			setup: func(r *rig) { r.peer(true, ha.Standby, 0) },
			after: 0, wantAction: decide.Promote, wantStarts: 1, wantEpoch: 0, wantKind: "start",
		},
		{
			name:  "cold start beside a standby peer, not preferred: the peer starts",
			node:  "head-b",
			setup: func(r *rig) { r.peer(true, ha.Standby, 0) },
			after: 0, wantAction: decide.None,
		},
		{
			name:  "the peer yields (it failed): fail over, same epoch",
			node:  "head-b",
			setup: func(r *rig) { r.peer(true, ha.None, 3) },
			after: 0, wantAction: decide.Promote, wantStarts: 1, wantEpoch: 3, wantKind: "failover",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.node, nil)
			tc.setup(r)
			d := r.step(tc.after)
			if d.Action != tc.wantAction {
				t.Fatalf("decision %v (%s), want %v", d.Action, d.Reason, tc.wantAction)
			}
			starts, _ := r.layers.counts()
			if starts != tc.wantStarts {
				t.Errorf("the active layers started %d times, want %d", starts, tc.wantStarts)
			}
			if e := r.s.Epoch(); e != tc.wantEpoch {
				t.Errorf("epoch %d, want %d", e, tc.wantEpoch)
			}
			if e, err := readEpoch(r.s.cfg.EpochFile); e != tc.wantEpoch || err != nil {
				t.Errorf("epoch file: %d, %v; want %d", e, err, tc.wantEpoch)
			}
			if r.wit.outdates != tc.wantOutdates {
				t.Errorf("the witness was asked to outdate the peer %d times, want %d", r.wit.outdates, tc.wantOutdates)
			}
			if tc.wantOutdates > 0 && r.drbd.dropped != 1 {
				t.Errorf("DRBD dropped the dead peer %d times, want once", r.drbd.dropped)
			}
			if _, err := os.Stat(drbd.VerdictFile(r.drbd.cfg.ConfDir, "r0")); err == nil {
				t.Error("the fence verdict outlived the takeover")
			}
			wantRole := ha.Standby
			if tc.wantStarts > 0 {
				wantRole = ha.Active
			}
			if got := r.s.Role(); got != wantRole {
				t.Errorf("role %s, want %s", got, wantRole)
			}
			if tc.wantKind != "" {
				v := r.s.StatusView()
				if len(v.Failovers) != 1 || v.Failovers[0].Kind != tc.wantKind || !v.Failovers[0].OK {
					t.Errorf("failovers %+v, want one %q that worked", v.Failovers, tc.wantKind)
				}
			}
		})
	}
}

// An active head that loses both the peer and the vote stops its stack
// within the stop bound, with the watchdog armed to reset it otherwise;
// a stop that hangs ends in a self-fence.
func TestQuorumLostWhileActive(t *testing.T) {
	tests := []struct {
		name         string
		stopHangs    bool
		wantRole     ha.Role
		wantRestarts int
	}{
		{"the stack stops in time", false, ha.Standby, 0},
		{"the stop hangs: self-fence", true, ha.Standby, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-a", func(p *decide.Params) { p.StopBound = time.Second })
			r.peer(true, ha.Standby, 0)
			if d := r.step(0); d.Action != decide.Promote || r.s.Role() != ha.Active {
				t.Fatalf("setup: %v (%s), role %s", d.Action, d.Reason, r.s.Role())
			}
			r.layers.stopHangs = tc.stopHangs
			r.peer(false, "", 0)
			r.drbd.set(func(st *drbd.State) {
				st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
			})
			now := r.clock.Now().Add(100 * time.Millisecond)
			d := r.stepAsync(100 * time.Millisecond)
			if d.Action != decide.Demote {
				t.Fatalf("decision %v (%s), want demote", d.Action, d.Reason)
			}
			if got, want := r.watch.armed(), now.Add(time.Second); !got.Equal(want) {
				t.Errorf("watchdog bound %v, want %v (the stop bound)", got, want)
			}
			r.s.tasks.Wait()
			if _, stops := r.layers.counts(); stops != 1 {
				t.Errorf("the active layers stopped %d times, want once", stops)
			}
			if got := r.s.Role(); got != tc.wantRole {
				t.Errorf("role %s, want %s", got, tc.wantRole)
			}
			if got := r.host.restarted(); got != tc.wantRestarts {
				t.Errorf("self-fenced %d times, want %d", got, tc.wantRestarts)
			}
			if tc.wantRestarts == 0 {
				r.step(100 * time.Millisecond)
				if !r.watch.armed().IsZero() {
					t.Error("the stop bound was not lifted once the stack was down")
				}
			}
		})
	}
}

// A peer that reappears while this head takes over does not make it
// stop half-way, nor start a second role change.
func TestPeerReappearsDuringTakeover(t *testing.T) {
	tests := []struct {
		name       string
		peerRole   ha.Role
		peerEpoch  uint64
		wantAction decide.Action // once the takeover is done
	}{
		{"it rebooted and is standby", ha.Standby, 1, decide.None},
		{"it was cut off and still announces active", ha.Active, 1, decide.Alert},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-b", nil)
			r.silentPeerTakeover()
			gate := make(chan struct{})
			r.layers.startGate = gate
			if d := r.stepAsync(3 * time.Second); d.Action != decide.FencePromote {
				t.Fatalf("decision %v (%s)", d.Action, d.Reason)
			}
			r.waitFor("the stack to start", func() bool { s, _ := r.layers.counts(); return s == 1 })
			r.peer(true, tc.peerRole, tc.peerEpoch)
			for range 3 {
				r.stepAsync(500 * time.Millisecond)
			}
			if r.hb.announced() != ha.Active {
				t.Errorf("announces %s while taking over, want active", r.hb.announced())
			}
			close(gate)
			r.s.tasks.Wait()
			d := r.step(500 * time.Millisecond)
			starts, stops := r.layers.counts()
			if starts != 1 || stops != 0 {
				t.Errorf("starts %d, stops %d; want one start and no stop", starts, stops)
			}
			if r.s.Role() != ha.Active || d.Action != tc.wantAction {
				t.Errorf("role %s, decision %v (%s); want active, %v", r.s.Role(), d.Action, d.Reason, tc.wantAction)
			}
		})
	}
}

// The loop starts no role change of its own while the operator's runs,
// nor right after one of its own failed.
func TestNoRoleChangeWhileBusy(t *testing.T) {
	tests := []struct {
		name       string
		busy       func(r *rig) (done func())
		wantStarts int
	}{
		{"idle", func(*rig) func() { return func() {} }, 1},
		{"an operator's switchover runs", func(r *rig) func() { return r.s.manualOp() }, 0},
		{"a failed start is retried later", func(r *rig) func() {
			r.s.mu.Lock()
			r.s.retryAt = r.clock.Now().Add(retryAfter)
			r.s.mu.Unlock()
			return func() {}
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-a", nil)
			r.peer(true, ha.Standby, 0)
			done := tc.busy(r)
			if d := r.step(0); d.Action != decide.Promote {
				t.Fatalf("decision %v (%s)", d.Action, d.Reason)
			}
			done()
			if starts, _ := r.layers.counts(); starts != tc.wantStarts {
				t.Errorf("started %d times, want %d", starts, tc.wantStarts)
			}
		})
	}
}

// A switchover asked for while a takeover runs is refused (the peer is
// gone), and the takeover finishes.
func TestSwitchoverDuringTakeover(t *testing.T) {
	r := newRig(t, "head-b", nil)
	r.silentPeerTakeover()
	gate := make(chan struct{})
	r.layers.startGate = gate
	r.stepAsync(3 * time.Second)
	r.waitFor("the stack to start", func() bool { s, _ := r.layers.counts(); return s == 1 })
	msg, err := r.s.Switchover(r.ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the peer") {
		t.Errorf("switchover: %q, %v; want a refusal", msg, err)
	}
	close(gate)
	r.s.tasks.Wait()
	if starts, stops := r.layers.counts(); r.s.Role() != ha.Active || starts != 1 || stops != 0 {
		t.Errorf("role %s, starts %d, stops %d; want the takeover finished", r.s.Role(), starts, stops)
	}
	r.s.mu.Lock()
	manual := r.s.manual
	r.s.mu.Unlock()
	if manual != 0 {
		t.Errorf("%d operator changes still marked under way", manual)
	}
}

// The epoch rises only on a takeover without the peer; beside a peer
// with the same data the head takes the peer's.
func TestEpoch(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(r *rig)
		after     time.Duration
		wantEpoch uint64
	}{
		{"takeover without the peer", (*rig).silentPeerTakeover, 3 * time.Second, 2},
		{"in sync with a peer of a newer epoch", func(r *rig) {
			r.peer(true, ha.Active, 5)
			r.drbd.set(func(st *drbd.State) { st.PeerRole = drbd.Primary })
		}, 0, 5},
		{"a peer of a newer epoch, not in sync", func(r *rig) {
			r.peer(true, ha.Active, 5)
			r.drbd.set(func(st *drbd.State) { st.PeerRole, st.Disk = drbd.Primary, drbd.Inconsistent })
		}, 0, 0},
		{"a standby peer of an older epoch", func(r *rig) {
			r.s.setEpoch("test", func(uint64, uint64) uint64 { return 4 })
			r.peer(true, ha.Standby, 2)
		}, 0, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-b", nil)
			tc.setup(r)
			r.step(tc.after)
			if e := r.s.Epoch(); e != tc.wantEpoch {
				t.Errorf("epoch %d, want %d", e, tc.wantEpoch)
			}
			if e, err := readEpoch(r.s.cfg.EpochFile); e != tc.wantEpoch || err != nil {
				t.Errorf("epoch file: %d, %v; want %d", e, err, tc.wantEpoch)
			}
		})
	}
}

// A standby whose DRBD lost the peer while the peer went on serving may
// lack its writes: it must not take over when the peer dies later, and
// it marks its own disk Outdated. A power pull (silent with the
// connection) is not that.
func TestStaleReplicaOverride(t *testing.T) {
	tests := []struct {
		name         string
		heardAfter   bool // the peer was heard well after DRBD lost it
		wantStarts   int
		wantOutdated bool
	}{
		{"replication cut, the peer served on, then died", true, 0, true},
		{"power pull: silent with the connection", false, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-b", nil)
			r.peer(true, ha.Active, 1)
			r.drbd.set(func(st *drbd.State) { st.PeerRole = drbd.Primary })
			r.step(0)
			r.drbd.set(func(st *drbd.State) {
				st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
			})
			if tc.heardAfter {
				r.step(100 * time.Millisecond)
				r.peer(true, ha.Active, 1)
				r.step(time.Second)
				r.peer(true, ha.Active, 1)
				r.step(time.Second)
			}
			r.peer(false, "", 0)
			r.wit.held = true
			d := r.step(3 * time.Second)
			starts, _ := r.layers.counts()
			if starts != tc.wantStarts {
				t.Errorf("started %d times (decision %v: %s), want %d", starts, d.Action, d.Reason, tc.wantStarts)
			}
			if got := r.drbd.outdated > 0; got != tc.wantOutdated {
				t.Errorf("disk marked Outdated in DRBD's metadata: %v, want %v", got, tc.wantOutdated)
			}
		})
	}
}

// The witness's record that this head alone has current data is lifted
// only once DRBD has resynced the peer in a connection made after the
// record: DRBD's view of a dead peer can still read Connected and
// UpToDate/UpToDate for a while after a takeover.
func TestWriterRecordLiftedOnlyAfterResync(t *testing.T) {
	r := newRig(t, "head-b", nil)
	r.peer(true, ha.Active, 1)
	r.drbd.set(func(st *drbd.State) { st.PeerRole = drbd.Primary })
	r.step(0)
	// The active peer dies; DRBD has not noticed yet, nor does the drop
	// take at once.
	r.drbd.slowDrop = true
	r.peer(false, "", 0)
	r.wit.held = true
	if d := r.step(3 * time.Second); d.Action != decide.FencePromote || r.s.Role() != ha.Active {
		t.Fatalf("no takeover: %v (%s), role %s", d.Action, d.Reason, r.s.Role())
	}
	if !r.wit.Vote().Writer {
		t.Fatal("the takeover did not record this head as the writer")
	}
	for range 4 {
		r.step(500 * time.Millisecond)
	}
	if n := r.wit.cleared(); n != 0 {
		t.Fatalf("the record was lifted %d times on DRBD's stale view of the dead peer", n)
	}
	// DRBD drops the peer at last; the peer comes back and resyncs.
	r.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.StandAlone, drbd.Unknown, drbd.DUnknown
	})
	r.step(500 * time.Millisecond)
	r.peer(true, ha.Standby, 2)
	r.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connected, drbd.Secondary, drbd.Inconsistent
	})
	r.step(500 * time.Millisecond)
	if n := r.wit.cleared(); n != 0 {
		t.Fatalf("the record was lifted during the resync")
	}
	r.drbd.set(func(st *drbd.State) { st.PeerDisk = drbd.UpToDate })
	r.step(500 * time.Millisecond)
	r.step(fenceRetry)
	if n := r.wit.cleared(); n != 1 {
		t.Errorf("the record was lifted %d times after the resync, want once", n)
	}
}

// A panic in the HA loop (or any of its goroutines) leaves the head
// unsupervised: it self-fences. A loop that stops deciding stops
// renewing the vote, and PID 1 stops petting the watchdog (Healthy).
func TestStuckOrPanickingLoop(t *testing.T) {
	t.Run("a panic in the decision loop self-fences", func(t *testing.T) {
		r := newRig(t, "head-a", nil)
		r.peer(true, ha.Standby, 0)
		r.step(0)
		r.layers.mu.Lock()
		r.layers.panics = true
		r.layers.mu.Unlock()
		ctx, cancel := context.WithCancel(r.ctx)
		defer cancel()
		r.s.goSafe("loop", func() { r.s.loop(ctx) })
		r.s.poke()
		r.waitFor("the self-fence", func() bool { return r.host.restarted() == 1 })
		if r.watch.armed().IsZero() {
			t.Error("the self-fence did not bound the watchdog")
		}
	})
	tests := []struct {
		name        string
		sinceStep   time.Duration
		wantHealthy bool
	}{
		{"the loop decided an interval ago", 500 * time.Millisecond, true},
		{"the loop is stuck", 4 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-b", nil)
			r.silentPeerTakeover()
			r.step(0)
			r.s.wantVote.Store(true)
			r.clock.advance(tc.sinceStep)
			if got := r.s.Healthy(r.clock.Now()); got != tc.wantHealthy {
				t.Errorf("healthy %v, want %v", got, tc.wantHealthy)
			}
			released := true
			r.s.voteOnce(r.ctx, &released)
			r.wit.mu.Lock()
			asked := r.wit.requests > 0
			r.wit.mu.Unlock()
			if asked != tc.wantHealthy {
				t.Errorf("vote renewed %v, want %v", asked, tc.wantHealthy)
			}
		})
	}
}

// A head the witness recorded as outdated remembers it on its state
// partition: neither its reboot nor a witness that lost its record (a
// rebuilt witness host) lets it take over with stale data; a resync from
// the peer clears the mark.
func TestRememberOutdated(t *testing.T) {
	dir := t.TempDir()
	r := newRigIn(t, dir, "head-b", nil)
	r.peer(true, ha.Active, 1)
	r.drbd.set(func(st *drbd.State) {
		st.PeerRole, st.Connection, st.PeerDisk = drbd.Primary, drbd.Connecting, drbd.DUnknown
	})
	r.wit.outdated, r.wit.lastAt = true, r.clock.Now() // head-a wrote alone; the witness says so
	r.step(0)
	if _, err := os.Stat(filepath.Join(dir, "ha", "outdated")); err != nil {
		t.Fatalf("the mark was not persisted: %v", err)
	}

	// head-b reboots; the witness host is rebuilt and forgot its record,
	// so it grants head-b the vote once head-a is gone.
	r2 := newRigIn(t, dir, "head-b", nil)
	r2.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
	})
	r2.wit.held = true
	r2.step(0)
	d := r2.step(3 * time.Second)
	if starts, _ := r2.layers.counts(); starts != 0 {
		t.Fatalf("took over with data the witness had recorded as outdated (decision %v: %s)", d.Action, d.Reason)
	}

	// head-a comes back; DRBD resyncs head-b in a new connection: the
	// mark goes, and the head may serve again.
	r2.peer(true, ha.Active, 2)
	r2.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connected, drbd.Primary, drbd.UpToDate
	})
	r2.step(500 * time.Millisecond)
	r2.step(500 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(dir, "ha", "outdated")); !os.IsNotExist(err) {
		t.Errorf("the mark outlived the resync: %v", err)
	}
	r2.s.mu.Lock()
	disk := r2.s.inputs.Disk
	r2.s.mu.Unlock()
	if disk != ha.UpToDate {
		t.Errorf("disk counts as %s after the resync, want UpToDate", disk)
	}
}

// standbyPeer is the other head's control server, at its replication
// address on loopback: ready and standby, and its acquire hangs, as on a
// head that loses power halfway through a switchover.
type standbyPeer struct{ node string }

func (p standbyPeer) Status(context.Context) (any, error) {
	return status.Status{State: status.Ready, Node: p.node, Role: string(ha.Standby)}, nil
}
func (standbyPeer) Release(context.Context) error { return nil }
func (standbyPeer) Acquire(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// A switchover whose target dies halfway gives up as soon as the peer is
// declared dead, and the HA loop takes the service back as in a
// failover, instead of waiting out the control call's budget.
func TestSwitchoverTargetDies(t *testing.T) {
	r := newRig(t, "head-a", nil)
	r.peer(true, ha.Standby, 0)
	if d := r.step(0); r.s.Role() != ha.Active {
		t.Fatalf("setup: %v (%s)", d.Action, d.Reason)
	}
	sc := r.s.cfg.Site
	ck, err := control.Key(r.s.cfg.Key, sc.Pair.Name)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(sc.Node("head-b").Replication.Prefix().Addr().String(), strconv.Itoa(sc.HA.ControlPort))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Key: ck, Node: "head-b", Peer: "head-a", Handler: standbyPeer{"head-b"}}
	go srv.Serve(l)
	t.Cleanup(func() { l.Close() })

	type result struct {
		msg string
		err error
	}
	done := make(chan result, 1)
	t0 := time.Now()
	go func() {
		msg, err := r.s.Switchover(r.ctx)
		done <- result{msg, err}
	}()
	r.waitFor("the stack to stop here", func() bool { _, stops := r.layers.counts(); return stops == 1 })
	r.peer(false, "", 0) // head-b loses power while it starts the stack
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the switchover still waits on a dead peer after 10 s")
	}
	if res.err == nil || !strings.Contains(res.err.Error(), "fell silent") {
		t.Fatalf("switchover: %q, %v; want it to give up on the dead peer", res.msg, res.err)
	}
	t.Logf("gave up after %v", time.Since(t0).Round(time.Millisecond))
	// The loop takes the service back: the vote, fencing, a new epoch.
	r.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
	})
	r.wit.mu.Lock()
	r.wit.held = true
	r.wit.mu.Unlock()
	d := r.step(3 * time.Second)
	if d.Action != decide.FencePromote || r.s.Role() != ha.Active {
		t.Errorf("after the switchover: %v (%s), role %s; want a fenced takeover", d.Action, d.Reason, r.s.Role())
	}
}

// A standby asks the witness only when it wants the vote, so the answer
// that marked it outdated stays its last one: after the resync it must
// not keep the mark, or the head could never take over again.
func TestOutdatedMarkClearsDespiteAnOldAnswer(t *testing.T) {
	r := newRig(t, "head-b", nil)
	r.peer(true, ha.Active, 1)
	r.drbd.set(func(st *drbd.State) {
		st.PeerRole, st.Connection, st.PeerDisk = drbd.Primary, drbd.Connecting, drbd.DUnknown
	})
	r.wit.outdated, r.wit.lastAt = true, r.clock.Now()
	r.step(0)
	// The partition heals: DRBD reconnects and resyncs; the witness is
	// not asked again, so its last answer still says outdated.
	r.drbd.set(func(st *drbd.State) { st.Connection, st.PeerDisk = drbd.Connected, drbd.UpToDate })
	for range 3 {
		r.step(500 * time.Millisecond)
	}
	// head-a dies later; the witness (record lifted) grants the vote.
	r.peer(false, "", 0)
	r.drbd.set(func(st *drbd.State) {
		st.Connection, st.PeerRole, st.PeerDisk = drbd.Connecting, drbd.Unknown, drbd.DUnknown
	})
	r.wit.mu.Lock()
	r.wit.held, r.wit.outdated = true, false
	r.wit.mu.Unlock()
	d := r.step(3 * time.Second)
	if starts, _ := r.layers.counts(); starts != 1 {
		t.Errorf("no takeover after the resync (decision %v: %s)", d.Action, d.Reason)
	}
}

// A primary that fencing froze is thawed once the witness records it,
// even when the witness exchange is slow (R3 in a loaded lab: the
// exchange used up the budget resume-io shared with it, on every retry)
// and when a resume fails once: the retry does not ask the witness again.
func TestThawFrozenPrimary(t *testing.T) {
	// needs is how long a drbdadm call takes on a loaded head.
	const needs = 50 * time.Millisecond
	tests := []struct {
		name        string
		slowWitness bool // the exchange spends all but a moment of its budget
		failFirst   bool // the first resume fails
		thawedBy    bool // DRBD's handler thaws it while the loop asks the witness
		wantResumes int
		wantAsks    int
	}{
		{"a slow witness leaves resume-io its own budget", true, false, false, 1, 1},
		{"a failed resume is retried without asking the witness again", false, true, false, 2, 1},
		{"the handler's answer thawed it meanwhile", false, false, true, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "head-a", nil)
			r.s.fencing.outdateBudget, r.s.fencing.resumeBudget = 300*time.Millisecond, 300*time.Millisecond
			r.peer(true, ha.Standby, 0)
			r.step(0)
			if r.s.Role() != ha.Active {
				t.Fatalf("head-a is %s, want active", r.s.Role())
			}
			r.wit.held = true
			r.wit.slow = func(ctx context.Context) {
				if tc.thawedBy {
					r.drbd.set(func(st *drbd.State) { st.Suspended = "no" })
				}
				if dl, ok := ctx.Deadline(); ok && tc.slowWitness {
					time.Sleep(time.Until(dl) - 10*time.Millisecond)
				}
			}
			failed := false
			r.drbd.resume = func(ctx context.Context) error {
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) < needs {
					return fmt.Errorf("drbd resume-io: timeout")
				}
				if tc.failFirst && !failed {
					failed = true
					return fmt.Errorf("drbd resume-io: exit 10")
				}
				return nil
			}
			// The partition: the peer falls silent, DRBD freezes I/O.
			r.peer(false, "", 0)
			r.drbd.set(func(st *drbd.State) {
				st.Connection, st.PeerRole, st.PeerDisk, st.Suspended = drbd.Connecting, drbd.Unknown, drbd.DUnknown, "fencing"
			})
			for range 4 {
				r.step(fenceRetry)
			}
			if r.drbd.State().FrozenByFencing() {
				t.Errorf("I/O still frozen after %d resume attempts", r.drbd.resumes)
			}
			if r.drbd.resumes != tc.wantResumes || r.wit.outdates != tc.wantAsks {
				t.Errorf("resume-io ran %d times and the witness was asked %d times, want %d and %d",
					r.drbd.resumes, r.wit.outdates, tc.wantResumes, tc.wantAsks)
			}
			if r.s.Role() != ha.Active {
				t.Errorf("head-a is %s after the thaw", r.s.Role())
			}
		})
	}
}
