package site

import (
	"errors"
	"fmt"
	"os"
)

// PairKey returns the pair key: pair.key, or the content of pair.key_file.
//
// key_file must be an absolute path, as Check already demands: the key is
// read on both heads (by init, from /), on the witness host and by build
// tools, each from its own working directory, so a relative path would
// name a different file on each. PairKey refuses one rather than guess a
// base, so a config built in code cannot slip past that rule.
func (c *Config) PairKey() ([]byte, error) {
	p := c.Pair
	switch {
	case p.Key != "" && p.KeyFile != "":
		return nil, errors.New("pair key: set pair.key or pair.key_file, not both")
	case p.Key != "":
		k, err := DecodeKey(p.Key)
		if err != nil {
			return nil, fmt.Errorf("pair.key: %w", err)
		}
		return k, nil
	case p.KeyFile == "":
		return nil, errors.New("pair key: neither pair.key nor pair.key_file is set")
	}
	if err := checkAbsPath(p.KeyFile); err != nil {
		return nil, fmt.Errorf("pair.key_file: %w", err)
	}
	return ReadKeyFile(p.KeyFile)
}

// ReadKeyFile reads a pair key file: hex or base64 as DecodeKey reads it,
// a trailing newline allowed. path is used as given (a command-line path
// is relative to the working directory, as usual).
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pair key: %w", err)
	}
	k, err := DecodeKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("pair key %s: %w", path, err)
	}
	return k, nil
}
