package site

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// publishedKeys are the SHA-256 of pair keys printed in this repository
// (the lab's, examples): anyone can read them, so they authenticate
// nothing. TestPublishedKeysListed finds every key in configs/ and docs/
// and fails until it is listed here.
var publishedKeys = map[string]string{
	"954d5a49fd70d9b8bcdb35d252267829957f7ef7fa6c74f88419bdc5e82209f4": "configs/site.lab.toml",
}

// KeyIsPublished reports whether key is one printed in this repository,
// and where.
func KeyIsPublished(key []byte) (string, bool) {
	sum := sha256.Sum256(key)
	where, ok := publishedKeys[hex.EncodeToString(sum[:])]
	return where, ok
}

// CheckHardware refuses, on a head that is not a QEMU lab board, what is
// only fit for the lab: a pair key printed in this repository, and the
// console's unauthenticated root shell. Each error names file:line:col
// and the key. key is the pair key as read (nil: not readable here, so
// not checked).
func (c *Config) CheckHardware(board string, key []byte) error {
	var errs ValidationErrors
	add := func(path, format string, args ...any) {
		p, _ := c.lookup(path)
		errs = append(errs, &Error{File: c.file, Line: p.Line, Col: p.Col, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if where, ok := KeyIsPublished(key); ok {
		path := "pair.key"
		if c.Pair.Key == "" {
			path = "pair.key_file"
		}
		add(path, "is the published key of %s: anyone can forge this pair's heartbeats and votes; generate one for this site (head -c 32 /dev/urandom | base64) — board %s is not a lab board", where, board)
	}
	if c.Diagnostics.RescueShell {
		add("diagnostics.rescue_shell", "opens a root shell without a password on the console; it is for the QEMU lab only, and board %s is not a lab board", board)
	}
	if len(errs) == 0 {
		return nil
	}
	errs.sort()
	return errs
}
