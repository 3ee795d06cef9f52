package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"tandem.dev/tandem/services"
)

// Run probes every resource that should be up, each on its own
// MonitorInterval, and acts on failures until ctx is done:
//
//   - Failed or Timeout: stop what sits on the resource (top-down), stop
//     it, wait the backoff, start it and then the others (bottom-up);
//   - the MigrationThreshold-th failure within FailureTimeout, a Config,
//     Missing or Refused failure, or a stop that fails during a restart:
//     stop acting on it and call OnEscalate;
//   - Degraded: report it, nothing else.
//
// An escalated resource is still probed and reported, but not acted on
// until Cleanup or a Start.
//
// Restarts run one at a time; when several resources failed, the lowest
// layer goes first, since restarting it restarts the others anyway.
// Run returns ctx's error.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("supervise: Run is already running")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	var wg sync.WaitGroup
	for _, name := range s.order {
		r := s.res[name]
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-s.clock.After(r.node.Policy.MonitorInterval):
				}
				s.monitor(ctx, r)
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case <-s.wake:
		}
		for ctx.Err() == nil {
			ev, ok := s.next()
			if !ok {
				break
			}
			if name, err := s.restart(ctx, ev); err != nil {
				s.escalate(name, err)
			}
		}
	}
}

// monitor probes r once and records the result.
func (s *Supervisor) monitor(ctx context.Context, r *rstate) {
	name := r.node.Name()
	s.mu.Lock()
	gen, ok := r.gen, r.monitored()
	s.mu.Unlock()
	if !ok {
		return
	}
	t0 := s.clock.Now()
	err := s.call(ctx, name, "monitor", r.node.Policy.MonitorTimeout, r.node.Resource.Monitor)
	took := s.clock.Now().Sub(t0)
	if ctx.Err() != nil {
		return // shutting down: not the resource's fault
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if r.gen != gen || !r.monitored() {
		return // started, stopped or restarted meanwhile: stale
	}
	r.lastMon, r.monTook = t0, took
	kind := services.KindOf(err)
	if kind == services.Timeout && err != nil && r.monTimeouts < toleratedTimeouts {
		// A probe that found nothing wrong but ran out of time says more
		// about a loaded host than about the layer; restarting a bond
		// for it takes the whole stack above down. Probe again first.
		r.monTimeouts++
		s.log.Warn(fmt.Sprintf("monitor %s timed out after %s; probing again before acting", name, roundDur(took)),
			"resource", name, "err", err.Error())
		return
	}
	r.monTimeouts = 0
	switch {
	case err == nil:
		if r.state != Running {
			s.log.Info(fmt.Sprintf("monitor %s ok again, was %s", name, r.state), "resource", name)
		}
		r.state = Running
	case kind == services.Degraded:
		if r.state != Degraded {
			s.log.Warn(fmt.Sprintf("monitor %s degraded: %v", name, err), "resource", name, "err", err.Error())
		}
		r.state, r.lastErr = Degraded, err
	default:
		r.state, r.lastErr = Failed, err
		act := !s.maintenance && !r.escalated
		s.log.Warn(fmt.Sprintf("monitor %s %s %s", name, kind, roundDur(took)),
			"resource", name, "err", err.Error(), "acting", act)
		if act {
			s.pending[name] = event{name: name, err: err, gen: r.gen, epoch: s.epoch}
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// toleratedTimeouts is how many monitor timeouts in a row are probed
// again rather than acted on.
const toleratedTimeouts = 1

// monitored says whether r is probed now; caller holds mu.
func (r *rstate) monitored() bool {
	return r.want && !r.recovering && (r.state == Running || r.state == Degraded || r.state == Failed)
}

// next takes the queued failure lowest in the stack.
func (s *Supervisor) next() (event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.order {
		if ev, ok := s.pending[name]; ok {
			delete(s.pending, name)
			return ev, true
		}
	}
	return event{}, false
}

// restart restarts ev's resource and its dependents. It returns the
// resource to escalate and why, or "" and nil.
func (s *Supervisor) restart(ctx context.Context, ev event) (string, error) {
	s.ops.Lock()
	defer s.ops.Unlock()

	s.mu.Lock()
	r := s.res[ev.name]
	if ev.epoch != s.epoch || ev.gen != r.gen || !r.want || r.state != Failed || r.escalated || s.maintenance {
		s.mu.Unlock()
		return "", nil // overtaken by Start, Stop, maintenance or a restart
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.cancelRec = cancel
	s.mu.Unlock()

	restore := map[string]bool{} // what to bring back up
	defer func() {
		s.mu.Lock()
		s.cancelRec = nil
		for n := range restore {
			s.res[n].recovering = false
		}
		s.mu.Unlock()
	}()
	mark := func(name string) {
		s.mu.Lock()
		restore[name] = true
		s.res[name].recovering = true
		s.mu.Unlock()
	}

	t0 := s.clock.Now()
	subject, err := ev.name, ev.err
	for {
		// A layer below that failed too is the likelier cause (a downed
		// link under the VIP): restart it, which brings this one back as
		// well, rather than spend this one's failures on a start that
		// cannot work and escalate the wrong layer.
		if low, lerr := s.failedBelow(subject); low != "" {
			s.log.Warn(fmt.Sprintf("restart %s: %s, below it, failed too; restarting %s", subject, low, low),
				"resource", subject, "below", low)
			subject, err = low, lerr
		}
		r := s.res[subject]
		pol := r.node.Policy
		s.mu.Lock()
		r.failures = append(r.recentFailures(s.clock.Now()), s.clock.Now())
		count := len(r.failures)
		s.mu.Unlock()
		kind := services.KindOf(err)
		if !kind.Retryable() {
			return subject, fmt.Errorf("%s: a restart cannot fix it: %w", kind, err)
		}
		if pol.MigrationThreshold > 0 && count >= pol.MigrationThreshold {
			return subject, fmt.Errorf("%d failures within %s (migration-threshold %d): %w",
				count, pol.FailureTimeout, pol.MigrationThreshold, err)
		}

		// Take down what sits on it, then it: bottom-up restart needs a
		// clean top.
		mark(subject)
		for _, d := range s.g.Dependents(subject) {
			s.mu.Lock()
			up := s.res[d].want && s.res[d].state != Stopped
			s.mu.Unlock()
			if !up {
				continue
			}
			mark(d)
			if serr := s.stopOne(ctx, s.res[d], "stop"); serr != nil {
				return s.stopFailed(ctx, d, serr)
			}
		}
		if serr := s.stopOne(ctx, r, "stop"); serr != nil {
			return s.stopFailed(ctx, subject, serr)
		}

		delay := pol.Backoff.Delay(count - 1)
		s.log.Info(fmt.Sprintf("restart %s in %s (failure %d)", subject, delay, count),
			"resource", subject, "delay", delay, "failures", count)
		select {
		case <-ctx.Done():
			s.log.Warn("restart "+subject+" abandoned", "resource", subject, "err", ctx.Err())
			return "", nil
		case <-s.clock.After(delay):
		}

		failed := false
		var brought []string
		for _, name := range s.order {
			rr := s.res[name]
			s.mu.Lock()
			todo := restore[name] && rr.state != Running && rr.state != Degraded
			s.mu.Unlock()
			if !todo {
				continue
			}
			serr := s.startOne(ctx, rr, "restart")
			s.mu.Lock()
			rr.restarts++
			s.mu.Unlock()
			if ctx.Err() != nil {
				return "", nil // Stop took over; it owns the stack now
			}
			if serr != nil {
				// Counted as that resource's failure; go round again.
				subject, err, failed = name, serr, true
				break
			}
			brought = append(brought, name)
		}
		if !failed {
			took := s.clock.Now().Sub(t0)
			s.log.Info(fmt.Sprintf("restart %s ok %s (%s)", ev.name, roundDur(took), strings.Join(brought, ", ")),
				"resource", ev.name, "took", took, "restarted", brought)
			return "", nil
		}
	}
}

// failedBelow finds the lowest layer name depends on that has failed
// and awaits a restart, takes its queued event and returns it with its
// error; "" if none.
func (s *Supervisor) failedBelow(name string) (string, error) {
	below := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		for _, d := range s.res[n].node.DependsOn {
			if !below[d] {
				below[d] = true
				walk(d)
			}
		}
	}
	walk(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.order {
		r := s.res[n]
		if !below[n] || !r.want || r.escalated || r.recovering {
			continue
		}
		if ev, ok := s.pending[n]; ok {
			delete(s.pending, n)
			return n, ev.err
		}
		if r.state == Failed && !s.maintenance {
			return n, r.lastErr
		}
	}
	return "", nil
}

// stopFailed handles a stop that failed while restarting: a layer that
// will not stop cannot be restarted safely (Pacemaker fences here), so
// it escalates, unless Stop took over and cancelled us.
func (s *Supervisor) stopFailed(ctx context.Context, name string, err error) (string, error) {
	if ctx.Err() != nil {
		return "", nil
	}
	return name, fmt.Errorf("stop failed during a restart: %w", err)
}

// escalate marks name as given up on and tells the HA layer.
func (s *Supervisor) escalate(name string, err error) {
	s.mu.Lock()
	r := s.res[name]
	r.escalated = true
	if r.state != Stopped {
		r.state = Failed
	}
	r.lastErr = err
	s.mu.Unlock()
	s.log.LogAttrs(context.Background(), slog.LevelError, fmt.Sprintf("escalate %s: %v", name, err),
		slog.String("resource", name), slog.String("err", err.Error()))
	if s.onEscalate != nil {
		s.onEscalate(name, err)
	}
}
