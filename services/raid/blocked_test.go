package raid

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A wedged array blocks reads of its sysfs state in the kernel, past any
// deadline. Here array_state is a FIFO nobody writes, which blocks the
// same way. The monitor runs every few seconds for as long as the array
// stays wedged: each call must come back at its deadline, and only one
// read may be left behind, however many calls time out (before, each
// call left one more goroutine, and thread, blocked in the kernel).
func TestMonitorBlockedReadIsBounded(t *testing.T) {
	g := newRig(t)
	r := g.raid(true, "")
	must(t, r.Start(context.Background()))
	state := g.sys + "/block/md127/md/array_state"
	must(t, os.Remove(state))
	must(t, syscall.Mkfifo(state, 0o644))
	t.Cleanup(func() { release(t, state) })

	before := runtime.NumGoroutine()
	const calls = 8
	for i := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		start := time.Now()
		err := r.Monitor(ctx)
		cancel()
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("call %d: Monitor took %s past its deadline", i, took)
		}
		if kindName(err) != "timeout" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d: got %s: %v, want a timeout", i, kindName(err), err)
		}
		if i > 0 && !strings.Contains(err.Error(), "previous read of the array's state is still blocked") {
			t.Errorf("call %d: %v, want it to say the previous read is still blocked", i, err)
		}
	}
	if n := runtime.NumGoroutine() - before; n > 2 {
		t.Errorf("%d goroutines left behind by %d timed-out monitor calls, want at most 1", n, calls)
	}
	// `tandem status` does not hang on it either.
	done := make(chan error, 1)
	go func() { _, err := r.Status(); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "still blocked") {
			t.Errorf("Status: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Status hangs on a blocked array")
	}

	// Once the read comes back, the next monitor reads afresh.
	release(t, state)
	must(t, os.Remove(state))
	must(t, os.WriteFile(state, []byte("clean\n"), 0o644))
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := r.Monitor(context.Background())
		if err == nil || !strings.Contains(err.Error(), "still blocked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still blocked after the read came back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// release lets every reader blocked opening the FIFO at path go: an
// open for writing wakes them, the close gives them EOF.
func release(t *testing.T, path string) {
	t.Helper()
	for range 50 {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return // ENXIO: no reader left (or no FIFO any more)
		}
		syscall.Close(fd)
		time.Sleep(10 * time.Millisecond)
	}
}
