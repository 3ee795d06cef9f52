package tool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tandem.dev/tandem/services"
)

func script(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	r, err := Run(ctx, Cmd{Path: script(t, `echo out; echo err >&2; if read x; then exit 9; fi`), Env: []string{"A=1"}})
	if err != nil || r.Stdout != "out\n" || r.Stderr != "err\n" || r.Exit != 0 {
		t.Errorf("ok: %+v %v", r, err)
	}
	r, err = Run(ctx, Cmd{Path: script(t, `echo no >&2; exit 3`), Name: "prog"})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Exit != 3 || r.Exit != 3 || r.Stderr != "no\n" {
		t.Errorf("exit: %+v %v", r, err)
	}
	start := time.Now()
	_, err = Run(ctx, Cmd{Path: script(t, `exec sleep 10`), Timeout: 100 * time.Millisecond, KillGroup: true})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("timeout: %v", err)
	}
	r, err = Run(ctx, Cmd{Path: filepath.Join(t.TempDir(), "nope")})
	if !Missing(err) || r.Exit != -1 {
		t.Errorf("missing: %+v %v", r, err)
	}
}

func TestRules(t *testing.T) {
	errA, errB, fallback := errors.New("a"), errors.New("b"), errors.New("other")
	rs := Rules{{Phrase: "specific a", Err: errA, Kind: services.Config}, {Phrase: "a", Err: errB}}
	if rs.Classify("x specific a y", fallback) != errA || rs.Classify("a", fallback) != errB || rs.Classify("z", fallback) != fallback {
		t.Error("Classify: first match wins, else fallback")
	}
	err := rs.ServiceError("res", "start", "specific a", errors.New("detail"), fallback)
	var se *services.Error
	if !errors.As(err, &se) || se.Kind != services.Config || !errors.Is(err, errA) {
		t.Errorf("ServiceError: %v", err)
	}
	if err := rs.ServiceError("res", "start", "z", errors.New("detail"), fallback); !errors.Is(err, fallback) || services.KindOf(err) != services.Failed {
		t.Errorf("ServiceError fallback: %v", err)
	}
	if got := Lines(" x: one \n\n x: two\n", nil); got != "x: one; x: two" {
		t.Errorf("Lines: %q", got)
	}
}
