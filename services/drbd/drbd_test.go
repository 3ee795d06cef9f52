package drbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services"
)

const (
	notUp       = "exists -\n"
	freshPair84 = `exists resource name:r0 role:Secondary suspended:no
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary
exists device name:r0 volume:0 minor:0 disk:Inconsistent
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 replication:Established peer-disk:Inconsistent
exists -
`
	secondaryStandalone = `exists resource name:r0 role:Secondary suspended:no
exists connection name:r0 peer-node-id:0 conn-name:peer connection:StandAlone role:Unknown
exists device name:r0 volume:0 minor:0 disk:Outdated
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 replication:Off peer-disk:DUnknown
exists -
`
	justCreatedGI = "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0:0\n"
)

var noMD = failed(255, "No valid meta data found\nCommand 'drbdmeta 0 v08 /dev/md/tandem internal dump-md' terminated with exit code 255\n")

func TestStartMetadata(t *testing.T) {
	cases := []struct {
		name       string
		dumpMD     result
		disk       []byte // start of the backing device
		wantCreate bool
		wantApply  bool
		wantErr    error
		wantKind   services.Kind
	}{
		{"blank device gets metadata", noMD, nil, true, false, nil, 0},
		{"existing metadata is kept", ok("# DRBD meta data dump\nversion \"v08\";\n"), nil, false, false, nil, 0},
		{"unclean metadata gets apply-al, not create-md", failed(255, "Found meta data is \"unclean\", please apply-al first\n"), nil, false, true, nil, 0},
		{"data without metadata is refused", noMD, append([]byte("XFSB"), make([]byte, 8188)...), false, false, ErrNoMetadata, services.Refused},
		{"an unknown dump-md failure never creates", failed(20, "drbdmeta: cannot open /dev/md/tandem: Input/output error\n"), nil, false, false, services.ErrToolFailed, services.Failed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdsetup events2 --now --statistics r0", ok(notUp)).on("drbdadm dump-md r0", tc.dumpMD)
			r := newTest(t, labConfig(t, "head-b"), f, notUp)
			if tc.disk != nil {
				r.readAt = func(string, int64, int) ([]byte, error) { return tc.disk, nil }
			}
			err := r.Start(context.Background())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || services.KindOf(err) != tc.wantKind {
					t.Fatalf("err = %v (kind %v), want %v", err, services.KindOf(err), tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.called("drbdadm -- --force create-md r0"); got != tc.wantCreate {
				t.Errorf("create-md called = %v", got)
			}
			if got := f.called("drbdadm apply-al r0"); got != tc.wantApply {
				t.Errorf("apply-al called = %v", got)
			}
			if got := exists(t, r.freshFile()); got != tc.wantCreate {
				t.Errorf("fresh marker = %v", got)
			}
			if tc.wantErr == nil && !f.called("drbdadm adjust r0") {
				t.Error("no adjust")
			}
			if !exists(t, r.cfg.ResFile()) {
				t.Error("resource file not written")
			}
		})
	}
}

func TestStartAttachedSkipsProbe(t *testing.T) {
	f := newFake().on("drbdsetup events2 --now --statistics r0", ok(events84Initial))
	r := newTest(t, labConfig(t, "head-a"), f, events84Initial)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.called("drbdadm dump-md") || f.called("drbdadm -- --force create-md") {
		t.Errorf("metadata probed on an attached device: %v", f.calls)
	}
}

func TestStartConfigErrors(t *testing.T) {
	f := newFake().on("drbdadm dump r0", failed(3, "'r0' ignored, since this host (nas) is not mentioned with an 'on' keyword.\n"))
	r := newTest(t, labConfig(t, "head-a"), f, notUp)
	err := r.Start(context.Background())
	if services.KindOf(err) != services.Config || !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v", err)
	}
	if f.called("drbdadm adjust") {
		t.Error("adjust after a config error")
	}
}

func TestSkipInitialSync(t *testing.T) {
	cases := []struct {
		name  string
		self  string
		fresh bool
		gi    string
		state string
		want  bool
	}{
		{"first node, fresh, both inconsistent", "head-a", true, justCreatedGI, freshPair84, true},
		{"second node never issues it", "head-b", true, justCreatedGI, freshPair84, false},
		{"not created by us", "head-a", false, justCreatedGI, freshPair84, false},
		{"UUID already rotated", "head-a", true, "A1B2C3D4E5F60718:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0:0\n", freshPair84, false},
		{"peer not connected", "head-a", true, justCreatedGI, strings.Replace(freshPair84, "connection:Connected", "connection:Connecting", 1), false},
		{"peer has data (UpToDate)", "head-a", true, justCreatedGI, strings.Replace(freshPair84, "peer-disk:Inconsistent", "peer-disk:UpToDate", 1), false},
		{"a resync runs", "head-a", true, justCreatedGI, strings.Replace(freshPair84, "replication:Established", "replication:SyncTarget", 1), false},
		{"peer is primary", "head-a", true, justCreatedGI, strings.Replace(freshPair84, "connection:Connected role:Secondary", "connection:Connected role:Primary", 1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdsetup events2 --now --statistics r0", ok(tc.state)).on("drbdsetup get-gi 0", ok(tc.gi))
			r := newTest(t, labConfig(t, tc.self), f, tc.state)
			if tc.fresh {
				if err := atomicfile.Write(r.freshFile(), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r.watch()
			waitSynced(t, r)
			_ = r.Monitor(context.Background())
			if got := f.called("drbdsetup new-current-uuid 0 --clear-bitmap"); got != tc.want {
				t.Errorf("new-current-uuid --clear-bitmap called = %v; calls %v", got, f.calls)
			}
		})
	}
}

func waitSynced(t *testing.T, r *Resource) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		w := r.w
		r.mu.Unlock()
		if _, ok := w.state(); ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("watcher never finished its initial dump")
}

func TestPromote(t *testing.T) {
	cases := []struct {
		name     string
		state    string
		primary  result
		wantCall bool
		wantErr  error
		kind     services.Kind
	}{
		{"UpToDate secondary is promoted", events84Initial, ok(""), true, nil, 0},
		{"Outdated is refused before drbdadm runs", secondaryStandalone, ok(""), false, ErrNoUpToDateDisk, services.Refused},
		{"Inconsistent is refused", freshPair84, ok(""), false, ErrNoUpToDateDisk, services.Refused},
		{"already primary is a no-op", strings.Replace(events84Initial, "role:Secondary suspended", "role:Primary suspended", 1), ok(""), false, nil, 0},
		{"peer primary: drbdadm refuses", events84Initial, failed(11, "0: State change failed: (-1) Multiple primaries not allowed by config\n"), true, ErrTwoPrimaries, services.Refused},
		{"fencing refused", events84Initial, failed(11, "0: State change failed: (-7) Refusing to be Primary while peer is not outdated\n"), true, ErrPeerNotOutdated, services.Refused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdsetup events2 --now --statistics r0", ok(tc.state)).on("drbdadm primary r0", tc.primary)
			r := newTest(t, labConfig(t, "head-a"), f, tc.state)
			err := r.Promote(context.Background())
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || services.KindOf(err) != tc.kind) {
				t.Fatalf("err = %v (kind %v), want %v", err, services.KindOf(err), tc.wantErr)
			}
			if got := f.called("drbdadm primary r0"); got != tc.wantCall {
				t.Errorf("drbdadm primary called = %v", got)
			}
			if r.want() != (err == nil) {
				t.Errorf("wantPrimary = %v after err %v", r.want(), err)
			}
		})
	}
}

func TestOutdate(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  result
		kind services.Kind // -1: no error
	}{
		{"outdated", ok(""), -1},
		{"refused while connected", failed(17, "0: State change failed: (-10) State change was refused by peer node\n"), services.Refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdadm outdate r0", tc.res)
			r := newTest(t, labConfig(t, "head-b"), f, secondaryStandalone)
			err := r.Outdate(context.Background())
			switch {
			case !f.called("drbdadm outdate r0"):
				t.Fatalf("no drbdadm outdate: %v", f.calls)
			case tc.kind < 0 && err != nil:
				t.Fatalf("outdate: %v", err)
			case tc.kind >= 0 && (err == nil || services.KindOf(err) != tc.kind):
				t.Fatalf("outdate: %v, want kind %v", err, tc.kind)
			}
		})
	}
}

func TestDemoteAndStop(t *testing.T) {
	primary := strings.Replace(events84Initial, "role:Secondary suspended", "role:Primary suspended", 1)
	f := newFake().on("drbdsetup events2 --now --statistics r0", ok(primary)).
		on("drbdadm secondary r0", failed(11, "0: State change failed: (-12) Device is held open by someone\n"), ok(""))
	r := newTest(t, labConfig(t, "head-a"), f, primary)
	err := r.Demote(context.Background())
	if !errors.Is(err, ErrHeldOpen) || services.KindOf(err) != services.Failed {
		t.Fatalf("demote while held open: %v", err)
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !f.called("drbdadm down r0") {
		t.Error("no down")
	}
	// Stop on a resource that is not up does nothing.
	f2 := newFake().on("drbdsetup events2 --now --statistics r0", ok(notUp))
	r2 := newTest(t, labConfig(t, "head-a"), f2, notUp)
	if err := r2.Stop(context.Background()); err != nil || f2.called("drbdadm") {
		t.Errorf("stop of a down resource: %v, calls %v", err, f2.calls)
	}
}

func TestEvaluate(t *testing.T) {
	good := State{Configured: true, Role: "Secondary", PeerRole: "Secondary", Connection: "Connected", Replication: "Established",
		Disk: "UpToDate", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 100}
	mod := func(f func(*State)) State { s := good; f(&s); return s }
	cases := []struct {
		name    string
		st      State
		primary bool
		kind    services.Kind // -1: healthy; -2: healthy while the role settles
	}{
		{"healthy secondary", good, false, -1},
		{"healthy primary", mod(func(s *State) { s.Role = "Primary" }), true, -1},
		{"not configured", State{}, false, services.Failed},
		{"lost primary role", good, true, services.Failed},
		{"unexpected primary", mod(func(s *State) { s.Role = "Primary" }), false, services.Failed},
		{"diskless", mod(func(s *State) { s.Disk = "Diskless" }), false, services.Failed},
		{"suspended", mod(func(s *State) { s.Suspended = "fencing" }), false, services.Degraded},
		{"primary on outdated data", mod(func(s *State) { s.Role = "Primary"; s.Disk = "Outdated" }), true, services.Failed},
		{"peer gone", mod(func(s *State) { s.Connection = "Connecting"; s.PeerDisk = "DUnknown" }), false, services.Degraded},
		{"split brain", mod(func(s *State) { s.Role = "Primary"; s.Connection = "StandAlone" }), true, services.Degraded},
		{"resync", mod(func(s *State) { s.Replication = "SyncTarget"; s.Disk = "Inconsistent"; s.SyncPercent = 12 }), false, services.Degraded},
		{"peer outdated", mod(func(s *State) { s.PeerDisk = "Outdated" }), false, services.Degraded},
		{"still primary while demoting", mod(func(s *State) { s.Role = "Primary" }), false, -2},
		{"still secondary while promoting", good, true, -2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			settling := tc.kind == -2 // a role change under way or just done
			err := evaluate(tc.st, tc.primary, !settling)
			if tc.kind < 0 {
				if err != nil {
					t.Fatalf("unhealthy: %v", err)
				}
				return
			}
			if err == nil || services.KindOf(err) != tc.kind {
				t.Fatalf("err = %v, want kind %v", err, tc.kind)
			}
		})
	}
}

func TestWatcherState(t *testing.T) {
	f := newFake()
	r := newTest(t, labConfig(t, "head-a"), f, events84Initial+"change resource name:r0 role:Primary\n")
	r.watch()
	deadline := time.Now().Add(2 * time.Second)
	for r.State().Role != "Primary" {
		if time.Now().After(deadline) {
			t.Fatalf("state never followed the stream: %+v", r.State())
		}
		time.Sleep(time.Millisecond)
	}
	if st := r.State(); st.Connection != "Connected" || st.PeerDisk != "UpToDate" {
		t.Errorf("state %+v", st)
	}
	r.unwatch()
	if st := r.State(); st != (State{}) {
		t.Errorf("state after unwatch: %+v", st)
	}
}

// A StandAlone connection is reconnected after the grace, then with a
// doubling wait; a connection that came back starts the count afresh.
func TestMonitorReconnectsStandAlone(t *testing.T) {
	standalone := strings.Replace(secondaryStandalone, "disk:Outdated", "disk:UpToDate", 1)
	const query = "drbdsetup events2 --now --statistics r0"
	f := newFake()
	r := newTest(t, labConfig(t, "head-a"), f, "")
	t0 := time.Unix(1000, 0)
	now := t0
	r.now = func() time.Time { return now }
	adjusts := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := 0
		for _, c := range f.calls {
			if c == "drbdadm adjust r0" {
				n++
			}
		}
		return n
	}
	monitorAt := func(d time.Duration, state string) error {
		t.Helper()
		now = t0.Add(d)
		f.mu.Lock()
		f.resp[query] = []result{ok(state)}
		f.mu.Unlock()
		return r.Monitor(context.Background())
	}
	for _, step := range []struct {
		at      time.Duration
		state   string
		adjusts int
	}{
		{0, standalone, 0},
		{29 * time.Second, standalone, 0},
		{30 * time.Second, standalone, 1},
		{31 * time.Second, standalone, 1},
		{59 * time.Second, standalone, 1},
		{60 * time.Second, standalone, 2},  // the second try waits 30 s
		{100 * time.Second, standalone, 2}, // the third waits 60 s
		{120 * time.Second, standalone, 3},
		{121 * time.Second, events84Initial, 3},
		{122 * time.Second, standalone, 3}, // a new disconnect: the grace again
		{151 * time.Second, standalone, 3},
		{152 * time.Second, standalone, 4},
	} {
		err := monitorAt(step.at, step.state)
		if step.state == standalone && (services.KindOf(err) != services.Degraded || !strings.Contains(fmt.Sprint(err), "StandAlone")) {
			t.Errorf("at %v: monitor = %v, want degraded StandAlone", step.at, err)
		}
		if got := adjusts(); got != step.adjusts {
			t.Fatalf("at %v: %d reconnects, want %d", step.at, got, step.adjusts)
		}
	}
}
