package site

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// Every role's key differs from the pair key and from every other
// role's; a key of one role, taken as a pair key, derives none of the
// others (the witness host holds only the witness key).
func TestSubKeysIndependent(t *testing.T) {
	pairKey, err := DecodeKey("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		purpose Purpose
		scope   string
	}
	all := []key{{PurposeHeartbeat, ""}, {PurposeWitness, ""}, {PurposeControl, ""}, {PurposeDRBD, "r0"}, {PurposeDRBD, "r1"}}
	if len(subKeys) != 4 {
		t.Errorf("%d purposes in the table; the test knows 4", len(subKeys))
	}
	got := map[key][]byte{}
	for _, k := range all {
		b, err := SubKey(pairKey, "vdi-nas", k.purpose, k.scope)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		if bytes.Contains(pairKey, b[:8]) || bytes.Equal(b, pairKey[:len(b)]) {
			t.Errorf("%v: the sub-key shows the pair key", k)
		}
		for o, ob := range got {
			if bytes.Equal(b, ob) {
				t.Errorf("%v and %v have the same key", k, o)
			}
		}
		got[k] = b
		again, _ := SubKey(pairKey, "vdi-nas", k.purpose, k.scope)
		other, _ := SubKey(pairKey, "other-nas", k.purpose, k.scope)
		if !bytes.Equal(b, again) || bytes.Equal(b, other) {
			t.Errorf("%v: not deterministic, or not bound to the pair's name", k)
		}
	}
	// What each key derives, taken as a pair key, is none of the real ones.
	for _, from := range all {
		for _, to := range all {
			d, err := SubKey(padKey(got[from]), "vdi-nas", to.purpose, to.scope)
			if err != nil {
				t.Fatal(err)
			}
			for k, b := range got {
				if bytes.Equal(d, b) {
					t.Errorf("the %v key derives the %v key", from, k)
				}
			}
		}
	}
}

// padKey makes a sub-key long enough to stand as a pair key (DRBD's is
// 24 bytes).
func padKey(k []byte) []byte {
	return append(bytes.Clone(k), make([]byte, max(0, MinKeyBytes-len(k)))...)
}

// The control channel's and DRBD's keys are the ones they derived before
// the table: a head upgraded alone still reaches its peer's control
// channel and DRBD. The values were computed with the old code.
func TestSubKeysKeepControlAndDRBD(t *testing.T) {
	lab, _ := hex.DecodeString("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
	for _, tc := range []struct {
		purpose Purpose
		scope   string
		want    string
	}{
		{PurposeControl, "", "ba36df573ae7b64fc0f78a68cb7ea93b3765e5e06b362d426987acdfcc867338"},
		{PurposeDRBD, "r0", "cfc2cbb4e6fff9f30b094ec7277b780861e36104e0dbf8f4"},
	} {
		k, err := SubKey(lab, "lab", tc.purpose, tc.scope)
		if err != nil || hex.EncodeToString(k) != tc.want {
			t.Errorf("%s %q: %x, %v; want %s", tc.purpose, tc.scope, k, err, tc.want)
		}
	}
}

func TestSubKeyErrors(t *testing.T) {
	good := bytes.Repeat([]byte{1, 2}, 16)
	for name, tc := range map[string]struct {
		key     []byte
		pair    string
		purpose Purpose
	}{
		"unknown purpose": {good, "lab", "nfs"},
		"short key":       {good[:31], "lab", PurposeWitness},
		"no pair":         {good, "", PurposeHeartbeat},
	} {
		if k, err := SubKey(tc.key, tc.pair, tc.purpose, ""); err == nil {
			t.Errorf("%s: derived %x", name, k)
		}
	}
}
