package pid1

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// logRing is the persistent log: every log line, timestamped, in
// <dir>/tandem.log, rotated to tandem.log.1 .. tandem.log.<keep> when it
// passes maxSize, so it never holds more than (keep+1) * maxSize bytes.
// Lines logged before the state partition is mounted wait in memory
// (bounded) and are written when the ring opens.
type logRing struct {
	mu      sync.Mutex
	dir     string
	maxSize int64
	keep    int
	f       *os.File
	size    int64
	pending []string
	pendLen int
	dropped int
	closed  bool
}

const (
	ringFile       = "tandem.log"
	ringMaxSize    = 1 << 20
	ringKeep       = 3
	ringPendingMax = 256 << 10
)

func newLogRing() *logRing { return &logRing{maxSize: ringMaxSize, keep: ringKeep} }

// add records one line. It never blocks on a full disk for long and never
// fails: the log must not take PID 1 down.
func (r *logRing) add(now time.Time, level, line string) {
	rec := now.UTC().Format("2006-01-02T15:04:05.000Z") + " " + level + " " + line + "\n"
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.f == nil {
		if r.pendLen+len(rec) > ringPendingMax {
			r.dropped++
			return
		}
		r.pending = append(r.pending, rec)
		r.pendLen += len(rec)
		return
	}
	r.writeLocked(rec)
}

func (r *logRing) writeLocked(rec string) {
	if r.size+int64(len(rec)) > r.maxSize {
		r.rotateLocked()
		if r.f == nil {
			return
		}
	}
	n, err := r.f.WriteString(rec)
	r.size += int64(n)
	if err != nil {
		// A full or failed state disk: stop writing rather than retry on
		// every line. The console still has everything.
		r.f.Close()
		r.f = nil
		r.closed = true
	}
}

// rotateLocked shifts tandem.log.N-1 to .N and starts a new file.
func (r *logRing) rotateLocked() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	base := filepath.Join(r.dir, ringFile)
	for i := r.keep; i >= 1; i-- {
		from := base
		if i > 1 {
			from = fmt.Sprintf("%s.%d", base, i-1)
		}
		os.Rename(from, fmt.Sprintf("%s.%d", base, i)) // missing files are fine
	}
	f, err := os.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		r.closed = true
		return
	}
	r.f, r.size = f, 0
}

// open starts writing to dir and flushes what waited in memory.
func (r *logRing) open(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	base := filepath.Join(dir, ringFile)
	f, err := os.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dir, r.f, r.size, r.closed = dir, f, fi.Size(), false
	if r.dropped > 0 {
		r.writeLocked(fmt.Sprintf("(%d early lines dropped: memory buffer full)\n", r.dropped))
	}
	for _, rec := range r.pending {
		r.writeLocked(rec)
	}
	r.pending, r.pendLen, r.dropped = nil, 0, 0
	return nil
}

// sync flushes the current file to disk.
func (r *logRing) sync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Sync()
	}
}

// close syncs and closes the file (before the state partition unmounts);
// later lines go to the console only.
func (r *logRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Sync()
		r.f.Close()
		r.f = nil
	}
	r.closed = true
	r.pending = nil
}
