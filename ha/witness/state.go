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

// ErrNoState: the state file is missing. The witness cannot tell a first
// start from a rebuilt host or a wiped disk, which would forget which head
// alone has current data; the operator creates the file once (InitState).
var ErrNoState = errors.New("witness state file missing")

// errStateExists: InitState found a state file; nothing was changed.
var errStateExists = errors.New("witness state file exists")

// loadState reads the marker at path. A missing file, an unreadable or
// malformed one, or one for another pair, is an error: the witness must
// not start having forgotten a marker. With create, it creates the file
// with no marker instead, and refuses (touching nothing) if it exists.
func loadState(path, pair string, create bool) (writerState, error) {
	if create {
		return createState(path, pair)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writerState{}, fmt.Errorf("%w: %s. If this witness has never served pair %q, create it once: tandem witness --init. "+
			"If it has (a rebuilt host, a wiped disk), its record of which head alone has current data is lost: restore the file from a backup; "+
			"else use --init only once tandem status on both heads shows which head has the current data (a head that knows its own data is outdated will not take over)",
			ErrNoState, path, pair)
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

// createState creates the state file with no marker. O_EXCL: an existing
// file, even one made by a concurrent --init, is never replaced. A crash
// before the sync leaves an empty or torn file, which the next start
// refuses as malformed rather than reading as "no marker".
func createState(path, pair string) (writerState, error) {
	st := writerState{Pair: pair}
	b, err := json.Marshal(st)
	if err != nil {
		return writerState{}, fmt.Errorf("witness state %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return writerState{}, fmt.Errorf("%w: %s; --init creates it only once, and nothing was changed. Start without --init to keep its record (--forget-writer clears a writer that is gone for good)",
			errStateExists, path)
	}
	if err != nil {
		return writerState{}, fmt.Errorf("witness state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return writerState{}, fmt.Errorf("witness state %s: %w", path, err)
	}
	return st, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
