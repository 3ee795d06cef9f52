package pid1

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test process stands in for PID 1: its children are what it reaps.
func TestReaper(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	r := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Grace = 100 * time.Millisecond

	// An owned child must be left for its own Wait.
	owned := exec.Command(truePath)
	if err := r.Start(owned); err != nil {
		t.Fatal(err)
	}
	// An orphan-like child nobody waits for.
	p, err := os.StartProcess(truePath, []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	orphan := p.Pid
	time.Sleep(50 * time.Millisecond) // both exit

	deadline := time.Now().Add(5 * time.Second)
	for r.ReapOnce(); processExists(orphan); r.ReapOnce() {
		if time.Now().After(deadline) {
			t.Fatal("orphan not reaped")
		}
		// The owned zombie may hide the other one; its owner waits now.
		if owned.ProcessState == nil {
			if err := r.Wait(owned); err != nil {
				t.Fatalf("owned child lost its status: %v", err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if owned.ProcessState == nil {
		if err := r.Wait(owned); err != nil {
			t.Fatalf("owned child lost its status: %v", err)
		}
	}

	// A child waited for at once (exec.Cmd.Run) keeps its status.
	if err := exec.Command(truePath).Run(); err != nil {
		t.Fatal(err)
	}
}

// processExists is true while pid exists, zombie or not.
func processExists(pid int) bool { return unix.Kill(pid, 0) == nil }

// A running reaper must not steal statuses from exec.Cmd.Run.
func TestReaperLeavesPromptWaiters(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	r := NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	for i := 0; i < 30; i++ {
		if err := exec.Command(truePath).Run(); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
}
