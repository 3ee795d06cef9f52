package site

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// Purpose names what a sub-key of the pair key is for. Every role gets
// its own key, so a host that holds one (the witness host holds only the
// witness key) can neither act in another role nor derive its key.
type Purpose string

// The purposes; subKeys has their HKDF labels.
const (
	PurposeHeartbeat Purpose = "heartbeat" // ha/heartbeat: packets between the heads
	PurposeWitness   Purpose = "witness"   // ha/witness: heads and the witness host
	PurposeControl   Purpose = "control"   // ha/control: switchover asks between the heads
	PurposeDRBD      Purpose = "drbd"      // services/drbd: net shared-secret, scoped by resource
)

// subKeys is every derivation of the pair key: its HKDF info label (the
// scope, if any, is appended) and its size. A label never changes: a new
// label is a new key, and heads and witness must then be upgraded
// together. Control's and DRBD's labels are those they used before this
// table, so their keys did not change.
var subKeys = map[Purpose]struct {
	info string
	size int
}{
	PurposeHeartbeat: {"tandem heartbeat v1", 32},
	PurposeWitness:   {"tandem witness v1", 32},
	PurposeControl:   {"tandem control v1", 32},
	// DRBD keeps shared-secret in a 64-byte field with its NUL: 24
	// bytes, 48 hex characters, fit.
	PurposeDRBD: {"tandem drbd shared-secret v1 ", 24},
}

// SubKey derives the key for purpose from the pair key with HKDF-SHA256,
// salted with the pair's name; scope binds it further (DRBD: the
// resource name; "" for the others).
func SubKey(pairKey []byte, pair string, purpose Purpose, scope string) ([]byte, error) {
	d, ok := subKeys[purpose]
	switch {
	case !ok:
		return nil, fmt.Errorf("sub-key: unknown purpose %q", purpose)
	case len(pairKey) < MinKeyBytes:
		return nil, fmt.Errorf("sub-key %s: pair key is %d bytes; need at least %d", purpose, len(pairKey), MinKeyBytes)
	case pair == "":
		return nil, fmt.Errorf("sub-key %s: no pair name", purpose)
	}
	k, err := hkdf.Key(sha256.New, pairKey, []byte("tandem/"+pair), d.info+scope, d.size)
	if err != nil {
		return nil, fmt.Errorf("sub-key %s: %w", purpose, err)
	}
	return k, nil
}
