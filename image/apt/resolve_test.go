package apt

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var (
	srcMain = Source{URI: "http://m.invalid/debian", Suite: "bookworm"}
	srcSec  = Source{URI: "http://m.invalid/debian-security", Suite: "bookworm-security"}
)

// testIndex builds an index from stanzas of two sources: stanzas whose
// text contains "X-Security: yes" come from the security source.
func testIndex(t *testing.T, stanzas ...string) *Index {
	t.Helper()
	var main, sec strings.Builder
	for _, s := range stanzas {
		if strings.Contains(s, "X-Security: yes") {
			sec.WriteString(s)
		} else {
			main.WriteString(s)
		}
	}
	a, err := ParsePackages([]byte(main.String()), srcMain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParsePackages([]byte(sec.String()), srcSec)
	if err != nil {
		t.Fatal(err)
	}
	return NewIndex("amd64", []Source{srcMain, srcSec}, append(a, b...))
}

func names(res *Resolution) []string {
	var out []string
	for _, p := range res.Packages {
		out = append(out, p.Name+"="+p.Version)
	}
	return out
}

func TestResolve(t *testing.T) {
	p := pkgStanza
	tests := []struct {
		name         string
		pkgs         []string
		roots        []string
		exclude      []string
		want         []string            // name=version, sorted
		wantExcluded map[string][]string // excluded → wanted by
		wantErr      string
	}{
		{
			name:  "plain closure, sorted output",
			pkgs:  []string{p("zed", "1", "amd64", "Depends: alpha"), p("alpha", "2", "all"), p("unused", "1", "all")},
			roots: []string{"zed"},
			want:  []string{"alpha=2", "zed=1"},
		},
		{
			name: "first satisfiable alternative",
			pkgs: []string{p("app", "1", "amd64", "Depends: missing | b | c"),
				p("b", "1", "all"), p("c", "1", "all")},
			roots: []string{"app"},
			want:  []string{"app=1", "b=1"},
		},
		{
			name: "alternative already selected is preferred",
			pkgs: []string{p("app", "1", "amd64", "Depends: b | c"),
				p("b", "1", "all"), p("c", "1", "all")},
			roots: []string{"app", "c"},
			want:  []string{"app=1", "c=1"},
		},
		{
			name: "explicit root steers an alternative",
			pkgs: []string{p("app", "1", "amd64", "Depends: usrmerge | usr-is-merged"),
				p("usrmerge", "1", "all", "Depends: perl"), p("perl", "1", "amd64"),
				p("usr-is-merged", "1", "all")},
			roots: []string{"usr-is-merged", "app"},
			want:  []string{"app=1", "usr-is-merged=1"},
		},
		{
			name: "virtual-only package, provider by priority",
			pkgs: []string{p("app", "1", "amd64", "Depends: mail-transport-agent"),
				p("postfix", "1", "amd64", "Provides: mail-transport-agent", "Priority: optional"),
				p("exim4", "1", "amd64", "Provides: mail-transport-agent", "Priority: standard"),
				p("aaa-mta", "1", "amd64", "Provides: mail-transport-agent", "Priority: extra")},
			roots: []string{"app"},
			want:  []string{"app=1", "exim4=1"},
		},
		{
			name:  "virtual root, provider by name on equal priority",
			pkgs:  []string{p("zmta", "1", "amd64", "Provides: mta"), p("amta", "1", "amd64", "Provides: mta")},
			roots: []string{"mta"},
			want:  []string{"amta=1"},
		},
		{
			name: "real package preferred over provider",
			pkgs: []string{p("app", "1", "amd64", "Depends: awk"),
				p("awk", "1", "amd64"), p("mawk", "1", "amd64", "Provides: awk")},
			roots: []string{"app"},
			want:  []string{"app=1", "awk=1"},
		},
		{
			name: "versioned provides satisfies versioned dependency",
			pkgs: []string{p("app", "1", "amd64", "Depends: libfoo-abi (>= 2)"),
				p("old", "1", "amd64", "Provides: libfoo-abi (= 1)"),
				p("new", "1", "amd64", "Provides: libfoo-abi (= 2.5), other")},
			roots: []string{"app"},
			want:  []string{"app=1", "new=1"},
		},
		{
			name: "unversioned provides does not satisfy versioned dependency",
			pkgs: []string{p("app", "1", "amd64", "Depends: foo (>= 1)"),
				p("bar", "1", "amd64", "Provides: foo")},
			roots:   []string{"app"},
			wantErr: `apt: app 1 depends on "foo (>= 1)": no version of foo (>= 1) matches (have bar provides it)`,
		},
		{
			name: "highest version by default, across sources",
			pkgs: []string{p("linux-image-amd64", "6.1.90-1", "amd64"),
				p("linux-image-amd64", "6.1.99-1", "amd64", "X-Security: yes"),
				p("linux-image-amd64", "6.1.95-1", "amd64")},
			roots: []string{"linux-image-amd64"},
			want:  []string{"linux-image-amd64=6.1.99-1"},
		},
		{
			name: "version constraint picks an older version",
			pkgs: []string{p("app", "1", "amd64", "Depends: lib (<< 2)"),
				p("lib", "1.5", "amd64"), p("lib", "2.0", "amd64", "X-Security: yes"), p("lib", "1.0", "amd64")},
			roots: []string{"app"},
			want:  []string{"app=1", "lib=1.5"},
		},
		{
			name: "operators, epochs and tildes",
			pkgs: []string{p("app", "1", "amd64", "Depends: a (>= 1.0~rc1), b (>> 1:0), c (= 2.0-1), d (<= 1.0~rc1), e (> 1)"),
				p("a", "1.0", "all"), p("b", "1:0.5", "all"), p("b", "2.0", "all"),
				p("c", "2.0-1", "all"), p("c", "2.0-2", "all"),
				p("d", "1.0", "all"), p("d", "1.0~rc1", "all"), p("e", "1", "all")},
			roots: []string{"app"},
			want:  []string{"a=1.0", "app=1", "b=1:0.5", "c=2.0-1", "d=1.0~rc1", "e=1"},
		},
		{
			name: "unsatisfiable version names depender and dependency",
			pkgs: []string{p("samba", "2:4.17.12-1", "amd64", "Depends: libc6 (>= 2.38) | musl"),
				p("libc6", "2.36-9", "amd64"), p("libc6", "2.36-8", "amd64")},
			roots:   []string{"samba"},
			wantErr: `apt: samba 2:4.17.12-1 depends on "libc6 (>= 2.38) | musl": no version of libc6 (>= 2.38) matches (have 2.36-9, 2.36-8); no package "musl" in bookworm, bookworm-security`,
		},
		{
			name:    "missing dependency",
			pkgs:    []string{p("app", "1.2", "amd64", "Depends: libgone1")},
			roots:   []string{"app"},
			wantErr: `apt: app 1.2 depends on "libgone1": no package "libgone1" in bookworm, bookworm-security`,
		},
		{
			name: "conflicting constraints on one package",
			pkgs: []string{p("app", "1", "amd64", "Depends: lib (>= 2)"),
				p("lib", "1", "amd64"), p("lib", "2", "amd64")},
			roots:   []string{"lib=1", "app"},
			wantErr: `apt: app 1 depends on "lib (>= 2)": lib 1 is already selected`,
		},
		{
			name:    "unknown root",
			pkgs:    []string{p("app", "1", "amd64")},
			roots:   []string{"app", "foo"},
			wantErr: `apt: package "foo" not found in bookworm, bookworm-security`,
		},
		{
			name:  "root version constraints",
			pkgs:  []string{p("lib", "1", "amd64"), p("lib", "2", "amd64"), p("tool", "3", "amd64"), p("tool", "4", "amd64")},
			roots: []string{"lib (<< 2)", "tool=3"},
			want:  []string{"lib=1", "tool=3"},
		},
		{
			name:    "root version not available",
			pkgs:    []string{p("lib", "1", "amd64")},
			roots:   []string{"lib=9"},
			wantErr: `apt: package "lib (= 9)": no version of lib (= 9) matches (have 1)`,
		},
		{
			name: "exclude records who wanted it",
			pkgs: []string{p("samba", "1", "amd64", "Depends: python3:any, python3-samba, libc6"),
				p("xfsprogs", "1", "amd64", "Depends: python3:any (>= 3.11), libc6"),
				p("python3-samba", "1", "amd64", "Depends: python3"),
				p("python3", "3.11", "amd64"), p("libc6", "2.36", "amd64")},
			roots:        []string{"xfsprogs", "samba"},
			exclude:      []string{"python3", "python3-samba"},
			want:         []string{"libc6=2.36", "samba=1", "xfsprogs=1"},
			wantExcluded: map[string][]string{"python3": {"samba", "xfsprogs"}, "python3-samba": {"samba"}},
		},
		{
			name: "exclude virtual package whose providers are all excluded",
			pkgs: []string{p("app", "1", "amd64", "Depends: default-mta | mail-transport-agent"),
				p("default-mta", "1", "all", "Depends: exim4"), p("exim4", "1", "amd64", "Provides: mail-transport-agent")},
			roots:        []string{"app"},
			exclude:      []string{"default-mta", "exim4"},
			want:         []string{"app=1"},
			wantExcluded: map[string][]string{"default-mta": {"app"}},
		},
		{
			name:    "root both requested and excluded",
			pkgs:    []string{p("perl", "1", "amd64")},
			roots:   []string{"perl"},
			exclude: []string{"perl"},
			wantErr: `"perl" is both requested and excluded`,
		},
		{
			name:  "pre-depends",
			pkgs:  []string{p("app", "1", "amd64", "Pre-Depends: init-system-helpers (>= 1.54~)"), p("init-system-helpers", "1.65", "all")},
			roots: []string{"app"},
			want:  []string{"app=1", "init-system-helpers=1.65"},
		},
		{
			name:  "recommends and suggests ignored",
			pkgs:  []string{p("app", "1", "amd64", "Recommends: big", "Suggests: bigger"), p("big", "1", "all"), p("bigger", "1", "all")},
			roots: []string{"app"},
			want:  []string{"app=1"},
		},
		{
			name: "cycle",
			pkgs: []string{p("a", "1", "amd64", "Depends: b"), p("b", "1", "amd64", "Pre-Depends: c"),
				p("c", "1", "amd64", "Depends: a (= 1)")},
			roots: []string{"b"},
			want:  []string{"a=1", "b=1", "c=1"},
		},
		{
			name: "architecture qualifiers and restrictions",
			pkgs: []string{p("app", "1", "amd64", "Depends: perl:any, libc6:native, lib32:i386 | fallback, winonly [!amd64], linux [amd64 arm64]"),
				p("perl", "1", "amd64", "Multi-Arch: allowed"), p("libc6", "1", "amd64"),
				p("lib32", "1", "i386"), p("fallback", "1", "all"), p("linux", "1", "amd64")},
			roots: []string{"app"},
			want:  []string{"app=1", "fallback=1", "libc6=1", "linux=1", "perl=1"},
		},
		{
			name:    "foreign-architecture package is not indexed",
			pkgs:    []string{p("wine32", "1", "i386")},
			roots:   []string{"wine32"},
			wantErr: `apt: package "wine32" not found`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx := testIndex(t, tc.pkgs...)
			res, err := idx.Resolve(tc.roots, ResolveOptions{Exclude: tc.exclude})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(res); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
			got := map[string][]string{}
			for _, e := range res.Excluded {
				got[e.Name] = e.WantedBy
			}
			if tc.wantExcluded == nil {
				tc.wantExcluded = map[string][]string{}
			}
			if !reflect.DeepEqual(got, tc.wantExcluded) {
				t.Errorf("excluded = %v, want %v", got, tc.wantExcluded)
			}
			for _, p := range res.Packages {
				if why := res.Why(p.Name); len(why) == 0 || why[len(why)-1] != p.Name {
					t.Errorf("Why(%s) = %v", p.Name, why)
				}
			}
		})
	}
}

// The same universe in any stanza order must give the same result.
func TestResolveDeterministic(t *testing.T) {
	p := pkgStanza
	pkgs := []string{
		p("app", "1", "amd64", "Depends: mta, libz | libzz, tool"),
		p("m1", "1", "amd64", "Provides: mta"), p("m2", "1", "amd64", "Provides: mta"),
		p("m3", "1", "amd64", "Provides: mta (= 2)"),
		p("libz", "1", "amd64"), p("libz", "2", "amd64"), p("libz", "2", "amd64", "X-Security: yes"),
		p("libzz", "1", "amd64"), p("tool", "1", "all", "Depends: app"),
	}
	var first []string
	var firstSrc string
	for i := range 20 {
		shuffled := slices.Clone(pkgs)
		rand.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		res, err := testIndex(t, shuffled...).Resolve([]string{"app"}, ResolveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := names(res)
		src := res.Packages[slices.IndexFunc(res.Packages, func(p *Package) bool { return p.Name == "libz" })].Suite
		if i == 0 {
			first, firstSrc = got, src
			if want := []string{"app=1", "libz=2", "m1=1", "tool=1"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			continue
		}
		if !reflect.DeepEqual(got, first) || src != firstSrc {
			t.Fatalf("run %d: %v from %s, first run %v from %s", i, got, src, first, firstSrc)
		}
	}
	if firstSrc != "bookworm" {
		t.Errorf("libz 2 from %s, want the first source", firstSrc)
	}
}

func TestParseRelations(t *testing.T) {
	tests := []struct {
		in      string
		want    string // groups joined by ", ", alternatives by " | "
		wantErr bool
	}{
		{in: "libc6 (>= 2.34), libfoo:any | bar (<< 2~)", want: "libc6 (>= 2.34), libfoo:any | bar (<< 2~)"},
		{in: "a(>=1)", want: "a (>= 1)"},
		{in: "a (<1), b (>2)", want: "a (<= 1), b (>= 2)"},
		{in: "a [!amd64] | b [amd64], c <!nocheck>, d (>= 1) [linux-any] <stage1>", want: "b, c"},
		{in: " a ,\n  b ", want: "a, b"},
		{in: "", want: ""},
		{in: "a (>= )", wantErr: true},
		{in: "a (~= 1)", wantErr: true},
		{in: "a (>= 1", wantErr: true},
		{in: "a | , b", wantErr: true},
	}
	for _, tc := range tests {
		groups, err := parseRelations(tc.in, "amd64")
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err = %v", tc.in, err)
			continue
		}
		var parts []string
		for _, g := range groups {
			parts = append(parts, groupString(g))
		}
		if got := strings.Join(parts, ", "); !tc.wantErr && got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParsePackagesErrors(t *testing.T) {
	tests := []struct {
		name, text, wantErr string
	}{
		{name: "no filename", text: "Package: a\nVersion: 1\n\n", wantErr: "lacks"},
		{name: "bad size", text: "Package: a\nVersion: 1\nFilename: x\nSize: big\n", wantErr: "Size"},
		{name: "no colon", text: "Package a\n", wantErr: "Field: value"},
	}
	for _, tc := range tests {
		if _, err := ParsePackages([]byte(tc.text), srcMain); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
