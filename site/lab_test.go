package site

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every pair key printed in the repository's configs and docs is on the
// published list, so that no head outside the lab accepts it.
func TestPublishedKeysListed(t *testing.T) {
	keyLine := regexp.MustCompile(`(?m)^\s*key\s*=\s*"([^"]+)"`)
	var files []string
	for _, glob := range []string{"../configs/*.toml", "../docs/*.md", "../README.md", "testdata/*.toml"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	found := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keyLine.FindAllStringSubmatch(string(raw), -1) {
			key, err := DecodeKey(m[1])
			if err != nil {
				continue // prose, not a key
			}
			found++
			if _, ok := KeyIsPublished(key); !ok {
				t.Errorf("%s: key %s… is printed here but not in publishedKeys", f, m[1][:8])
			}
		}
	}
	if found == 0 {
		t.Fatal("found no key at all: the scan is broken")
	}
}

func TestCheckHardware(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(string) string
		key   func(*Config) []byte
		wants []string // "": accepted
	}{
		{"the lab config", nil, nil, []string{
			`site.lab.toml:%d:1: pair.key: is the published key of configs/site.lab.toml`,
			`site.lab.toml:%d:1: diagnostics.rescue_shell: opens a root shell`}},
		{"a site's own key, no shell", func(s string) string {
			s = strings.Replace(s, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "7d4e3eec80026719639ed4dba68916eb94c7a49a053e05c8f9578fe4e5a3d7ea", 1)
			return strings.Replace(s, "rescue_shell = true", "rescue_shell = false", 1)
		}, nil, nil},
		{"key not readable here", func(s string) string { return strings.Replace(s, "rescue_shell = true", "rescue_shell = false", 1) },
			func(*Config) []byte { return nil }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := os.ReadFile("../configs/site.lab.toml")
			if err != nil {
				t.Fatal(err)
			}
			text := string(raw)
			if tc.edit != nil {
				text = tc.edit(text)
			}
			c, err := Parse("site.lab.toml", []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			key, _ := c.PairKey()
			if tc.key != nil {
				key = tc.key(c)
			}
			err = c.CheckHardware("generic-x86_64", key)
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted on hardware")
			}
			lines := []int{lineOf(t, text, "key = "), lineOf(t, text, "rescue_shell = ")}
			for i, w := range tc.wants {
				w = fmt.Sprintf(w, lines[i])
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// lineOf is the 1-based line of the first line starting with prefix.
func lineOf(t *testing.T, text, prefix string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	t.Fatalf("no line starts with %q", prefix)
	return 0
}
