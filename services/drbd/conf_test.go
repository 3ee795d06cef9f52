package drbd

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"

	"tandem.dev/tandem/internal/golden"

	"tandem.dev/tandem/site"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func labSite(t *testing.T) *site.Config {
	t.Helper()
	data, err := os.ReadFile("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := site.Parse("site.lab.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestRenderLabGolden(t *testing.T) {
	sc := labSite(t)
	key, err := site.DecodeKey(sc.Pair.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := FromSite(sc, "head-a", key, "/dev/md/tandem")
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "lab-r0.res", got)
	if bytes.Contains(got, []byte(sc.Pair.Key)) {
		t.Error("the pair key itself is in the resource file")
	}
	for _, bad := range []string{"discard-", "allow-two-primaries"} {
		if bytes.Contains(got, []byte(bad)) {
			t.Errorf("resource file contains %q", bad)
		}
	}
	// Both heads render the same file (only Self differs).
	other, _ := FromSite(sc, "head-b", key, "/dev/md/tandem")
	b, _ := other.Render()
	if !bytes.Equal(got, b) {
		t.Error("the two heads render different resource files")
	}
}

func TestRenderIPv6(t *testing.T) {
	cfg := labConfig(t, "head-a")
	cfg.Nodes[0].Address, cfg.Nodes[1].Address = mustAddr("fd00:10::11"), mustAddr("fd00:10::12")
	got, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "address ipv6 [fd00:10::11]:7789;") {
		t.Errorf("no bracketed ipv6 address:\n%s", got)
	}
}

func TestRenderRejects(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
	}{
		{"protocol A", func(c *Config) { c.Protocol = "A" }},
		{"resource name breaks syntax", func(c *Config) { c.Resource = "r0 { }" }},
		{"disk with a space", func(c *Config) { c.Nodes[0].Disk = "/dev/md0; disk /dev/sda" }},
		{"disk not under /dev", func(c *Config) { c.Nodes[1].Disk = "md0" }},
		{"secret with a quote", func(c *Config) { c.Secret = strings.Repeat("a", 40) + `"` }},
		{"empty secret", func(c *Config) { c.Secret = "" }},
		{"self not a node", func(c *Config) { c.Self = "head-c" }},
		{"same names", func(c *Config) { c.Nodes[1].Name = "head-a" }},
		{"no address", func(c *Config) { c.Nodes[1].Address = netip.Addr{} }},
		{"port", func(c *Config) { c.Port = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := labConfig(t, "head-a")
			tc.mod(&cfg)
			if _, err := cfg.Render(); err == nil {
				t.Error("rendered")
			}
		})
	}
}

func TestSharedSecret(t *testing.T) {
	key := bytes.Repeat([]byte{1, 2, 3, 4}, 8)
	s1, err := SharedSecret(key, "lab", "r0")
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != 48 || len(s1) > 63 {
		t.Errorf("secret length %d", len(s1))
	}
	if _, err := hex.DecodeString(s1); err != nil {
		t.Errorf("secret is not hex: %v", err)
	}
	if strings.Contains(s1, hex.EncodeToString(key[:8])) {
		t.Error("secret contains key bytes")
	}
	again, _ := SharedSecret(key, "lab", "r0")
	otherRes, _ := SharedSecret(key, "lab", "r1")
	otherPair, _ := SharedSecret(key, "prod", "r0")
	key2 := append([]byte(nil), key...)
	key2[0] ^= 1
	otherKey, _ := SharedSecret(key2, "lab", "r0")
	if s1 != again {
		t.Error("not deterministic: the heads would not agree")
	}
	for _, o := range []string{otherRes, otherPair, otherKey} {
		if o == s1 {
			t.Error("secret does not depend on key, pair and resource")
		}
	}
	if _, err := SharedSecret(key[:16], "lab", "r0"); err == nil {
		t.Error("short key accepted")
	}
}

func TestFromSiteRejectsStranger(t *testing.T) {
	sc := labSite(t)
	key, _ := site.DecodeKey(sc.Pair.Key)
	if _, err := FromSite(sc, "head-z", key, "/dev/md/tandem"); err == nil {
		t.Error("a host that is not a node got a config")
	}
}
