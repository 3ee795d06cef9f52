package wizard

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestStageThenCrashLeavesUnconfigured: a head that lost power between
// stage and commit comes back unconfigured, the staged config gone.
func TestStageThenCrashLeavesUnconfigured(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stage(ctx, []byte("version = 1\n")); err != nil {
		t.Fatal(err)
	}
	// A temporary file of an interrupted write, too.
	os.WriteFile(filepath.Join(dir, "."+stagedFile+".tmp123"), []byte("ver"), 0o600)

	// The crash: nothing but a new OpenStore on the same directory.
	s2, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := s2.Committed(); cfg != nil || err != nil {
		t.Fatalf("after the crash: committed %q, %v; want unconfigured", cfg, err)
	}
	if s2.Staged() {
		t.Fatal("the staged config survived the restart")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	if err := s2.Commit(ctx); err == nil {
		t.Fatal("a commit after the restart committed the stale config")
	}
	if cfg, _ := s2.Committed(); cfg != nil {
		t.Fatal("configured after all")
	}
}

func TestStoreCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := OpenStore(dir)
	if err := s.Commit(ctx); err == nil {
		t.Fatal("commit with nothing staged")
	}
	s.Stage(ctx, []byte("a"))
	s.Stage(ctx, []byte("b")) // a new stage replaces the old
	if err := s.Discard(ctx); err != nil || s.Staged() {
		t.Fatalf("discard: %v, staged %v", err, s.Staged())
	}
	s.Stage(ctx, []byte("c"))
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := s.Committed(); string(cfg) != "c" || s.Staged() {
		t.Fatalf("committed %q, staged %v", cfg, s.Staged())
	}
	// Configured: nothing replaces the config.
	if err := s.Stage(ctx, []byte("d")); !errors.Is(err, ErrConfigured) {
		t.Errorf("stage on a configured head: %v", err)
	}
	s2, _ := OpenStore(dir)
	if cfg, _ := s2.Committed(); string(cfg) != "c" {
		t.Errorf("after a restart: %q", cfg)
	}
}
