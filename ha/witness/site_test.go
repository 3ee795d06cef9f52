package witness

import (
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
	want, _ := site.DecodeKey(lab.Pair.Key)
	if c.Pair != lab.Pair.Name || string(c.Key) != string(want) || len(c.Nodes) != 2 || c.Nodes[0] != lab.Nodes[0].Name ||
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
	if err := os.WriteFile(kf, []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, port, err = FromSite(ex, kf)
	if err != nil || len(c.Key) != 32 || port != 7791 || c.Pair != "vdi-nas" {
		t.Errorf("example with --key-file: %+v %d %v", c, port, err)
	}
	if err := os.WriteFile(kf, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromSite(ex, kf); err == nil {
		t.Errorf("a short key was accepted")
	}
}
