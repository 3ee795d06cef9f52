package supervise

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/graph"
)

func TestStartAndStopOrder(t *testing.T) {
	h := newHarness(t, testPolicy())
	ctx := context.Background()
	if err := h.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantCalls("start", prefixed("start", startOrder...))
	for _, s := range h.sup.Status() {
		if s.State != Running {
			t.Errorf("%s is %s after Start", s.Name, s.State)
		}
	}
	// Start again is a no-op: everything is up.
	if err := h.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantCalls("second start", prefixed("start", startOrder...))

	h.rec.reset()
	if err := h.sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantCalls("stop", prefixed("stop", reversed(startOrder)...))
	for _, s := range h.sup.Status() {
		if s.State != Stopped {
			t.Errorf("%s is %s after Stop", s.Name, s.State)
		}
	}
	for _, line := range []string{"start raid10 ok", "stop nfs ok", "stop vip ok"} {
		if !strings.Contains(h.log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, h.log)
		}
	}
}

func TestStartFailureRollsBack(t *testing.T) {
	tests := []struct {
		name  string
		fail  string
		kind  services.Kind
		panic bool
		calls []string
	}{
		{"bottom fails", "raid10", services.Missing, false,
			[]string{"start raid10", "stop raid10"}},
		{"middle fails", "xfs", services.Refused, false,
			[]string{"start raid10", "start drbd", "start lvm", "start xfs",
				"stop xfs", "stop lvm", "stop drbd", "stop raid10"}},
		{"vip fails", "vip", services.Failed, false,
			append(prefixed("start", startOrder...), prefixed("stop", reversed(startOrder)...)...)},
		{"a panic is a failure, not a crash", "nfs", services.Failed, true,
			[]string{"start raid10", "start drbd", "start lvm", "start xfs", "start nfs",
				"stop nfs", "stop xfs", "stop lvm", "stop drbd", "stop raid10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testPolicy())
			f := h.f[tt.fail]
			if tt.panic {
				f.panics["start"] = true
			} else {
				f.set("start", f.fail("start", tt.kind))
			}
			err := h.sup.Start(context.Background())
			var e *services.Error
			if !errors.As(err, &e) {
				t.Fatalf("Start error %v carries no *services.Error", err)
			}
			if e.Resource != tt.fail || e.Kind != tt.kind || e.Op != "start" {
				t.Errorf("error is %s/%s/%s, want %s/start/%s", e.Resource, e.Op, e.Kind, tt.fail, tt.kind)
			}
			h.wantCalls("rollback", tt.calls)
			for _, s := range h.sup.Status() {
				if s.State != Stopped {
					t.Errorf("%s is %s after the rollback", s.Name, s.State)
				}
			}
		})
	}
}

func TestRoles(t *testing.T) {
	h := newHarness(t, testPolicy())
	ctx := context.Background()

	// The active layers refuse to start on a head whose DRBD is down.
	err := h.sup.StartRoles(ctx, graph.ActiveOnly)
	var e *services.Error
	if !errors.As(err, &e) || e.Kind != services.Refused || e.Resource != "lvm" {
		t.Fatalf("StartRoles(ActiveOnly) on a bare head = %v, want lvm refused", err)
	}
	h.wantCalls("nothing started", nil)

	steps := []struct {
		name  string
		do    func() error
		calls []string
	}{
		{"standby", func() error { return h.sup.StartRoles(ctx, graph.Both) },
			[]string{"start raid10", "start drbd"}},
		{"take over", func() error { return h.sup.Start(ctx) },
			prefixed("start", "lvm", "xfs", "nfs", "smb", "vip")},
		{"back to standby", func() error { return h.sup.StopRoles(ctx, graph.ActiveOnly) },
			prefixed("stop", "vip", "smb", "nfs", "xfs", "lvm")},
	}
	for _, st := range steps {
		h.rec.reset()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		h.wantCalls(st.name, st.calls)
	}
	if s := h.status("drbd"); s.State != Running {
		t.Errorf("drbd is %s on the standby", s.State)
	}
}

// Warm readies only the stopped layers of the roles asked for, and goes
// on past a layer whose warming fails.
func TestWarm(t *testing.T) {
	h := newHarness(t, testPolicy())
	ctx := context.Background()
	h.f["xfs"].set("warm", errors.New("injected"))
	steps := []struct {
		name  string
		do    func() error
		roles []graph.Role
		calls []string
	}{
		{"bare head", nil, []graph.Role{graph.ActiveOnly}, prefixed("warm", "lvm", "xfs", "nfs", "smb", "vip")},
		{"standby", func() error { return h.sup.StartRoles(ctx, graph.Both) }, []graph.Role{graph.ActiveOnly},
			prefixed("warm", "lvm", "xfs", "nfs", "smb", "vip")},
		{"standby, shared layers", nil, []graph.Role{graph.Both}, nil},
		{"active", func() error { return h.sup.Start(ctx) }, []graph.Role{graph.ActiveOnly}, nil},
		{"back to standby", func() error { return h.sup.StopRoles(ctx, graph.ActiveOnly) }, []graph.Role{graph.ActiveOnly},
			prefixed("warm", "lvm", "xfs", "nfs", "smb", "vip")},
	}
	for _, st := range steps {
		if st.do != nil {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		h.rec.reset()
		h.sup.Warm(ctx, st.roles...)
		h.wantCalls(st.name, st.calls)
	}
	if !strings.Contains(h.log.String(), "warm xfs: injected") {
		t.Errorf("the failed warming is not logged:\n%s", h.log.String())
	}
}

func TestStopContinuesPastFailure(t *testing.T) {
	tests := []struct {
		name string
		hang bool
		kind services.Kind
		log  string
	}{
		{"failing stop", false, services.Failed, "stop nfs failed"},
		{"hung stop is bounded by StopTimeout", true, services.Timeout, "stop nfs timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := testPolicy()
			pol.StopTimeout = 20 * time.Millisecond // real time: it bounds a real hang
			h := newHarness(t, pol)
			h.start()
			f := h.f["nfs"]
			if tt.hang {
				f.hang["stop"] = true
			} else {
				f.set("stop", f.fail("stop", services.Failed))
			}
			t0 := time.Now()
			err := h.sup.Stop(context.Background())
			if took := time.Since(t0); took > time.Second {
				t.Errorf("Stop took %s", took)
			}
			var e *services.Error
			if !errors.As(err, &e) || e.Resource != "nfs" || e.Kind != tt.kind {
				t.Fatalf("Stop = %v, want nfs %s", err, tt.kind)
			}
			h.wantCalls("every stop", prefixed("stop", reversed(startOrder)...))
			for _, s := range h.sup.Status() {
				want := Stopped
				if s.Name == "nfs" {
					want = Failed
				}
				if s.State != want {
					t.Errorf("%s is %s, want %s", s.Name, s.State, want)
				}
			}
			if !strings.Contains(h.log.String(), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, h.log)
			}
		})
	}
}

// restartXFS is what one local restart of xfs looks like.
var restartXFS = []string{
	"stop vip", "stop smb", "stop nfs", "stop xfs",
	"start xfs", "start nfs", "start smb", "start vip",
}

func TestMonitorOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		kind        services.Kind
		maintenance bool
		restart     bool
		escalate    bool
		state       State
		failCount   int
	}{
		{"failed restarts with dependents", services.Failed, false, true, false, Running, 1},
		{"timeout restarts with dependents", services.Timeout, false, true, false, Running, 1},
		{"config escalates at once", services.Config, false, false, true, Failed, 1},
		{"missing escalates at once", services.Missing, false, false, true, Failed, 1},
		{"refused escalates at once", services.Refused, false, false, true, Failed, 1},
		{"degraded is only reported", services.Degraded, false, false, false, Degraded, 0},
		{"maintenance: failed is only reported", services.Failed, true, false, false, Failed, 0},
		{"maintenance: config is only reported", services.Config, true, false, false, Failed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testPolicy())
			h.start()
			h.sup.Maintenance(tt.maintenance)
			h.run()
			f := h.f["xfs"]
			f.set("monitor", f.fail("monitor", tt.kind))
			h.tick()
			if tt.kind == services.Timeout {
				h.tick() // one timeout is probed again; two in a row count
			}
			switch {
			case tt.restart:
				h.backoff(time.Second)
				h.wantCalls("restart", restartXFS)
			case tt.escalate:
				eventually(t, "escalation", func() bool { return len(h.escalated()) == 1 })
			default:
				h.tick() // room for a wrong action to show
			}
			if !tt.restart {
				h.wantCalls("no action", nil)
			}
			if got, want := h.escalated(), map[bool][]string{true: {"xfs"}}[tt.escalate]; !slices.Equal(got, want) {
				t.Errorf("escalations = %v, want %v", got, want)
			}
			s := h.status("xfs")
			if s.State != tt.state || s.FailCount != tt.failCount || s.Escalated != tt.escalate {
				t.Errorf("xfs status = %+v, want state %s, fail count %d, escalated %v", s, tt.state, tt.failCount, tt.escalate)
			}
			if s.ErrorKind != tt.kind.String() {
				t.Errorf("error kind = %q, want %q", s.ErrorKind, tt.kind)
			}
			if tt.restart && (s.Restarts != 1 || h.status("vip").Restarts != 1 || h.status("lvm").Restarts != 0) {
				t.Errorf("restarts: xfs %d vip %d lvm %d, want 1 1 0", s.Restarts, h.status("vip").Restarts, h.status("lvm").Restarts)
			}
		})
	}
}

// A failed start during a restart counts as a failure and is retried
// after a longer pause: 1 s, 2 s, 4 s, then the 4 s cap.
func TestBackoff(t *testing.T) {
	pol := testPolicy()
	pol.MigrationThreshold = 10
	h := newHarness(t, pol)
	h.start()
	h.run()
	f := h.f["xfs"]
	f.set("monitor", f.fail("monitor", services.Failed), nil)
	bad := f.fail("start", services.Failed)
	f.set("start", bad, bad, bad, nil)

	h.tick()
	want := []string{"stop vip", "stop smb", "stop nfs", "stop xfs"}
	for _, d := range []time.Duration{1, 2, 4, 4} {
		h.wantCallsSoFar("stops before backoff", want)
		h.backoff(d * time.Second)
		want = append(want, "start xfs", "stop xfs")
	}
	want = append(want[:len(want)-1], "start nfs", "start smb", "start vip")
	h.wantCalls("restart after three failed starts", want)
	if s := h.status("xfs"); s.State != Running || s.FailCount != 4 || s.Restarts != 4 {
		t.Errorf("xfs = %+v, want running, 4 failures, 4 restarts", s)
	}
	if got := h.escalated(); len(got) != 0 {
		t.Errorf("escalated %v below the threshold", got)
	}
}

func TestThresholdEscalation(t *testing.T) {
	h := newHarness(t, testPolicy()) // threshold 3 within 10 min
	h.start()
	h.run()
	f := h.f["xfs"]
	f.set("monitor", f.fail("monitor", services.Failed))

	var want []string
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		h.tick()
		h.backoff(d)
		want = append(want, restartXFS...)
		h.wantCalls("restart", want)
	}
	h.tick()
	eventually(t, "escalation", func() bool { return len(h.escalated()) == 1 })
	h.mu.Lock()
	err := h.escErrs[0]
	h.mu.Unlock()
	if !strings.Contains(err.Error(), "migration-threshold 3") || services.KindOf(err) != services.Failed {
		t.Errorf("escalation error = %v", err)
	}
	// Given up on: more failures change nothing.
	h.tick()
	h.tick()
	h.wantCalls("no restart after escalation", want)
	if got := h.escalated(); !slices.Equal(got, []string{"xfs"}) {
		t.Errorf("escalations = %v, want one for xfs", got)
	}
	if s := h.status("xfs"); !s.Escalated || s.State != Failed || s.FailCount != 3 {
		t.Errorf("xfs = %+v", s)
	}

	// Cleanup makes failures count again, like a Pacemaker cleanup.
	if err := h.sup.Cleanup("xfs"); err != nil {
		t.Fatal(err)
	}
	h.tick()
	h.backoff(time.Second)
	h.wantCalls("restart after cleanup", append(want, restartXFS...))
	if err := h.sup.Cleanup("nosuch"); err == nil {
		t.Error("Cleanup of an unknown resource succeeded")
	}
}

func TestFailureTimeoutForgets(t *testing.T) {
	pol := testPolicy()
	pol.MigrationThreshold = 2
	pol.FailureTimeout = 90 * time.Second // one and a half monitor intervals
	h := newHarness(t, pol)
	h.start()
	h.run()
	f := h.f["xfs"]
	bad := f.fail("monitor", services.Failed)

	f.set("monitor", bad, nil)
	h.tick() // t=1m: failure 1
	h.backoff(time.Second)
	h.wantCalls("first restart", restartXFS)
	h.tick() // t=2m: healthy
	f.set("monitor", bad, nil)
	h.tick() // t=3m: the first failure is 2 min old, forgotten
	h.backoff(time.Second)
	h.wantCalls("second restart, not an escalation", append(slices.Clone(restartXFS), restartXFS...))
	if s := h.status("xfs"); s.FailCount != 1 {
		t.Errorf("fail count = %d after expiry, want 1", s.FailCount)
	}
	if got := h.escalated(); len(got) != 0 {
		t.Fatalf("escalated %v", got)
	}
	f.set("monitor", bad)
	h.tick() // t=4m: 1 min after the last one, within 90 s
	eventually(t, "escalation within the window", func() bool { return len(h.escalated()) == 1 })
}

func TestMaintenanceOff(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.sup.Maintenance(true)
	if !h.sup.InMaintenance() {
		t.Fatal("InMaintenance = false")
	}
	h.run()
	f := h.f["nfs"]
	f.set("monitor", f.fail("monitor", services.Failed))
	h.tick()
	h.tick()
	h.wantCalls("nothing in maintenance", nil)
	if n := f.monitors.Load(); n != 2 {
		t.Errorf("nfs probed %d times in maintenance, want 2", n)
	}
	h.sup.Maintenance(false)
	h.tick()
	h.backoff(time.Second)
	h.wantCalls("restart once out of maintenance", []string{"stop vip", "stop nfs", "start nfs", "start vip"})
}

// Stop during a restart's backoff wins: nothing comes back up after it.
func TestStopPreemptsRestart(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.run()
	f := h.f["xfs"]
	f.set("monitor", f.fail("monitor", services.Failed), nil)
	h.tick()
	eventually(t, "backoff", func() bool { return h.clk.waiting(time.Second) == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- h.sup.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Stop waited for the restart's backoff")
	}
	h.clk.Advance(time.Second)
	h.tick()
	want := append([]string{"stop vip", "stop smb", "stop nfs", "stop xfs"}, prefixed("stop", reversed(startOrder)...)...)
	h.wantCalls("stop only", want)
	if len(h.escalated()) != 0 {
		t.Errorf("escalated %v", h.escalated())
	}
}

// The HA layer reacts to an escalation by stopping the stack, from
// inside the callback: that must not deadlock.
func TestEscalateMayStop(t *testing.T) {
	h := newHarness(t, testPolicy())
	stopped := make(chan error, 1)
	h.onEscalate = func(string, error) { stopped <- h.sup.Stop(context.Background()) }
	h.start()
	h.run()
	f := h.f["lvm"]
	f.set("monitor", f.fail("monitor", services.Missing))
	h.tick()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Stop from OnEscalate deadlocked")
	}
	h.wantCalls("stop all", prefixed("stop", reversed(startOrder)...))
}

// A restart stop that fails escalates: a layer that will not stop
// cannot be restarted safely.
func TestStopFailureDuringRestartEscalates(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.run()
	h.f["xfs"].set("monitor", h.f["xfs"].fail("monitor", services.Failed))
	h.f["nfs"].set("stop", h.f["nfs"].fail("stop", services.Timeout))
	h.tick()
	eventually(t, "escalation", func() bool { return len(h.escalated()) == 1 })
	if got := h.escalated(); got[0] != "nfs" {
		t.Errorf("escalated %v, want nfs", got)
	}
	h.wantCalls("no start", []string{"stop vip", "stop smb", "stop nfs"})
}

func TestNextTakesLowestLayer(t *testing.T) {
	h := newHarness(t, testPolicy())
	for _, n := range []string{"vip", "nfs", "lvm"} {
		h.sup.pending[n] = event{name: n}
	}
	var got []string
	for ev, ok := h.sup.next(); ok; ev, ok = h.sup.next() {
		got = append(got, ev.name)
	}
	if want := []string{"lvm", "nfs", "vip"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func TestStatusJSON(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.run()
	h.tick()
	b, err := json.Marshal(h.sup.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"name":"raid10","role":"both","state":"running"`, `"role":"active"`, `"last_monitor":"2026-01-01T00:01:00Z"`, `"restarts":0`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("status JSON lacks %s:\n%s", s, b)
		}
	}
	if strings.Contains(string(b), "last_error") {
		t.Errorf("a healthy status shows an error:\n%s", b)
	}
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.run()
	if err := h.sup.Run(context.Background()); err == nil {
		t.Error("a second Run was accepted")
	}
}

// Everything at once on the real clock, for the race detector: monitors
// failing at random, Start, Stop, Maintenance and Status from several
// goroutines. The assertion is that it ends, and ends stopped.
func TestConcurrency(t *testing.T) {
	pol := testPolicy()
	pol.MonitorInterval = time.Millisecond
	pol.Backoff = graph.BackoffPolicy{Initial: time.Millisecond, Max: 2 * time.Millisecond, Multiplier: 2}
	pol.MigrationThreshold = -1
	h := newHarness(t, pol)
	h.sup.clock = realClock{}
	r := rand.New(rand.NewPCG(5, 6))
	for _, name := range startOrder {
		f := h.f[name]
		var q []error
		for range 50 {
			var err error
			if r.IntN(4) == 0 {
				err = f.fail("monitor", []services.Kind{services.Failed, services.Timeout, services.Degraded}[r.IntN(3)])
			}
			q = append(q, err)
		}
		f.set("monitor", append(q, nil)...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- h.sup.Run(ctx) }()

	var wg sync.WaitGroup
	deadline := time.Now().Add(150 * time.Millisecond)
	for i := range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				switch i {
				case 0:
					_ = h.sup.Start(ctx)
				case 1:
					time.Sleep(5 * time.Millisecond)
					_ = h.sup.StopRoles(ctx, graph.ActiveOnly)
				case 2:
					h.sup.Maintenance(time.Now().UnixNano()%2 == 0)
					time.Sleep(time.Millisecond)
				case 3:
					if _, err := json.Marshal(h.sup.Status()); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := h.sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	for _, s := range h.sup.Status() {
		if s.State != Stopped {
			t.Errorf("%s is %s after the final Stop", s.Name, s.State)
		}
	}
}

// One monitor timeout followed by a good probe is only logged: a loaded
// host must not restart a layer (and the stack above it) for it.
func TestMonitorTimeoutOnceIsProbedAgain(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.run()
	f := h.f["xfs"]
	f.set("monitor", f.fail("monitor", services.Timeout), nil)
	h.tick()
	h.tick()
	h.tick()
	h.wantCalls("no action", nil)
	if s := h.status("xfs"); s.State != Running || s.FailCount != 0 || s.Restarts != 0 {
		t.Errorf("xfs after one timeout and good probes: %+v", s)
	}
}

// The VIP fails, and while it is being restarted a layer under it fails
// too (a downed link): the restart moves down to that layer instead of
// counting the VIP's hopeless starts up to its threshold.
func TestRestartMovesToFailedLayerBelow(t *testing.T) {
	h := newHarness(t, testPolicy())
	h.start()
	h.run()
	vip := h.f["vip"]
	vip.set("monitor", vip.fail("monitor", services.Failed), nil)
	vip.set("start", vip.fail("start", services.Failed), nil)
	h.tick()
	h.wantCallsSoFar("vip stopped", []string{"stop vip"})
	// xfs's monitor fails during the VIP's backoff.
	xfsErr := h.f["xfs"].fail("monitor", services.Failed)
	h.sup.mu.Lock()
	x := h.sup.res["xfs"]
	x.state, x.lastErr = Failed, xfsErr
	h.sup.pending["xfs"] = event{name: "xfs", err: xfsErr, gen: x.gen, epoch: h.sup.epoch}
	h.sup.mu.Unlock()
	h.backoff(time.Second)
	h.wantCallsSoFar("vip start failed, xfs stopped", []string{"stop vip", "start vip",
		"stop vip", "stop smb", "stop nfs", "stop xfs"})
	h.backoff(time.Second) // xfs's first failure, not the VIP's second
	h.wantCalls("xfs and all above it back", []string{"stop vip", "start vip",
		"stop vip", "stop smb", "stop nfs", "stop xfs", "start xfs", "start nfs", "start smb", "start vip"})
	if s := h.status("vip"); s.FailCount != 1 || s.State != Running {
		t.Errorf("vip = %+v", s)
	}
	if s := h.status("xfs"); s.FailCount != 1 || s.State != Running || s.Restarts != 1 {
		t.Errorf("xfs = %+v", s)
	}
	if len(h.escalated()) != 0 {
		t.Errorf("escalated %v", h.escalated())
	}
	if !strings.Contains(h.log.String(), "xfs, below it, failed too") {
		t.Errorf("log:\n%s", h.log.String())
	}
}
