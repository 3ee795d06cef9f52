package supervisor

import (
	"sync"
	"time"

	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/services/nfs"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/services/vip"
	"tandem.dev/tandem/services/xfs"
	"tandem.dev/tandem/status"
)

// stepNames name a failover's steps after the layers that make them,
// going up and coming down.
var stepNames = map[string][2]string{
	drbd.Name + "-primary": {"promote", "demote"},
	lvm.Name:               {"lvm up", "lvm down"},
	xfs.Name:               {"mount", "unmount"},
	nfs.Name:               {"nfsd up", "nfsd down"},
	vip.Name:               {"VIP up", "VIP down"},
}

func stepName(layer string, up bool) string {
	n, ok := stepNames[layer]
	switch {
	case !ok && up:
		return layer + " up"
	case !ok:
		return layer + " down"
	case up:
		return n[0]
	}
	return n[1]
}

// layerDone is when a layer reached its goal during a role change (or
// failed on the way).
type layerDone struct {
	name string
	at   time.Time
	err  string
}

// stackSteps turns the layers' completion times into steps: the layers
// start (or stop) one after the other, so each step runs from the end of
// the previous one (or from begin) to its own end. Offsets count from
// origin, the failover's start.
func stackSteps(origin, begin time.Time, done []layerDone, up bool) []status.FailoverStep {
	var out []status.FailoverStep
	prev := begin
	for _, d := range done {
		from := prev
		if d.at.Before(from) {
			from = d.at
		}
		out = append(out, status.FailoverStep{Name: stepName(d.name, up), StartMS: from.Sub(origin).Milliseconds(),
			MS: d.at.Sub(from).Milliseconds(), Error: d.err})
		prev = d.at
	}
	return out
}

// stepWatch follows the ActiveOnly layers while a role change runs, by
// polling the supervisor's states (it has no callbacks, and a step
// timeline to ~10 ms is plenty).
type stepWatch struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	done []layerDone
}

const stepPoll = 10 * time.Millisecond

func watchSteps(sup Layers, clock Clock, up bool) *stepWatch {
	w := &stepWatch{stop: make(chan struct{})}
	// Only the layers that change count: a layer already at its goal
	// when the change starts makes no step.
	pending := map[string]bool{}
	for _, r := range sup.Status() {
		if r.Role == graph.ActiveOnly && !atGoal(r.State, up) {
			pending[r.Name] = true
		}
	}
	poll := func() {
		now := clock.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, r := range sup.Status() {
			if !pending[r.Name] {
				continue
			}
			switch {
			case atGoal(r.State, up):
				w.done = append(w.done, layerDone{name: r.Name, at: now})
				delete(pending, r.Name)
			case r.State == supervise.Failed:
				w.done = append(w.done, layerDone{name: r.Name, at: now, err: r.LastError})
				delete(pending, r.Name)
			}
		}
	}
	w.wg.Go(func() {
		t := time.NewTicker(stepPoll)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				poll()
				return
			case <-t.C:
				poll()
			}
		}
	})
	return w
}

func atGoal(s supervise.State, up bool) bool {
	if up {
		return s == supervise.Running || s == supervise.Degraded
	}
	return s == supervise.Stopped
}

// finish stops the watch and returns the layers in the order they
// finished.
func (w *stepWatch) finish() []layerDone {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}
