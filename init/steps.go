package pid1

import (
	"fmt"
	"runtime/debug"
	"time"
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

// runSteps runs steps in order and stops at the first failing required step.
// A panicking step counts as a failure: PID 1 must never die.
func runSteps(b *Boot, steps []Step) error {
	for _, s := range steps {
		start := time.Now()
		err := runStep(b, s)
		ms := time.Since(start).Milliseconds()
		switch {
		case err == nil:
			b.Log.Info(s.Name+": ok", "ms", ms)
		case s.Optional:
			b.Log.Warn(s.Name+": failed (optional, continuing)", "ms", ms, "err", err)
		default:
			b.Log.Error(s.Name+": failed", "ms", ms, "err", err)
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return nil
}

func runStep(b *Boot, s Step) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return s.Run(b)
}
