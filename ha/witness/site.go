package witness

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"tandem.dev/tandem/site"
)

// DefaultPort is the witness port when the site config names none.
const DefaultPort = 7791

// FromSite builds a witness Config from a checked site config: the pair
// name, the two node names (only they may ask), the lease (witness.lease_ms,
// which defaults to the dead time), and the pair key: from keyFile when
// given (the witness host rarely has the heads' key_file path), else as
// site's PairKey reads it.
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
	if keyFile != "" {
		c.Key, err = site.ReadKeyFile(keyFile)
	} else if c.Key, err = cfg.PairKey(); err != nil && cfg.Pair.KeyFile != "" {
		err = fmt.Errorf("%w (the site config's key_file is a path on the heads; copy the key here and name it with --key-file)", err)
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
