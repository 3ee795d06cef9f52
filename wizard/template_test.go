package wizard

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"

	"tandem.dev/tandem/site"
)

// templateBody is a valid site config without [pair] and without key.
const templateBody = `[[node]]
name = "nas-a"
disks = ["serial:A1", "serial:A2", "serial:A3", "serial:A4"]
[node.management]
interface = "eno1"
address = "10.0.0.11/24"
[node.replication]
links = ["enp1", "enp2"]
address = "192.168.255.1/24"

[[node]]
name = "nas-b"
disks = ["serial:B1", "serial:B2", "serial:B3", "serial:B4"]
[node.management]
interface = "eno1"
address = "10.0.0.12/24"
[node.replication]
links = ["enp1", "enp2"]
address = "192.168.255.2/24"

[vip]
address = "10.0.0.10/24"

[witness]
address = "10.0.0.2:7791"
`

// TestTemplatePositions: a site config for tandem pair gets the pair key
// as one line, yet every error names the line and column of the
// operator's own file, wherever the key went; a key, a key file or the
// wizard's own lines in it are refused where they are.
func TestTemplatePositions(t *testing.T) {
	header := "version = 1\n\n[pair]\nname = \"nas\"\n\n" // 5 lines before the body
	badVIP := strings.Replace(templateBody, `"10.0.0.10/24"`, `"10.9.0.10/24"`, 1)
	vipLine := 5 + strings.Count(templateBody[:strings.Index(templateBody, `address = "10.0.0.10/24"`)], "\n") + 1
	at := func(line int) string { return "site.toml:" + strconv.Itoa(line) + ":" }
	tests := []struct {
		name, text string
		want       string // the first error's start; "" = valid
	}{
		{"valid, [pair] table", header + templateBody, ""},
		{"valid, dotted pair.name at the root", "version = 1\npair.name = \"nas\"\n\n\n\n" + templateBody, ""},
		{"valid, CRLF", strings.ReplaceAll(header+templateBody, "\n", "\r\n"), ""},
		{"after the key line", header + badVIP, at(vipLine) + "1: vip.address: "},
		{"after the key line, CRLF", strings.ReplaceAll(header+badVIP, "\n", "\r\n"), at(vipLine) + "1: vip.address: "},
		{"dotted pair.name, key on line 1", "version = 1\npair.name = \"nas\"\n\n\n\n" + badVIP, at(vipLine) + "1: vip.address: "},
		{"before the key line", "version = 2\n\n[pair]\nname = \"nas\"\n\n" + templateBody, "site.toml:1:1: version: "},
		{"no pair name: at the [pair] header", "version = 1\n\n[pair]\n\n\n" + templateBody, "site.toml:3:2: pair.name: missing"},
		{"[pair] the last line, no newline", "version = 1\n" + templateBody + "\n[pair]", at(2+strings.Count(templateBody, "\n")+1) + "2: pair.name: missing"},
		{"no pair at all", "version = 1\n" + templateBody, "site.toml:1:1: pair.name: missing"},
		{"syntax error", header + "[vip\n" + templateBody, "site.toml:6:"},
		{"pair.key", "version = 1\n\n[pair]\nname = \"nas\"\nkey = \"" + strings.Repeat("ab", 32) + "\"\n" + templateBody, "site.toml:5:1: pair.key: leave the pair key out"},
		{"pair.key_file", "version = 1\npair.key_file = \"/k\"\n[pair]\nname = \"nas\"\n" + templateBody, "site.toml:2:1: pair.key_file: leave the pair key out"},
		{"the wizard's lines", header + "# tandem-wizard: head x is node nas-a with certificate 00\n" + templateBody, "site.toml:6:1: a line the wizard writes itself"},
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*37 + 11)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, sc, _, err := completeTemplate(configName, []byte(tc.text), key)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, kerr := sc.PairKey()
				if kerr != nil || !bytes.Equal(got, key) {
					t.Errorf("pair key %x, %v", got, kerr)
				}
				// Only the key line was added.
				var rest []string
				for _, l := range strings.SplitAfter(string(cfg), "\n") {
					if !strings.Contains(l, hex.EncodeToString(key)) {
						rest = append(rest, l)
					}
				}
				if strings.Join(rest, "") != tc.text {
					t.Errorf("the config is not the text plus the key line:\n%s", cfg)
				}
				if _, err := CheckTemplate("site.toml", []byte(tc.text)); err != nil {
					t.Errorf("CheckTemplate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q...", err, tc.want)
			}
			var verrs site.ValidationErrors
			var one *site.Error
			if !errors.As(err, &verrs) && !errors.As(err, &one) {
				t.Errorf("not a site error: %T", err)
			}
			if _, cerr := CheckTemplate("site.toml", []byte(tc.text)); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("CheckTemplate says otherwise: %v", cerr)
			}
		})
	}
}
