package apt

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Mirrors in these tests are reserved .invalid names: never contacted.
func TestHostSources(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // below etc/apt
		want    []Source
		wantErr string
	}{
		{
			name: "one-line with options and comments",
			files: map[string]string{"sources.list": `
# a comment
deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64,arm64] http://a.invalid/debian/ bookworm main contrib # trailing
deb-src http://a.invalid/debian bookworm main
deb [ trusted=yes ] http://a.invalid/debian bookworm-updates main
deb http://a.invalid/debian bookworm non-free-firmware
deb [check-valid-until=no] http://snapshot.invalid/archive/debian/20150101T000000Z bookworm main
`},
			want: []Source{
				{URI: "http://a.invalid/debian", Suite: "bookworm", Components: []string{"main", "contrib", "non-free-firmware"},
					SignedBy: "/usr/share/keyrings/k.gpg", Arches: []string{"amd64", "arm64"}},
				{URI: "http://a.invalid/debian", Suite: "bookworm-updates", Components: []string{"main"}},
				{URI: "http://snapshot.invalid/archive/debian/20150101T000000Z", Suite: "bookworm", Components: []string{"main"}, NoValidUntil: true},
			},
		},
		{
			name: "deb822 multi-stanza",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb deb-src
# comment inside a stanza
URIs: http://a.invalid/debian http://b.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# comment between stanzas
Types: deb
URIs: http://a.invalid/debian-security
Suites: bookworm-security
Components: main
Architectures: amd64

Types: deb
Enabled: no
URIs: http://c.invalid/debian
Suites: sid
Components: main

Types: deb-src
URIs: http://d.invalid/debian
Suites: bookworm
Components: main
`},
			want: []Source{
				{URI: "http://a.invalid/debian", Suite: "bookworm", Components: []string{"main", "contrib"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
				{URI: "http://a.invalid/debian", Suite: "bookworm-updates", Components: []string{"main", "contrib"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
				{URI: "http://b.invalid/debian", Suite: "bookworm", Components: []string{"main", "contrib"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
				{URI: "http://b.invalid/debian", Suite: "bookworm-updates", Components: []string{"main", "contrib"}, SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"},
				{URI: "http://a.invalid/debian-security", Suite: "bookworm-security", Components: []string{"main"}, Arches: []string{"amd64"}},
			},
		},
		{
			name: "deb822 Check-Valid-Until",
			files: map[string]string{"sources.list.d/snap.sources": "Types: deb\nURIs: http://snapshot.invalid/d\nSuites: bookworm\nComponents: main\nCheck-Valid-Until: no\n\n" +
				"Types: deb\nURIs: http://a.invalid/d\nSuites: bookworm\nComponents: main\nCheck-Valid-Until: yes\n"},
			want: []Source{{URI: "http://snapshot.invalid/d", Suite: "bookworm", Components: []string{"main"}, NoValidUntil: true},
				{URI: "http://a.invalid/d", Suite: "bookworm", Components: []string{"main"}}},
		},
		{
			name: "inline key in Signed-By",
			files: map[string]string{"sources.list.d/x.sources": "Types: deb\nURIs: http://a.invalid/x\nSuites: stable\nComponents: main\n" +
				"Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n AAAA\n -----END PGP PUBLIC KEY BLOCK-----\n"},
			want: []Source{{URI: "http://a.invalid/x", Suite: "stable", Components: []string{"main"},
				SignedBy: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----"}},
		},
		{
			name: "other suffixes and flat repos ignored",
			files: map[string]string{
				"sources.list.d/cloud.list.disabled-by-farm":      "deb http://e.invalid/apt cloud main\n",
				"sources.list.d/node.sources.disabled-by-farm":    "Types: deb\nURIs: http://f.invalid/\nSuites: x\nComponents: main\n",
				"sources.list.d/README":                           "not a source\n",
				"sources.list.d/flat.list":                        "deb http://g.invalid/repo ./\n",
				"sources.list.d/z.list":                           "deb http://h.invalid/debian bookworm main\n",
				"sources.list.d/aa.sources.dpkg-old":              "garbage",
				"sources.list.d/disabled-only.sources":            "Types: deb\nEnabled: no\nURIs: http://i.invalid/\nSuites: x\n",
				"sources.list.d/commented-out.list":               "# deb http://j.invalid/debian bookworm main\n",
				"sources.list.d/deb-src-only.list":                "deb-src http://k.invalid/debian bookworm main\n",
				"sources.list.d/empty.list":                       "",
				"sources.list.d/whitespace.sources":               "\n\n",
				"sources.list.d/dup.list":                         "deb http://h.invalid/debian bookworm main\n",
				"sources.list.d/sub.dir.list/ignored-file.ignore": "",
			},
			want: []Source{{URI: "http://h.invalid/debian", Suite: "bookworm", Components: []string{"main"}}},
		},
		{name: "no files", files: map[string]string{}, want: nil},
		{name: "bad type", files: map[string]string{"sources.list": "debx http://a.invalid/ x main\n"}, wantErr: `unknown type "debx"`},
		{name: "missing suite", files: map[string]string{"sources.list": "deb http://a.invalid/\n"}, wantErr: "want URI and suite"},
		{name: "deb822 without URIs", files: map[string]string{"sources.list.d/a.sources": "Types: deb\nSuites: x\n"}, wantErr: "lacks URIs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(root, "etc/apt", name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := HostSources(root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Keyring paths are re-rooted like the sources.
			for i := range tc.want {
				if strings.HasPrefix(tc.want[i].SignedBy, "/") {
					tc.want[i].SignedBy = filepath.Join(root, tc.want[i].SignedBy)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSuiteSources(t *testing.T) {
	all := []Source{
		{URI: "http://a.invalid/debian", Suite: "bookworm"},
		{URI: "http://a.invalid/debian", Suite: "bookworm-updates"},
		{URI: "http://a.invalid/debian", Suite: "bookworm-backports"},
		{URI: "http://a.invalid/debian-security", Suite: "bookworm-security"},
		{URI: "http://a.invalid/debian", Suite: "trixie"},
		{URI: "http://e.invalid/apt", Suite: "cloud-sdk-bookworm"},
	}
	tests := []struct {
		suite   string
		want    []string
		wantErr string
	}{
		{suite: "bookworm", want: []string{"bookworm", "bookworm-updates", "bookworm-security"}},
		{suite: "trixie", want: []string{"trixie"}},
		{suite: "bullseye", wantErr: `no apt source for suite "bullseye"`},
	}
	for _, tc := range tests {
		got, err := SuiteSources(all, tc.suite)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.suite, err, tc.wantErr)
			}
			continue
		}
		var suites []string
		for _, s := range got {
			suites = append(suites, s.Suite)
		}
		if !reflect.DeepEqual(suites, tc.want) || err != nil {
			t.Errorf("%s: got %v, %v; want %v", tc.suite, suites, err, tc.want)
		}
	}
}

func TestParseMirror(t *testing.T) {
	tests := []struct {
		uri, suite string
		comps      []string
		want       Source
		wantErr    bool
	}{
		{uri: "http://m.invalid/debian/", suite: "bookworm", want: Source{URI: "http://m.invalid/debian", Suite: "bookworm", Components: []string{"main"}}},
		{uri: "https://m.invalid/d", suite: "bookworm-security", comps: []string{"main", "non-free-firmware"},
			want: Source{URI: "https://m.invalid/d", Suite: "bookworm-security", Components: []string{"main", "non-free-firmware"}}},
		{uri: "ftp://m.invalid/debian", suite: "bookworm", wantErr: true},
		{uri: "m.invalid/debian", suite: "bookworm", wantErr: true},
		{uri: "http://m.invalid/debian", suite: "", wantErr: true},
		{uri: "http://m.invalid/debian", suite: "a b", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseMirror(tc.uri, tc.suite, tc.comps)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMirror(%q, %q): err = %v", tc.uri, tc.suite, err)
			continue
		}
		if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseMirror(%q, %q) = %+v, want %+v", tc.uri, tc.suite, got, tc.want)
		}
	}
}
