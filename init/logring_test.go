package pid1

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Lines logged before the state is mounted reach the file; the ring
// rotates and never holds more than (keep+1) files of maxSize.
func TestLogRing(t *testing.T) {
	dir := t.TempDir()
	r := newLogRing()
	r.maxSize, r.keep = 1000, 2
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.add(now, "INFO", "early line")
	if err := r.open(dir); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(filepath.Join(dir, ringFile))
	if !strings.Contains(string(first), "2026-01-01T00:00:00.000Z INFO early line") {
		t.Fatalf("early line missing: %q", first)
	}
	for i := range 200 {
		r.add(now, "INFO", fmt.Sprintf("line %03d %s", i, strings.Repeat("x", 40)))
	}
	r.close()
	r.add(now, "INFO", "after close")
	ents, _ := os.ReadDir(dir)
	var total int64
	var names []string
	for _, e := range ents {
		fi, _ := e.Info()
		total += fi.Size()
		names = append(names, e.Name())
	}
	if len(ents) != 3 || total > 3*1000 {
		t.Errorf("files %v hold %d bytes; want 3 files within 3000 bytes", names, total)
	}
	last, _ := os.ReadFile(filepath.Join(dir, ringFile))
	if !strings.Contains(string(last), "line 199") || strings.Contains(string(last), "after close") {
		t.Errorf("current file: %q", last)
	}
}

// Early lines are bounded in memory, and the drop is reported.
func TestLogRingPendingBound(t *testing.T) {
	r := newLogRing()
	line := strings.Repeat("y", 1000)
	for range 2 * ringPendingMax / 1000 {
		r.add(time.Now(), "INFO", line)
	}
	if r.pendLen > ringPendingMax || r.dropped == 0 {
		t.Fatalf("pending %d bytes, dropped %d", r.pendLen, r.dropped)
	}
	dir := t.TempDir()
	if err := r.open(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ringFile))
	if !strings.Contains(string(b), "early lines dropped") {
		t.Error("drop not reported")
	}
}
