package witness

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/site"
)

func TestFromSite(t *testing.T) {
	lab, err := site.Load("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, port, err := FromSite(lab, "")
	if err != nil {
		t.Fatal(err)
	}
	pairKey, _ := site.DecodeKey(lab.Pair.Key)
	want, _ := site.SubKey(pairKey, lab.Pair.Name, site.PurposeWitness, "")
	if c.Pair != lab.Pair.Name || !bytes.Equal(c.Key, want) || len(c.Nodes) != 2 || c.Nodes[0] != lab.Nodes[0].Name ||
		c.Lease != time.Duration(lab.Witness.LeaseMS)*time.Millisecond || c.Lease == 0 || port <= 0 {
		t.Errorf("lab: %+v port %d", c, port)
	}
	if _, err := NewServer(c); err != nil {
		t.Errorf("server from the lab config: %v", err)
	}

	// The example names a key_file that only exists on the heads.
	ex, err := site.Load("../../configs/site.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromSite(ex, ""); err == nil || !strings.Contains(err.Error(), "--key-file") {
		t.Errorf("missing key_file: %v", err)
	}
	kf := filepath.Join(t.TempDir(), "pair.key")
	const exKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	if err := os.WriteFile(kf, []byte(exKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, port, err = FromSite(ex, kf)
	exPair, _ := hex.DecodeString(exKey)
	want, _ = Key(exPair, "vdi-nas")
	if err != nil || !bytes.Equal(c.Key, want) || port != 7791 || c.Pair != "vdi-nas" {
		t.Errorf("example with --key-file: %+v %d %v", c, port, err)
	}
	if err := os.WriteFile(kf, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromSite(ex, kf); err == nil {
		t.Errorf("a short key was accepted")
	}
}

// The witness host is given the witness key, and nothing it holds is, or
// derives, the pair key or another role's key.
func TestWitnessFileHoldsOnlyTheWitnessKey(t *testing.T) {
	lab, pairKey, c, port, b := labWitnessFile(t)
	got, gotPort, err := ParseFile("witness.toml", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if got.Pair != c.Pair || !bytes.Equal(got.Key, c.Key) || got.Lease != c.Lease || strings.Join(got.Nodes, ",") != "head-a,head-b" || gotPort != port {
		t.Errorf("round trip: %+v %d, want %+v %d", got, gotPort, c, port)
	}
	others := map[string][]byte{"pair key": pairKey}
	for _, p := range []site.Purpose{site.PurposeHeartbeat, site.PurposeControl} {
		others[string(p)], _ = site.SubKey(pairKey, lab.Pair.Name, p, "")
	}
	others["drbd r0"], _ = site.SubKey(pairKey, lab.Pair.Name, site.PurposeDRBD, "r0")
	text := strings.ToLower(string(b))
	for name, k := range others {
		if bytes.Equal(got.Key, k) || strings.Contains(text, hex.EncodeToString(k[:8])) {
			t.Errorf("the witness file holds the %s", name)
		}
		for _, p := range []site.Purpose{site.PurposeHeartbeat, site.PurposeControl, site.PurposeWitness} {
			if d, _ := site.SubKey(got.Key, lab.Pair.Name, p, ""); bytes.Equal(d, k) {
				t.Errorf("the witness key derives the %s", name)
			}
		}
	}
	if strings.Contains(text, strings.ToLower(lab.Pair.Key)) {
		t.Errorf("the witness file holds the pair key:\n%s", b)
	}
}

func TestParseFileErrors(t *testing.T) {
	good := "version = 1\npair = \"lab\"\nnodes = [\"head-a\", \"head-b\"]\nlease_ms = 2500\nport = 7791\nkey = \"" + strings.Repeat("ab", 32) + "\"\n"
	if _, _, err := ParseFile("w.toml", []byte(good)); err != nil {
		t.Fatalf("good file: %v", err)
	}
	for name, tc := range map[string]struct{ from, to, want string }{
		"version":      {"version = 1", "version = 2", "version 2"},
		"no pair":      {`pair = "lab"`, `pair = ""`, "pair"},
		"one node":     {`nodes = ["head-a", "head-b"]`, `nodes = ["head-a"]`, "nodes"},
		"same nodes":   {`nodes = ["head-a", "head-b"]`, `nodes = ["head-a", "head-a"]`, "nodes"},
		"lease":        {"lease_ms = 2500", "lease_ms = 0", "lease_ms"},
		"port":         {"port = 7791", "port = 70000", "port"},
		"short key":    {strings.Repeat("ab", 32), strings.Repeat("ab", 31), "key"},
		"not hex":      {strings.Repeat("ab", 32), strings.Repeat("zz", 32), "key"},
		"unknown key":  {"port = 7791", "port = 7791\npair_key = \"x\"", "pair_key"},
		"syntax error": {"port = 7791", "port = ", "w.toml"},
	} {
		_, _, err := ParseFile("w.toml", []byte(strings.Replace(good, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
}

// A witness run from the file (the witness key only) serves a head whose
// client is set up from the site config and the pair key, as the
// supervisor sets it up; a client signing with the pair key itself gets
// no answer it accepts.
func TestWitnessFromFileServesTheHeads(t *testing.T) {
	lab, pairKey, _, _, b := labWitnessFile(t)
	wc, _, err := ParseFile("witness.toml", b)
	if err != nil {
		t.Fatal(err)
	}
	wc.Quiet = -1
	_, addr, _ := serve(t, "127.0.0.1:0", wc)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := ClientFromSite(lab, "head-a", pairKey)
	if err != nil {
		t.Fatal(err)
	}
	cc.Addr, cc.Log, cc.Retry = addr, testLog(t).With("side", "head-a"), 20*time.Millisecond
	head, err := NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer head.Close()
	if granted, _, holder, err := head.Request(ctx); err != nil || !granted || holder != "head-a" {
		t.Errorf("head-a from the site config: granted %v holder %q, %v", granted, holder, err)
	}

	cc.Node, cc.Key = "head-b", pairKey
	raw, err := NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	short, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	if granted, _, _, err := raw.Request(short); err == nil || granted {
		t.Errorf("a client with the raw pair key: granted %v, %v", granted, err)
	}
}

// labWitnessFile is the lab site, its pair key, the witness's config and
// port from it, and the file `tandem witness-key` would print for them.
func labWitnessFile(t *testing.T) (*site.Config, []byte, Config, int, []byte) {
	t.Helper()
	lab, err := site.Load("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	pairKey, err := lab.PairKey()
	if err != nil {
		t.Fatal(err)
	}
	c, port, err := FromSite(lab, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := File(c, port)
	if err != nil {
		t.Fatal(err)
	}
	return lab, pairKey, c, port, b
}
