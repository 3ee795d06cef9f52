package witness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/internal/atomicfile"
)

// DefaultStateDir holds the witness's state files, one per pair.
const DefaultStateDir = "/var/lib/tandem/witness"

// DefaultStateFile is where the witness of pair keeps its writer marker
// unless told otherwise. A pair name that is not a plain file name (from
// --pair rather than a checked site config) is an error.
func DefaultStateFile(pair string) (string, error) {
	if pair == "" || strings.ContainsAny(pair, `/\`) || strings.HasPrefix(pair, ".") {
		return "", fmt.Errorf("pair name %q does not make a state file name; name the file", pair)
	}
	return filepath.Join(DefaultStateDir, pair+".json"), nil
}

// writerState is the state file: the only thing the witness persists.
// Writer "" means no marker. Boot is the writer's client boot that may
// clear it (zero in a file from before boots were bound: the writer's
// next proven request binds it).
type writerState struct {
	Pair   string    `json:"pair"`
	Writer string    `json:"writer"`
	Since  time.Time `json:"since,omitzero"`
	Boot   ID        `json:"boot,omitzero"`
}

// loadState reads the marker at path. A missing file is no marker; an
// unreadable or malformed one, or one for another pair, is an error: the
// witness must not start having forgotten a marker.
func loadState(path, pair string) (writerState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writerState{Pair: pair}, nil
	}
	if err != nil {
		return writerState{}, fmt.Errorf("witness state: %w", err)
	}
	var st writerState
	if err := json.Unmarshal(b, &st); err != nil {
		return writerState{}, fmt.Errorf("witness state %s: %w", path, err)
	}
	switch {
	case st.Pair != pair:
		return writerState{}, fmt.Errorf("witness state %s is for pair %q, not %q", path, st.Pair, pair)
	case len(st.Writer) > ha.MaxNameLen:
		return writerState{}, fmt.Errorf("witness state %s: writer name longer than %d bytes", path, ha.MaxNameLen)
	}
	return st, nil
}

// saveState replaces the file at path with st, synced to disk before it
// returns (atomicfile fsyncs the file and its directory). Empty path:
// nothing is persisted.
func saveState(path string, st writerState) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("witness state %s: %w", path, err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("witness state %s: %w", path, err)
	}
	return nil
}
