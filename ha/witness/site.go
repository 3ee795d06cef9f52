package witness

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"tandem.dev/tandem/site"
)

// DefaultPort is the witness port when the site config names none.
const DefaultPort = 7791

// FromSite builds a witness Config from a checked site config: the pair
// name, the two node names (only they may ask), the lease (witness.lease_ms,
// which defaults to the dead time), and the pair key: from keyFile when given (the witness host
// rarely has the heads' key_file path), else pair.key or pair.key_file.
// It also returns the port of witness.address (DefaultPort if unset).
func FromSite(cfg *site.Config, keyFile string) (Config, int, error) {
	c := Config{Pair: cfg.Pair.Name, Lease: time.Duration(cfg.Witness.LeaseMS) * time.Millisecond}
	if c.Lease == 0 { // a config built in code rather than parsed
		c.Lease = time.Duration(cfg.HA.DeadTimeMS) * time.Millisecond
	}
	for _, n := range cfg.Nodes {
		c.Nodes = append(c.Nodes, n.Name)
	}
	var err error
	switch {
	case keyFile != "":
		c.Key, err = ReadKeyFile(keyFile)
	case cfg.Pair.Key != "":
		c.Key, err = site.DecodeKey(cfg.Pair.Key)
	default:
		c.Key, err = ReadKeyFile(cfg.Pair.KeyFile)
		if err != nil {
			err = fmt.Errorf("%w (the site config's key_file is a path on the heads; copy the key here and name it with --key-file)", err)
		}
	}
	if err != nil {
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

// ReadKeyFile reads a pair key file (hex or base64, as site.DecodeKey).
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pair key: %w", err)
	}
	key, err := site.DecodeKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("pair key %s: %w", path, err)
	}
	return key, nil
}
