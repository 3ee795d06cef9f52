package site

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPairKey(t *testing.T) {
	dir := t.TempDir()
	const hexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	want, _ := hex.DecodeString(hexKey)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("pair.key", hexKey+"\n")
	bad := write("bad.key", "not a key!\n")
	short := write("short.key", "0011223344556677\n")
	// A relative key_file must not resolve against the working directory.
	t.Chdir(dir)

	for _, tc := range []struct {
		name    string
		pair    Pair
		wantErr string // "" for success
	}{
		{"inline", Pair{Key: hexKey}, ""},
		{"inline bad", Pair{Key: "not a key!"}, "pair.key: not hex or base64"},
		{"inline too short", Pair{Key: "0011223344556677"}, "pair.key: decodes to 8 bytes"},
		{"key_file absolute", Pair{KeyFile: good}, ""},
		{"key_file relative", Pair{KeyFile: "pair.key"}, "pair.key_file: \"pair.key\" is not an absolute, clean path"},
		{"key_file unclean", Pair{KeyFile: dir + "/../" + filepath.Base(dir) + "/pair.key"}, "not an absolute, clean path"},
		{"key_file missing", Pair{KeyFile: filepath.Join(dir, "none.key")}, "no such file"},
		{"key_file bad", Pair{KeyFile: bad}, "bad.key: not hex or base64"},
		{"key_file too short", Pair{KeyFile: short}, "short.key: decodes to 8 bytes"},
		{"neither", Pair{}, "neither pair.key nor pair.key_file"},
		{"both", Pair{Key: hexKey, KeyFile: good}, "not both"},
	} {
		c := &Config{Pair: tc.pair}
		got, err := c.PairKey()
		switch {
		case tc.wantErr == "" && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("%s: %x, %v; want %x", tc.name, got, err, want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %x, %v; want an error with %q", tc.name, got, err, tc.wantErr)
		}
	}

	// ReadKeyFile takes a command-line path as given.
	if got, err := ReadKeyFile("pair.key"); err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadKeyFile(relative): %x, %v", got, err)
	}
}
