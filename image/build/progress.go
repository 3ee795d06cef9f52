package build

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints the build's phases and throttled counters, one line at
// a time, so that it reads the same on a terminal and in a CI log.
type progress struct {
	w     io.Writer
	start time.Time
	total int

	mu    sync.Mutex
	n     int
	phase string
	since time.Time
	last  time.Time
}

func newProgress(w io.Writer, phases int) *progress {
	if w == nil {
		w = io.Discard
	}
	now := time.Now()
	return &progress{w: w, start: now, total: phases, since: now}
}

// Phase starts the next phase and reports how long the previous one took.
func (p *progress) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.phase, p.since = name, time.Now()
	fmt.Fprintf(p.w, "[%d/%d] %s\n", p.n, p.total, name)
}

// Printf prints a detail line of the current phase.
func (p *progress) Printf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "      "+format+"\n", a...)
}

// Tick prints a counter line at most once a second, and always when final.
func (p *progress) Tick(final bool, format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !final && now.Sub(p.last) < time.Second {
		return
	}
	p.last = now
	fmt.Fprintf(p.w, "      "+format+"\n", a...)
}

// Elapsed is the time since the build started.
func (p *progress) Elapsed() time.Duration { return time.Since(p.start) }

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
