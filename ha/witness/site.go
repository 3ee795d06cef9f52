package witness

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/site"
)

// DefaultPort is the witness port when the site config names none.
const DefaultPort = 7791

// Key derives the witness key from the pair key (site.SubKey): the only
// key the witness host holds. It signs the witness protocol and nothing
// else: it cannot sign a heartbeat, a control request or DRBD's
// handshake, nor derive their keys.
func Key(pairKey []byte, pair string) ([]byte, error) {
	return site.SubKey(pairKey, pair, site.PurposeWitness, "")
}

// FromSite builds the witness's Config from a checked site config, where
// the pair key is at hand (on a head or a build host, never on the
// witness host): the pair name, the two node names (only they may ask),
// the lease (witness.lease_ms, which defaults to the dead time) and the
// witness key, derived from the pair key: from keyFile when given (a
// build host rarely has the heads' key_file path), else as site's
// PairKey reads it. It also returns the port of witness.address
// (DefaultPort if unset). File writes the result for the witness host.
func FromSite(cfg *site.Config, keyFile string) (Config, int, error) {
	c := Config{Pair: cfg.Pair.Name, Lease: time.Duration(cfg.Witness.LeaseMS) * time.Millisecond}
	if c.Lease == 0 { // a config built in code rather than parsed
		c.Lease = time.Duration(cfg.HA.DeadTimeMS) * time.Millisecond
	}
	for _, n := range cfg.Nodes {
		c.Nodes = append(c.Nodes, n.Name)
	}
	var pairKey []byte
	var err error
	if keyFile != "" {
		pairKey, err = site.ReadKeyFile(keyFile)
	} else if pairKey, err = cfg.PairKey(); err != nil && cfg.Pair.KeyFile != "" {
		err = fmt.Errorf("%w (the site config's key_file is a path on the heads; copy the key here and name it with --key-file)", err)
	}
	if err != nil {
		return Config{}, 0, err
	}
	if c.Key, err = Key(pairKey, c.Pair); err != nil {
		return Config{}, 0, err
	}
	port := DefaultPort
	if a := cfg.Witness.Address; a != "" {
		_, p, err := net.SplitHostPort(a)
		if err == nil {
			port, err = strconv.Atoi(p)
		}
		if err != nil {
			return Config{}, 0, fmt.Errorf("witness.address %q: %w", a, err)
		}
	}
	return c, port, nil
}

// ClientFromSite is the head node's witness client config: the site's
// witness.address, and the witness key derived from pairKey.
func ClientFromSite(cfg *site.Config, node string, pairKey []byte) (ClientConfig, error) {
	key, err := Key(pairKey, cfg.Pair.Name)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("witness client: %w", err)
	}
	return ClientConfig{Pair: cfg.Pair.Name, Node: node, Key: key, Addr: cfg.Witness.Address}, nil
}

// The witness config file: what `tandem witness-key` writes for the
// witness host and `tandem witness --config` reads. Self-contained, it
// holds the witness key but never the pair key.
type file struct {
	Version int      `toml:"version"`
	Pair    string   `toml:"pair"`
	Nodes   []string `toml:"nodes"`
	LeaseMS int64    `toml:"lease_ms"`
	Port    int      `toml:"port"`
	Key     string   `toml:"key"`
}

// fileVersion is the witness config file's format.
const fileVersion = 1

// File renders c (from FromSite) and port as a witness config file.
// Write it with mode 0600: it holds the witness key.
func File(c Config, port int) ([]byte, error) {
	f := file{Version: fileVersion, Pair: c.Pair, Nodes: c.Nodes, LeaseMS: c.Lease.Milliseconds(), Port: port, Key: hex.EncodeToString(c.Key)}
	if err := f.check(); err != nil {
		return nil, err
	}
	b, err := toml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("witness config: %w", err)
	}
	head := fmt.Sprintf(`# Tandem witness config for pair %q, made by tandem witness-key.
# Run on the witness host: tandem witness --config THIS_FILE (once with --init).
# key is the witness key only, derived from the pair key: it cannot sign
# heartbeats, the control channel or DRBD. Keep this file secret (mode 0600):
# with it one can ask for the pair's vote.
`, c.Pair)
	return append([]byte(head), b...), nil
}

func (f *file) check() error {
	var errs []error
	if f.Version != fileVersion {
		errs = append(errs, fmt.Errorf("version %d; this tandem reads version %d", f.Version, fileVersion))
	}
	if f.Pair == "" || len(f.Pair) > ha.MaxNameLen {
		errs = append(errs, fmt.Errorf("pair %q: 1 to %d bytes", f.Pair, ha.MaxNameLen))
	}
	if len(f.Nodes) != 2 || f.Nodes[0] == f.Nodes[1] || slices.ContainsFunc(f.Nodes, func(n string) bool { return n == "" || len(n) > ha.MaxNameLen }) {
		errs = append(errs, fmt.Errorf("nodes %q: the pair's two head names", f.Nodes))
	}
	if f.LeaseMS <= 0 {
		errs = append(errs, fmt.Errorf("lease_ms %d must be positive", f.LeaseMS))
	}
	if f.Port <= 0 || f.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: 1 to 65535", f.Port))
	}
	if k, err := hex.DecodeString(f.Key); err != nil || len(k) < ha.MinKeyBytes {
		errs = append(errs, fmt.Errorf("key: need at least %d bytes in hex", ha.MinKeyBytes))
	}
	return errors.Join(errs...)
}

// ParseFile reads a witness config file (File's output): the server's
// Config (pair, nodes, lease, witness key) and the port to serve on.
// name is for error messages.
func ParseFile(name string, b []byte) (Config, int, error) {
	var f file
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return Config{}, 0, fmt.Errorf("witness config %s: %s", name, strings.TrimSpace(strict.String()))
		}
		return Config{}, 0, fmt.Errorf("witness config %s: %w", name, err)
	}
	if err := f.check(); err != nil {
		return Config{}, 0, fmt.Errorf("witness config %s: %w", name, err)
	}
	key, _ := hex.DecodeString(f.Key)
	return Config{Pair: f.Pair, Nodes: f.Nodes, Lease: time.Duration(f.LeaseMS) * time.Millisecond, Key: key}, f.Port, nil
}

// LoadFile reads the witness config file at path (see ParseFile).
func LoadFile(path string) (Config, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, 0, fmt.Errorf("witness config: %w", err)
	}
	return ParseFile(path, b)
}
