package supervise

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/graph"
)

// fakeClock moves only when told. After registers a timer; Advance fires
// the due ones at once, so tests can step through minutes of intervals
// and backoff without sleeping.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	d  time.Duration
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), d: d, ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.ch <- c.now
		return true
	})
}

// waiting counts pending timers that were asked for d.
func (c *fakeClock) waiting(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.d == d {
			n++
		}
	}
	return n
}

// recorder keeps the order of start and stop calls across resources.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(c string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = nil
}

// fake is a scripted Resource. Each op plays its queue of results; the
// last one repeats.
type fake struct {
	name     string
	rec      *recorder
	unblock  chan struct{} // closed at test end, frees hung calls
	mu       sync.Mutex
	script   map[string][]error
	hang     map[string]bool
	panics   map[string]bool
	monitors atomic.Int64
}

func (f *fake) set(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[op] = errs
}

// fail builds the typed error f would return for op.
func (f *fake) fail(op string, k services.Kind) error {
	return services.Errorf(f.name, op, k, "injected %s", k)
}

func (f *fake) do(op string) error {
	f.mu.Lock()
	hang, panics := f.hang[op], f.panics[op]
	var err error
	if q := f.script[op]; len(q) > 0 {
		err = q[0]
		if len(q) > 1 {
			f.script[op] = q[1:]
		}
	}
	f.mu.Unlock()
	if hang {
		<-f.unblock // ignores ctx on purpose: a stuck umount does
	}
	if panics {
		panic("fake " + f.name + " " + op)
	}
	return err
}

func (f *fake) Name() string { return f.name }

func (f *fake) Start(context.Context) error {
	f.rec.add("start " + f.name)
	return f.do("start")
}

func (f *fake) Stop(context.Context) error {
	f.rec.add("stop " + f.name)
	return f.do("stop")
}

func (f *fake) Warm(context.Context) error {
	f.rec.add("warm " + f.name)
	return f.do("warm")
}

func (f *fake) Monitor(context.Context) error {
	f.monitors.Add(1)
	return f.do("monitor")
}

// syncBuffer lets the slog handler and the test share a buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// testPolicy: intervals and backoff steps are all distinct durations,
// so a test can tell a monitor timer from a backoff timer.
func testPolicy() graph.Policy {
	return graph.Policy{
		StartTimeout:       time.Second,
		StopTimeout:        time.Second,
		MonitorInterval:    time.Minute,
		MonitorTimeout:     time.Second,
		MigrationThreshold: 3,
		FailureTimeout:     10 * time.Minute,
		Backoff:            graph.BackoffPolicy{Initial: time.Second, Max: 4 * time.Second, Multiplier: 2},
	}
}

var startOrder = []string{"raid10", "drbd", "lvm", "xfs", "nfs", "smb", "vip"}

func reversed(s []string) []string {
	s = slices.Clone(s)
	slices.Reverse(s)
	return s
}

func prefixed(p string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + " " + n
	}
	return out
}

type harness struct {
	t           *testing.T
	clk         *fakeClock
	rec         *recorder
	log         *syncBuffer
	f           map[string]*fake
	sup         *Supervisor
	pol         graph.Policy
	mu          sync.Mutex
	escalations []string
	escErrs     []error
	onEscalate  func(string, error) // extra hook, set before run
}

// newHarness builds the NAS stack from fakes: raid10 and drbd on both
// heads, lvm, xfs, nfs, smb and the vip on the active one.
func newHarness(t *testing.T, pol graph.Policy) *harness {
	t.Helper()
	h := &harness{t: t, clk: newFakeClock(), rec: &recorder{}, log: &syncBuffer{}, f: map[string]*fake{}, pol: pol}
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	mk := func(name string, role graph.Role, deps ...string) graph.Node {
		f := &fake{name: name, rec: h.rec, unblock: unblock,
			script: map[string][]error{}, hang: map[string]bool{}, panics: map[string]bool{}}
		h.f[name] = f
		return graph.Node{Resource: f, Role: role, DependsOn: deps, Policy: pol}
	}
	vip := mk("vip", graph.ActiveOnly, "nfs", "smb")
	vip.Last = true
	g, err := graph.New(
		mk("raid10", graph.Both),
		mk("drbd", graph.Both, "raid10"),
		mk("lvm", graph.ActiveOnly, "drbd"),
		mk("xfs", graph.ActiveOnly, "lvm"),
		mk("nfs", graph.ActiveOnly, "xfs"),
		mk("smb", graph.ActiveOnly, "xfs"),
		vip,
	)
	if err != nil {
		t.Fatal(err)
	}
	h.sup = New(g, Options{
		Logger: slog.New(slog.NewTextHandler(h.log, nil)),
		Clock:  h.clk,
		OnEscalate: func(name string, err error) {
			h.mu.Lock()
			h.escalations = append(h.escalations, name)
			h.escErrs = append(h.escErrs, err)
			hook := h.onEscalate
			h.mu.Unlock()
			if hook != nil {
				hook(name, err)
			}
		},
	})
	return h
}

func (h *harness) escalated() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.escalations)
}

// start brings the stack up and forgets those calls.
func (h *harness) start() {
	h.t.Helper()
	if err := h.sup.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.rec.reset()
}

// run starts Run and waits until every monitor loop waits on its timer.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.sup.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-done
	})
	h.settle()
}

// settle waits until every monitor loop is back waiting on its timer,
// so every probe fired so far has been recorded.
func (h *harness) settle() {
	h.t.Helper()
	eventually(h.t, "monitor loops waiting", func() bool {
		return h.clk.waiting(h.pol.MonitorInterval) == len(startOrder)
	})
}

// tick fires one round of monitors and waits for all of them.
func (h *harness) tick() {
	h.t.Helper()
	h.settle()
	h.clk.Advance(h.pol.MonitorInterval)
	h.settle()
}

// backoff waits for the restart's backoff timer of d and fires it,
// after checking it does not fire a moment early.
func (h *harness) backoff(d time.Duration) {
	h.t.Helper()
	eventually(h.t, "backoff timer of "+d.String(), func() bool { return h.clk.waiting(d) == 1 })
	h.clk.Advance(d - time.Millisecond)
	if h.clk.waiting(d) != 1 {
		h.t.Fatalf("backoff of %s fired before its time", d)
	}
	h.clk.Advance(time.Millisecond)
}

func (h *harness) status(name string) ResourceStatus {
	h.t.Helper()
	for _, s := range h.sup.Status() {
		if s.Name == name {
			return s
		}
	}
	h.t.Fatalf("no status for %s", name)
	return ResourceStatus{}
}

// wantCalls waits for exactly want, and for the supervisor to be idle.
func (h *harness) wantCalls(what string, want []string) {
	h.t.Helper()
	h.wantCallsSoFar(what, want)
	// The last call seen may be a restart's last step: wait for the
	// restart to finish, or the next probe would find it still busy.
	eventually(h.t, what+": idle", func() bool {
		if !h.sup.ops.TryLock() {
			return false
		}
		h.sup.ops.Unlock()
		return true
	})
}

// wantCallsSoFar waits for exactly want, in the middle of a restart.
func (h *harness) wantCallsSoFar(what string, want []string) {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for got := h.rec.get(); !slices.Equal(got, want); got = h.rec.get() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

// eventually polls cond for up to 2 s: the goroutines it waits for are
// quick, only their scheduling is not.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}
