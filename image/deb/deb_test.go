package deb

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ent is one tar entry of a test package.
type ent struct {
	name string
	typ  byte
	mode int64
	body string
	link string
	gid  int
}

func dir(name string, mode int64) ent { return ent{name: name, typ: tar.TypeDir, mode: mode} }
func reg(name string, mode int64, body string) ent {
	return ent{name: name, typ: tar.TypeReg, mode: mode, body: body}
}
func sym(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hard(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, mode: 0o755, link: target}
}

func makeTar(t *testing.T, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Gid: e.gid, Size: int64(len(e.body))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressed(t *testing.T, comp string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch comp {
	case "":
		return data
	case ".gz":
		w := gzip.NewWriter(&buf)
		_, err = w.Write(data)
		if err == nil {
			err = w.Close()
		}
	case ".xz":
		var w *xz.Writer
		if w, err = xz.NewWriter(&buf); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	case ".zst":
		var w *zstd.Encoder
		if w, err = zstd.NewWriter(&buf); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	default:
		return data // unknown suffix: the reader must reject it
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type member struct {
	name string
	data []byte
}

func makeAr(members []member) []byte {
	var buf bytes.Buffer
	buf.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, 0, 0, 0, 0o100644, len(m.data))
		buf.Write(m.data)
		if len(m.data)%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

const testControl = "Package: pkg\nVersion: 1.0-1\nArchitecture: amd64\nDescription: test\n two lines\n"

// makeDeb builds a .deb whose control.tar is gzip and data.tar uses comp.
func makeDeb(t *testing.T, comp string, data []ent) []byte {
	t.Helper()
	ctl := makeTar(t, []ent{
		dir("./", 0o755),
		reg("./control", 0o644, testControl),
		reg("./conffiles", 0o644, "/etc/pkg.conf\nremove-on-upgrade /etc/old.conf\n"),
		reg("./postinst", 0o755, "#!/bin/sh\n"),
	})
	return makeAr([]member{
		{"debian-binary", []byte("2.0\n")},
		{"control.tar.gz", compressed(t, ".gz", ctl)},
		{"data.tar" + comp, compressed(t, comp, makeTar(t, data))},
	})
}

func writeDeb(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pkg.deb")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var sampleData = []ent{
	dir("./", 0o755),
	dir("./bin/", 0o755),
	reg("./bin/tool", 0o755, "tool binary"),
	dir("./sbin/", 0o755),
	hard("./sbin/tool-alias", "./bin/tool"),
	reg("./lib/x86_64-linux-gnu/libx.so.1", 0o644, "lib"), // parents implicit
	dir("./usr/", 0o755),
	dir("./usr/bin/", 0o755),
	reg("./usr/bin/su", 0o4755, "setuid"),
	sym("./usr/bin/sh", "/bin/dash"),
	reg("./usr/share/doc/pkg/copyright", 0o644, "legal"),
	reg("./usr/share/man/man8/tool.8.gz", 0o644, "man"),
	reg("./usr/share/locale/de/LC_MESSAGES/pkg.mo", 0o644, "de"),
	reg("./usr/share/pkg/data", 0o644, "kept"),
	{name: "./etc/pkg.conf", typ: tar.TypeReg, mode: 0o640, body: "conf", gid: 42},
	dir("./var/lib/pkg/", 0o2775),
}

func TestExtractCompressions(t *testing.T) {
	for _, comp := range []string{".gz", ".xz", ".zst", ""} {
		t.Run("data.tar"+comp, func(t *testing.T) {
			dest := t.TempDir()
			res, err := Extract(writeDeb(t, makeDeb(t, comp, sampleData)), dest, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Package(); got != "pkg" {
				t.Errorf("Package = %q", got)
			}
			if got := res.Control.Values["Version"]; got != "1.0-1" {
				t.Errorf("Version = %q", got)
			}
			if !slices.Equal(res.Conffiles, []string{"etc/pkg.conf"}) {
				t.Errorf("Conffiles = %q", res.Conffiles)
			}
			if _, ok := res.ControlFiles["postinst"]; !ok {
				t.Errorf("postinst missing from ControlFiles")
			}
			if res.Dropped != 3 {
				t.Errorf("Dropped = %d, want 3", res.Dropped)
			}
			checkTree(t, dest, res)
		})
	}
}

func checkTree(t *testing.T, dest string, res *Result) {
	t.Helper()
	files := map[string]string{
		"usr/bin/tool":                       "tool binary",
		"usr/sbin/tool-alias":                "tool binary",
		"usr/lib/x86_64-linux-gnu/libx.so.1": "lib",
		"usr/bin/su":                         "setuid",
		"usr/share/pkg/data":                 "kept",
		"etc/pkg.conf":                       "conf",
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(dest, p))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	modes := map[string]fs.FileMode{
		"usr/bin/su":   0o755 | fs.ModeSetuid,
		"usr/bin/tool": 0o755,
		"etc/pkg.conf": 0o640,
		"var/lib/pkg":  0o775 | fs.ModeSetgid | fs.ModeDir,
		"usr/lib":      0o755 | fs.ModeDir,
	}
	for p, want := range modes {
		fi, err := os.Lstat(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s mode = %v, want %v", p, got, want)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(dest, "usr/bin/sh")); err != nil || tgt != "/bin/dash" {
		t.Errorf("usr/bin/sh -> %q, %v; want /bin/dash (targets stay as shipped)", tgt, err)
	}
	a, errA := os.Stat(filepath.Join(dest, "usr/bin/tool"))
	b, errB := os.Stat(filepath.Join(dest, "usr/sbin/tool-alias"))
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		t.Errorf("usr/sbin/tool-alias is not a hard link of usr/bin/tool (%v %v)", errA, errB)
	}
	for _, p := range []string{"bin", "sbin", "lib", "usr/share/doc", "usr/share/man", "usr/share/locale"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists, want absent (err %v)", p, err)
		}
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(dest, "etc/pkg.conf"))
		if err == nil && fi.Sys().(*syscall.Stat_t).Gid != 42 {
			t.Errorf("etc/pkg.conf gid = %d, want 42", fi.Sys().(*syscall.Stat_t).Gid)
		}
	}
	var got []string
	for _, f := range res.Files {
		got = append(got, f.Path)
	}
	want := []string{"usr/bin", "usr/bin/tool", "usr/sbin", "usr/sbin/tool-alias", "usr/lib/x86_64-linux-gnu/libx.so.1",
		"usr", "usr/bin", "usr/bin/su", "usr/bin/sh", "usr/share/pkg/data", "etc/pkg.conf", "var/lib/pkg"}
	if !slices.Equal(got, want) {
		t.Errorf("Files = %q\nwant    %q", got, want)
	}
	for _, f := range res.Files {
		if f.Path == "usr/sbin/tool-alias" && (f.Type != tar.TypeLink || f.Link != "usr/bin/tool") {
			t.Errorf("hard link recorded as %+v", f)
		}
	}
}

func TestExtractRefusesEscape(t *testing.T) {
	tests := []struct {
		name    string
		data    []ent
		wantErr string
	}{
		{"dotdot", []ent{reg("./../outside/evil", 0o644, "x")}, "escapes the destination"},
		{"nested dotdot", []ent{reg("./usr/../../outside/evil", 0o644, "x")}, "escapes the destination"},
		{"absolute name", []ent{reg("/outside/evil", 0o644, "x")}, "absolute path"},
		{"absolute symlink parent", []ent{sym("./etc", "OUTSIDE"), reg("./etc/evil", 0o644, "x")}, `parent "etc" is a symlink`},
		{"relative symlink parent", []ent{sym("./up", "../outside"), reg("./up/evil", 0o644, "x")}, `parent "up" is a symlink`},
		// Stays inside destDir, so os.Root alone would allow it; we never follow.
		{"in-root symlink parent", []ent{dir("./b/", 0o755), sym("./a", "b"), reg("./a/x", 0o644, "x")}, `parent "a" is a symlink`},
		{"symlink then dir", []ent{sym("./d", "OUTSIDE"), dir("./d/", 0o755)}, "symlink is in the way of a directory"},
		{"symlink then symlink inside", []ent{sym("./d", "OUTSIDE"), sym("./d/evil", "/x")}, `parent "d" is a symlink`},
		{"usrmerge into symlinked usr/bin", []ent{dir("./usr/", 0o755), sym("./usr/bin", "OUTSIDE"), reg("./bin/evil", 0o755, "x")}, `parent "usr/bin" is a symlink`},
		{"hard link out", []ent{hard("./h", "../outside/secret")}, "escapes the destination"},
		{"hard link through symlink", []ent{sym("./s", "OUTSIDE"), hard("./h", "./s/secret")}, `parent "s" is a symlink`},
		{"hard link to symlink", []ent{sym("./s", "OUTSIDE/secret"), hard("./h", "./s")}, `target "s" is a symlink`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dest, outside := filepath.Join(base, "dest"), filepath.Join(base, "outside")
			for _, d := range []string{dest, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			data := slices.Clone(tc.data)
			for i := range data {
				data[i].link = strings.ReplaceAll(data[i].link, "OUTSIDE", outside)
			}
			// ExtractReader: no file name in the error to match by accident.
			_, err := ExtractReader(bytes.NewReader(makeDeb(t, ".gz", data)), dest, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)

			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 || ents[0].Name() != "secret" {
				t.Errorf("outside was touched: %v", ents)
			}
			if fi, err := os.Stat(filepath.Join(outside, "secret")); err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Errorf("outside/secret changed: %v %v", fi, err)
			}
		})
	}
}

func TestExtractDropOption(t *testing.T) {
	data := []ent{
		reg("./usr/share/doc/pkg/README", 0o644, "r"),
		reg("./usr/share/docs-not-doc/x", 0o644, "x"), // prefix match is per path component
		reg("./etc/pkg.conf", 0o644, "c"),
	}
	tests := []struct {
		name    string
		drop    []string
		present []string
		absent  []string
		dropped int
	}{
		{"nil means default", nil, []string{"usr/share/docs-not-doc/x", "etc/pkg.conf"}, []string{"usr/share/doc"}, 1},
		{"empty keeps all", []string{}, []string{"usr/share/doc/pkg/README", "usr/share/docs-not-doc/x", "etc/pkg.conf"}, nil, 0},
		{"custom", []string{"etc"}, []string{"usr/share/doc/pkg/README"}, []string{"etc"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			res, err := Extract(writeDeb(t, makeDeb(t, ".zst", data)), dest, Options{Drop: tc.drop})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.present {
				if _, err := os.Lstat(filepath.Join(dest, p)); err != nil {
					t.Errorf("%s: %v", p, err)
				}
			}
			for _, p := range tc.absent {
				if _, err := os.Lstat(filepath.Join(dest, p)); !os.IsNotExist(err) {
					t.Errorf("%s should be absent (err %v)", p, err)
				}
			}
			if res.Dropped != tc.dropped {
				t.Errorf("Dropped = %d, want %d", res.Dropped, tc.dropped)
			}
		})
	}
}

func TestExtractConflicts(t *testing.T) {
	tests := []struct {
		name         string
		first, later []ent
		wantReplaced []string
		wantErr      string
		check        string // path whose content must be "later"
	}{
		{"file over file", []ent{reg("./usr/bin/x", 0o755, "first")}, []ent{reg("./bin/x", 0o755, "later")}, []string{"usr/bin/x"}, "", "usr/bin/x"},
		{"file over symlink", []ent{sym("./usr/bin/x", "y")}, []ent{reg("./usr/bin/x", 0o755, "later")}, []string{"usr/bin/x"}, "", "usr/bin/x"},
		{"shared dirs are no conflict", []ent{dir("./usr/", 0o755), reg("./usr/a", 0o644, "a")}, []ent{dir("./usr/", 0o755), reg("./usr/b", 0o644, "later")}, nil, "", "usr/b"},
		{"file over dir", []ent{dir("./usr/x/", 0o755)}, []ent{reg("./usr/x", 0o644, "later")}, nil, "directory is in the way", ""},
		{"dir over file", []ent{reg("./usr/x", 0o644, "first")}, []ent{dir("./usr/x/", 0o755)}, nil, "in the way of a directory", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			if _, err := Extract(writeDeb(t, makeDeb(t, ".gz", tc.first)), dest, Options{}); err != nil {
				t.Fatal(err)
			}
			res, err := Extract(writeDeb(t, makeDeb(t, ".gz", tc.later)), dest, Options{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Replaced, tc.wantReplaced) {
				t.Errorf("Replaced = %q, want %q", res.Replaced, tc.wantReplaced)
			}
			if b, err := os.ReadFile(filepath.Join(dest, tc.check)); err != nil || string(b) != "later" {
				t.Errorf("%s = %q, %v; later package must win", tc.check, b, err)
			}
		})
	}
}

func TestExtractMalformed(t *testing.T) {
	good := makeDeb(t, ".gz", []ent{reg("./a", 0o644, "a")})
	ctl := compressed(t, ".gz", makeTar(t, []ent{reg("./control", 0o644, testControl)}))
	data := makeTar(t, []ent{reg("./a", 0o644, "a")})
	tests := []struct {
		name    string
		deb     []byte
		wantErr string
	}{
		{"not ar", []byte("PK\x03\x04 definitely not a deb"), "not an ar archive"},
		{"truncated", good[:len(good)-100], "EOF"},
		{"no data member", makeAr([]member{{"debian-binary", []byte("2.0\n")}, {"control.tar.gz", ctl}}), "incomplete"},
		{"bzip2 data", makeAr([]member{{"debian-binary", []byte("2.0\n")}, {"control.tar.gz", ctl}, {"data.tar.bz2", data}}), "unsupported compression"},
		{"format 3", makeAr([]member{{"debian-binary", []byte("3.0\n")}}), "format version"},
		{"stray member", makeAr([]member{{"debian-binary", []byte("2.0\n")}, {"evil", nil}}), "unexpected ar member"},
		{"no control file", makeAr([]member{{"debian-binary", []byte("2.0\n")}, {"control.tar", makeTar(t, nil)}}), "no control file"},
		{"device node", makeDeb(t, ".gz", []ent{{name: "./dev/null", typ: tar.TypeChar, mode: 0o666}}), "unsupported tar entry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ExtractReader(bytes.NewReader(tc.deb), t.TempDir(), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)

			}
		})
	}
}
