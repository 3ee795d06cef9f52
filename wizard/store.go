package wizard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"tandem.dev/tandem/site"
)

// Files of the FileStore.
const (
	// SiteFile is the committed site config in the store's directory.
	SiteFile   = "site.toml"
	stagedFile = "site.toml.staged"
	// doneFile marks that the initiator committed too, so this head
	// need not answer its status query after a restart.
	doneFile = "wizard-done"
)

// ErrConfigured means the head already has a committed site config.
var ErrConfigured = errors.New("this head is already configured")

// FileStore keeps a head's site config in a directory (the state
// partition): Stage writes it to a file of its own, Commit renames that
// file into place, atomically. A head that loses power between the two
// comes back with a staged file and no site.toml; OpenStore throws the
// staged file away, so the head is unconfigured, never half configured.
type FileStore struct {
	dir string
	mu  sync.Mutex
}

// OpenStore opens the store in dir, discarding a staged config that a
// previous run left without commit.
func OpenStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("site config store: %w", err)
	}
	s := &FileStore{dir: dir}
	if err := s.removeStaged(); err != nil {
		return nil, fmt.Errorf("site config store: discard the stale staged config: %w", err)
	}
	return s, nil
}

// Stage keeps config aside; it is not the head's config until Commit.
func (s *FileStore) Stage(_ context.Context, config []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.committedLocked(); err != nil || ok {
		return errors.Join(err, ErrConfigured)
	}
	if len(config) > site.MaxSize {
		return fmt.Errorf("stage the site config: %d bytes, at most %d", len(config), site.MaxSize)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, stagedFile), config, 0o600); err != nil {
		return fmt.Errorf("stage the site config: %w", err)
	}
	return nil
}

// Commit makes the staged config the head's config, by one rename.
func (s *FileStore) Commit(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok, err := s.committedLocked(); err != nil || ok {
		return errors.Join(err, ErrConfigured)
	}
	staged := filepath.Join(s.dir, stagedFile)
	if _, err := os.Stat(staged); err != nil {
		return fmt.Errorf("commit the site config: nothing staged: %w", err)
	}
	if err := os.Rename(staged, filepath.Join(s.dir, SiteFile)); err != nil {
		return fmt.Errorf("commit the site config: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("commit the site config: %w", err)
	}
	return nil
}

// Discard drops a staged config.
func (s *FileStore) Discard(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.removeStaged(); err != nil {
		return fmt.Errorf("discard the staged site config: %w", err)
	}
	return nil
}

// Committed returns the committed site config, or nil if the head is
// unconfigured.
func (s *FileStore) Committed() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(s.dir, SiteFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the committed site config: %w", err)
	}
	return b, nil
}

// Staged reports whether a config is staged (for status and tests).
func (s *FileStore) Staged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := os.Stat(filepath.Join(s.dir, stagedFile))
	return err == nil
}

// MarkDone records that both heads committed.
func (s *FileStore) MarkDone() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeFileAtomic(filepath.Join(s.dir, doneFile), []byte("both heads committed\n"), 0o600)
}

// Done reports whether both heads are known to have committed.
func (s *FileStore) Done() bool {
	_, err := os.Stat(filepath.Join(s.dir, doneFile))
	return err == nil
}

// Path is where the committed site config is, or will be.
func (s *FileStore) Path() string { return filepath.Join(s.dir, SiteFile) }

func (s *FileStore) committedLocked() (bool, error) {
	_, err := os.Stat(filepath.Join(s.dir, SiteFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// removeStaged removes the staged file and the temporary files a write
// interrupted by a power loss leaves behind.
func (s *FileStore) removeStaged() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		n := e.Name()
		if n == stagedFile || strings.HasPrefix(n, "."+stagedFile+".tmp") {
			if err := os.Remove(filepath.Join(s.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
		}
	}
	if removed {
		return syncDir(s.dir)
	}
	return nil
}
