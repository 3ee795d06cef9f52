package pid1

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"tandem.dev/tandem/status"
)

// Step is one named unit of boot work. Boot is a list of steps so the log
// shows every outcome and later work can insert steps without reshuffling code.
type Step struct {
	Name string
	// After names steps that must have run earlier in the same sequence
	// (or an earlier sequence); checkOrder enforces it.
	After []string
	// Optional steps log their failure and boot goes on.
	Optional bool
	Run      func(*Boot) error
}

// checkOrder verifies that every step's After names a step listed before it.
// done holds the names of steps from earlier sequences.
func checkOrder(done map[string]bool, steps []Step) error {
	seen := make(map[string]bool, len(done)+len(steps))
	for n := range done {
		seen[n] = true
	}
	for _, s := range steps {
		if s.Name == "" || s.Run == nil {
			return fmt.Errorf("step %q: missing name or func", s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("step %q listed twice", s.Name)
		}
		for _, a := range s.After {
			if !seen[a] {
				return fmt.Errorf("step %q must come after %q", s.Name, a)
			}
		}
		seen[s.Name] = true
	}
	return nil
}

// errStopping ends a boot sequence once a shutdown has begun.
var errStopping = errors.New("shutting down")

// runSteps runs steps in order and stops at the first failing required step.
// A panicking step counts as a failure: PID 1 must never die. Once a
// shutdown has begun, the remaining steps are skipped.
func runSteps(b *Boot, steps []Step) error {
	return runStepList(b, steps, true)
}

// runStepList is runSteps; guard says whether a shutdown skips the rest
// (the shutdown's own steps are not guarded).
func runStepList(b *Boot, steps []Step, guard bool) error {
	for _, s := range steps {
		if guard {
			b.stepMu.Lock()
			if b.stopping.Load() {
				b.stepMu.Unlock()
				return errStopping
			}
		}
		start := time.Now()
		err := runStep(b, s)
		ms := time.Since(start).Milliseconds()
		if guard {
			b.stepMu.Unlock()
		}
		b.recordStep(s, ms, err)
		switch {
		case err == nil:
			b.Log.Info(s.Name+": ok", "ms", ms)
		case errors.Is(err, errUnconfigured):
			// Not a failure: the node waits for a config (pairing wizard).
			b.Log.Warn(s.Name+": "+err.Error(), "ms", ms)
			return err
		case s.Optional:
			b.Log.Warn(s.Name+": failed (optional, continuing)", "ms", ms, "err", err)
		default:
			b.Log.Error(s.Name+": failed", "ms", ms, "err", err)
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}

// recordStep keeps the outcome for status.
func (b *Boot) recordStep(s Step, ms int64, err error) {
	st := status.Step{Name: s.Name, OK: err == nil, Optional: s.Optional, MS: ms}
	if err != nil {
		st.Error = err.Error()
	}
	b.mu.Lock()
	b.steps = append(b.steps, st)
	b.mu.Unlock()
}

func runStep(b *Boot, s Step) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return s.Run(b)
}
