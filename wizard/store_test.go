package wizard

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestPairedNode: PID 1 finds its node by the head ID kept on the state
// partition, in the wizard's lines of the committed config.
func TestPairedNode(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	config := []byte("version = 1\n" + headerTag + "head 0a0b is node nas-a with certificate " + fp + "\n" +
		headerTag + "head 0c0d is node nas-b with certificate " + fp + "\n")
	for _, tc := range []struct{ name, id, config, want string }{
		{"first head", "0a0b\n", string(config), "nas-a"},
		{"second head", "0c0d", string(config), "nas-b"},
		{"another head", "ffff", string(config), ""},
		{"no ID yet", "", string(config), ""},
		{"a hand-written config", "0a0b", "version = 1\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.id != "" {
				os.WriteFile(filepath.Join(dir, idFile), []byte(tc.id), 0o600)
			}
			if got := PairedNode([]byte(tc.config), dir); got != tc.want {
				t.Errorf("PairedNode = %q, want %q", got, tc.want)
			}
		})
	}
}
