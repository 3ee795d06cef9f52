package apt

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func testLock(t *testing.T) (*Lock, []string, ResolveOptions) {
	t.Helper()
	p := pkgStanza
	idx := testIndex(t,
		p("samba", "2:4.17.12+dfsg-0+deb12u1", "amd64", "Depends: libc6, python3"),
		p("libc6", "2.36-9+deb12u4", "amd64", "X-Security: yes"),
		p("tzdata", "2024a-0+deb12u1", "all"),
		p("python3", "3.11.2-1", "amd64"))
	roots := []string{"tzdata", "samba"}
	opts := ResolveOptions{Exclude: []string{"python3"}}
	res, err := idx.Resolve(roots, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res.Lock(roots, opts), roots, opts
}

func TestLockRoundTrip(t *testing.T) {
	lock, _, _ := testLock(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "packages.lock")
	if err := WriteLock(file, lock); err != nil {
		t.Fatal(err)
	}
	if err := WriteLock(file, lock); err != nil { // overwrite in place
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# Generated") {
		t.Errorf("lock lacks the generated header:\n%s", b)
	}
	if strings.Contains(string(b), "m.invalid") {
		t.Errorf("the lockfile names a mirror; it must name suites only:\n%s", b)
	}
	got, err := ReadLock(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Bind([]Source{{URI: srcMain.URI, Suite: "bookworm"}, {URI: srcSec.URI, Suite: "bookworm-security"}}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, lock) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, lock)
	}
	var order []string
	for _, p := range got.Packages {
		order = append(order, p.Name)
	}
	if want := []string{"libc6", "samba", "tzdata"}; !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if l := got.Packages[0]; l.Source != srcSec.URI || l.Arch != "amd64" || l.Size == 0 || len(l.SHA256) != 64 ||
		l.URL() != srcSec.URI+"/pool/main/l/libc6_2.36-9+deb12u4_amd64.deb" {
		t.Errorf("libc6 entry = %+v", l)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestLockCovers(t *testing.T) {
	lock, roots, opts := testLock(t)
	tests := []struct {
		name    string
		roots   []string
		exclude []string
		want    bool
	}{
		{name: "same", roots: roots, exclude: opts.Exclude, want: true},
		{name: "reordered and duplicated", roots: []string{"samba", " tzdata", "samba"}, exclude: opts.Exclude, want: true},
		{name: "root added", roots: append([]string{"mdadm"}, roots...), exclude: opts.Exclude},
		{name: "root removed", roots: roots[:1], exclude: opts.Exclude},
		{name: "exclude changed", roots: roots, exclude: []string{"perl"}},
		{name: "exclude dropped", roots: roots},
	}
	for _, tc := range tests {
		if got := lock.Covers(tc.roots, ResolveOptions{Exclude: tc.exclude}); got != tc.want {
			t.Errorf("%s: Covers = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReadLockRejects(t *testing.T) {
	good := `format = 1
arch = "amd64"
roots = ["a"]
exclude = []
[[package]]
name = "a"
version = "1"
arch = "amd64"
sha256 = "` + strings.Repeat("ab", 32) + `"
size = 10
filename = "pool/main/a/a_1_amd64.deb"
suite = "stable"
`
	tests := []struct {
		name, from, to, wantErr string
	}{
		{name: "good"},
		{name: "format", from: "format = 1", to: "format = 2", wantErr: "format 2"},
		{name: "short sha", from: strings.Repeat("ab", 32), to: "abcd", wantErr: "bad sha256"},
		{name: "upper-case sha", from: strings.Repeat("ab", 32), to: strings.Repeat("AB", 32), wantErr: "bad sha256"},
		{name: "path escape", from: "pool/main/a/", to: "pool/../../", wantErr: "bad filename"},
		{name: "absolute path", from: `"pool/`, to: `"/pool/`, wantErr: "bad filename"},
		{name: "no suite", from: "suite = \"stable\"\n", to: "", wantErr: "missing suite"},
		{name: "mirror in lock", from: "suite = \"stable\"", to: "suite = \"stable\"\nsource = \"http://m.invalid/debian\"", wantErr: "source"},
		{name: "zero size", from: "size = 10", to: "size = 0", wantErr: "bad size"},
		{name: "unknown field", from: "arch = \"amd64\"\nroots", to: "arch = \"amd64\"\nmirror = 1\nroots", wantErr: "mirror"},
		{name: "duplicate", from: "[[package]]", to: "[[package]]\nname = \"a\"\nversion = \"1\"\narch = \"amd64\"\nsha256 = \"" +
			strings.Repeat("ab", 32) + "\"\nsize = 10\nfilename = \"p\"\nsuite = \"stable\"\n[[package]]", wantErr: "listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := good
			if tc.from != "" {
				if !strings.Contains(text, tc.from) {
					t.Fatalf("test bug: %q not in lock", tc.from)
				}
				text = strings.Replace(text, tc.from, tc.to, 1)
			}
			file := filepath.Join(t.TempDir(), "packages.lock")
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadLock(file)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
