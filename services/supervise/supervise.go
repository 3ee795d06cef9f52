// Package supervise runs a services/graph on one head: it starts the
// layers bottom-up, stops them top-down, probes each on its interval and
// restarts a failed layer together with everything that sits on it.
// Failures are counted the way Pacemaker counts them (migration-threshold
// within failure-timeout); past the threshold, or on a failure a restart
// cannot fix, it stops trying and escalates to the HA layer, which fails
// over.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/graph"
)

// State is where a resource is in its life cycle.
type State string

const (
	Stopped  State = "stopped"
	Starting State = "starting"
	Running  State = "running"
	Failed   State = "failed"
	Stopping State = "stopping"
	Degraded State = "degraded" // serving, with reduced redundancy
)

// Clock is the time source; tests pass a fake one to drive monitor
// intervals and backoff without sleeping. Operation timeouts use real
// time (context deadlines), since they bound real hangs.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

// RealClock is the wall clock.
var RealClock Clock = realClock{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options configures a Supervisor. Every field may be left zero.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	Clock  Clock        // nil: the real clock
	// OnEscalate is called when a resource reaches its migration-threshold
	// or fails in a way a restart cannot fix (Config, Missing, Refused, or
	// a stop that fails during a restart). The supervisor has stopped
	// acting on that resource; the HA layer fails over. It is called from
	// Run's goroutine with no lock held, so it may call Stop.
	OnEscalate func(name string, err error)
}

// Duration prints as "1.5s" in JSON.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ResourceStatus is one line of `tandem status`.
type ResourceStatus struct {
	Name      string     `json:"name"`
	Role      graph.Role `json:"role"`
	State     State      `json:"state"`
	LastError string     `json:"last_error,omitempty"`
	// ErrorKind is the services.Kind of LastError.
	ErrorKind string `json:"error_kind,omitempty"`
	// FailCount counts the failures still within the failure timeout.
	FailCount int  `json:"fail_count"`
	Escalated bool `json:"escalated,omitempty"`
	Restarts  int  `json:"restarts"`
	// LastMonitor is when the last probe started, MonitorTook how long it ran.
	LastMonitor time.Time `json:"last_monitor,omitzero"`
	MonitorTook Duration  `json:"monitor_took,omitzero"`
}

// rstate is the supervisor's view of one resource; guarded by mu.
type rstate struct {
	node        graph.Node
	state       State
	want        bool // should be up: set by Start, cleared by Stop
	lastErr     error
	failures    []time.Time // within the failure timeout
	escalated   bool
	recovering  bool // being cycled by a restart: monitors keep off
	restarts    int
	lastMon     time.Time
	monTimeouts int // monitor timeouts in a row, not yet acted on
	monTook     time.Duration
	gen         uint64 // bumped on every start and stop: dates monitor results
}

// event is a monitor failure waiting for the action loop.
type event struct {
	name       string
	err        error
	gen, epoch uint64
}

// Supervisor runs one graph. Its methods are safe for concurrent use.
type Supervisor struct {
	g          *graph.Graph
	log        *slog.Logger
	clock      Clock
	onEscalate func(string, error)
	order      []string
	res        map[string]*rstate // fixed after New

	ops sync.Mutex // one of Start, Stop or a restart at a time

	mu          sync.Mutex
	maintenance bool
	running     bool   // Run is active
	epoch       uint64 // bumped by Start and Stop: voids queued restarts
	cancelRec   context.CancelFunc
	pending     map[string]event
	wake        chan struct{}
}

// New returns a Supervisor for g with every resource stopped.
func New(g *graph.Graph, opts Options) *Supervisor {
	s := &Supervisor{
		g:          g,
		log:        opts.Logger,
		clock:      opts.Clock,
		onEscalate: opts.OnEscalate,
		order:      g.StartOrder(),
		res:        map[string]*rstate{},
		pending:    map[string]event{},
		wake:       make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	for _, n := range g.Nodes() {
		s.res[n.Name()] = &rstate{node: n, state: Stopped}
	}
	return s
}

// Start brings every resource up, bottom-up. Resources already running
// are left alone. If one fails to start, the ones this call started are
// stopped again, top-down (the failed one first, to clear a half-done
// start), and its *services.Error is returned, wrapped.
func (s *Supervisor) Start(ctx context.Context) error {
	return s.StartRoles(ctx, graph.Both, graph.ActiveOnly)
}

// StartRoles is Start limited to nodes of the given roles: the standby
// runs StartRoles(ctx, graph.Both); taking over is then Start, which
// only adds the ActiveOnly layers.
func (s *Supervisor) StartRoles(ctx context.Context, roles ...graph.Role) error {
	s.preempt()
	s.ops.Lock()
	defer s.ops.Unlock()

	var started []string
	for _, name := range s.order {
		r := s.res[name]
		if !slices.Contains(roles, r.node.Role) {
			continue
		}
		s.mu.Lock()
		up := r.state == Running || r.state == Degraded
		r.want = true
		s.mu.Unlock()
		if up {
			continue
		}
		undo := started
		err := s.unmet(name)
		if err == nil {
			if err = s.startOne(ctx, r, "start"); err == nil {
				started = append(started, name)
				continue
			}
			undo = append(undo, name) // it may be half up
		}
		errs := []error{err}
		s.mu.Lock()
		r.want = false
		for _, n := range undo {
			s.res[n].want = false
		}
		s.mu.Unlock()
		for _, n := range slices.Backward(undo) {
			if serr := s.stopOne(ctx, s.res[n], "stop"); serr != nil {
				errs = append(errs, serr)
			}
		}
		return fmt.Errorf("supervise: start %s (rolled back %d started): %w", name, len(started), errors.Join(errs...))
	}
	return nil
}

// Warm readies the stopped layers of the given roles for their next
// start (services.Warmer) and logs what each took. It holds no operation
// lock: warming touches nothing a start or stop depends on, and a layer
// that is up or starting is skipped.
func (s *Supervisor) Warm(ctx context.Context, roles ...graph.Role) {
	var took []any
	for _, name := range s.order {
		r := s.res[name]
		w, ok := r.node.Resource.(services.Warmer)
		if !ok || !slices.Contains(roles, r.node.Role) {
			continue
		}
		s.mu.Lock()
		idle := r.state == Stopped && !r.want
		s.mu.Unlock()
		if !idle || ctx.Err() != nil {
			continue
		}
		t0 := s.clock.Now()
		if err := w.Warm(ctx); err != nil {
			s.log.Warn("warm "+name+": "+err.Error(), "resource", name)
			continue
		}
		took = append(took, name, s.clock.Now().Sub(t0).Round(time.Millisecond).String())
	}
	if len(took) > 0 {
		s.log.Info("warmed the takeover path", took...)
	}
}

// unmet refuses to start a node whose dependency is down, e.g. the
// ActiveOnly layers on a head whose DRBD is not up.
func (s *Supervisor) unmet(name string) error {
	n := s.res[name].node
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range n.DependsOn {
		if st := s.res[d].state; st != Running && st != Degraded {
			return services.Errorf(name, "start", services.Refused, "dependency %s is %s", d, st)
		}
	}
	return nil
}

// Stop stops every resource top-down, each bounded by its StopTimeout.
// A failed or hung stop is logged and reported, and the next resource is
// still stopped: on a lost quorum, getting the VIP and the exports down
// matters more than one stubborn layer. Whether a hang ends in a
// watchdog reset is the caller's call.
func (s *Supervisor) Stop(ctx context.Context) error {
	return s.StopRoles(ctx, graph.Both, graph.ActiveOnly)
}

// StopRoles is Stop limited to nodes of the given roles: going from
// active to standby is StopRoles(ctx, graph.ActiveOnly).
func (s *Supervisor) StopRoles(ctx context.Context, roles ...graph.Role) error {
	s.preempt()
	s.ops.Lock()
	defer s.ops.Unlock()

	var errs []error
	for _, name := range slices.Backward(s.order) {
		r := s.res[name]
		if !slices.Contains(roles, r.node.Role) {
			continue
		}
		s.mu.Lock()
		r.want = false
		s.mu.Unlock()
		// Stop even what we think is stopped: stops are idempotent, and
		// after a crash of this process our view may be wrong.
		if err := s.stopOne(ctx, r, "stop"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("supervise: stop: %d of the resources did not stop: %w", len(errs), err)
	}
	return nil
}

// preempt voids queued restarts and cancels the one in flight, so an
// explicit Start or Stop never waits out a backoff or races a restart.
func (s *Supervisor) preempt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	clear(s.pending)
	if s.cancelRec != nil {
		s.cancelRec()
	}
}

// Maintenance switches maintenance mode. Monitors keep probing and
// Status keeps reporting, but failures are neither counted nor acted on.
// A restart already under way finishes.
func (s *Supervisor) Maintenance(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maintenance != on {
		msg := "maintenance off: failures are acted on again"
		if on {
			msg = "maintenance on: monitors report, nothing is restarted"
		}
		s.log.Info(msg, "maintenance", on)
	}
	s.maintenance = on
	clear(s.pending)
}

// InMaintenance reports whether maintenance mode is on.
func (s *Supervisor) InMaintenance() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maintenance
}

// Cleanup forgets a resource's failures and its escalation, like
// Pacemaker's resource cleanup, so failures are acted on again.
func (s *Supervisor) Cleanup(name string) error {
	r, ok := s.res[name]
	if !ok {
		return fmt.Errorf("supervise: cleanup: no resource %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.failures, r.escalated = nil, false
	s.log.Info("cleanup "+name, "resource", name)
	return nil
}

// Status reports every resource in start order.
func (s *Supervisor) Status() []ResourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	out := make([]ResourceStatus, 0, len(s.order))
	for _, name := range s.order {
		r := s.res[name]
		st := ResourceStatus{
			Name:        name,
			Role:        r.node.Role,
			State:       r.state,
			FailCount:   len(r.recentFailures(now)),
			Escalated:   r.escalated,
			Restarts:    r.restarts,
			LastMonitor: r.lastMon,
			MonitorTook: Duration(r.monTook),
		}
		if r.lastErr != nil {
			st.LastError = r.lastErr.Error()
			st.ErrorKind = services.KindOf(r.lastErr).String()
		}
		out = append(out, st)
	}
	return out
}

// recentFailures drops failures older than the failure timeout.
func (r *rstate) recentFailures(now time.Time) []time.Time {
	ft := r.node.Policy.FailureTimeout
	if ft < 0 {
		return r.failures
	}
	return slices.DeleteFunc(r.failures, func(t time.Time) bool { return now.Sub(t) >= ft })
}

func (s *Supervisor) startOne(ctx context.Context, r *rstate, op string) error {
	name := r.node.Name()
	s.mu.Lock()
	r.state = Starting
	r.gen++
	s.mu.Unlock()
	t0 := s.clock.Now()
	err := s.call(ctx, name, op, r.node.Policy.StartTimeout, r.node.Resource.Start)
	took := s.clock.Now().Sub(t0)

	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		r.state, r.escalated = Running, false
	case services.KindOf(err) == services.Degraded:
		// Up with less redundancy (a RAID10 missing a disk): the
		// stack above must still come up.
		r.state, r.lastErr, r.escalated = Degraded, err, false
		s.logOp(slog.LevelWarn, op, name, "degraded", took, err)
		return nil
	default:
		r.state, r.lastErr = Failed, err
	}
	s.logOp(levelOf(err), op, name, result(err), took, err)
	return err
}

func (s *Supervisor) stopOne(ctx context.Context, r *rstate, op string) error {
	name := r.node.Name()
	s.mu.Lock()
	r.state = Stopping
	r.gen++
	s.mu.Unlock()
	t0 := s.clock.Now()
	err := s.call(ctx, name, op, r.node.Policy.StopTimeout, r.node.Resource.Stop)
	took := s.clock.Now().Sub(t0)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		r.state = Stopped
	} else {
		// Its real state is unknown now: say so.
		r.state, r.lastErr = Failed, err
	}
	s.logOp(levelOf(err), op, name, result(err), took, err)
	return err
}

// call runs one resource operation bounded by timeout. The bound holds
// even if the resource ignores its context (a stuck umount): the call is
// abandoned and reported as a Timeout. A panicking resource becomes a
// Failed error rather than taking PID 1, and the kernel, down with it.
func (s *Supervisor) call(ctx context.Context, name, op string, timeout time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- services.Errorf(name, op, services.Failed, "panic: %v", p)
			}
		}()
		done <- fn(ctx)
	}()
	select {
	case err := <-done:
		return typed(name, op, err)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &services.Error{Resource: name, Op: op, Kind: services.Timeout,
				Err: fmt.Errorf("no answer within %s: %w", timeout, ctx.Err())}
		}
		return &services.Error{Resource: name, Op: op, Kind: services.Failed, Err: fmt.Errorf("abandoned: %w", ctx.Err())}
	}
}

// typed makes sure every error the supervisor keeps is a *services.Error.
func typed(name, op string, err error) error {
	if err == nil {
		return nil
	}
	var e *services.Error
	if errors.As(err, &e) {
		return err
	}
	return &services.Error{Resource: name, Op: op, Kind: services.KindOf(err), Err: err}
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	return services.KindOf(err).String()
}

func levelOf(err error) slog.Level {
	if err == nil {
		return slog.LevelInfo
	}
	return slog.LevelError
}

// logOp logs one operation as "stop nfs ok 120ms", with the same facts
// as attributes for machines.
func (s *Supervisor) logOp(level slog.Level, op, name, res string, took time.Duration, err error) {
	attrs := []slog.Attr{slog.String("op", op), slog.String("resource", name), slog.Duration("took", took)}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.log.LogAttrs(context.Background(), level, fmt.Sprintf("%s %s %s %s", op, name, res, roundDur(took)), attrs...)
}

func roundDur(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
