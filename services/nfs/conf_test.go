package nfs

import (
	"os"
	"slices"
	"strings"
	"testing"

	"tandem.dev/tandem/internal/golden"

	"tandem.dev/tandem/site"
)

// richSite is the lab pair with more exports, to cover options,
// several clients, UUID fsids and a path that needs escaping.
const richSite = `
[[services.nfs.export]]
path = "/srv/tandem/vm"
clients = ["10.0.0.0/24", "10.0.1.5"]
fsid = 1

[[services.nfs.export]]
path = "/srv/tandem/media library"
clients = ["*"]
options = ["ro", "root_squash", "no_subtree_check"]
fsid = "6F1C2A4E-0B7D-4E55-9A3B-1C2D3E4F5A6B"

[[services.nfs.export]]
path = "/srv/tandem/landing"
clients = ["@bigdata", "host-*.example.com"]
options = ["rw", "no_root_squash", "sec=sys:krb5p"]
fsid = 42
`

func parseSite(t *testing.T, extra string) *site.Config {
	t.Helper()
	data, err := os.ReadFile("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		// Replace the lab's single export with extra's.
		s := string(data)
		i := strings.Index(s, "[[services.nfs.export]]")
		j := strings.Index(s, "[vip]")
		s = s[:i] + strings.TrimLeft(extra, "\n") + "\n" + s[j:]
		data = []byte(s)
	}
	sc, err := site.Parse("site.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestExportsGolden(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{{"lab.exports", ""}, {"rich.exports", richSite}} {
		t.Run(tc.name, func(t *testing.T) {
			c := fromSite(t, parseSite(t, tc.extra))
			got, err := RenderExports(c.Exports)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.name, got)
			for _, line := range strings.Split(strings.TrimSpace(string(got)), "\n")[1:] {
				if !strings.Contains(line, "fsid=") || !strings.Contains(line, "sync") {
					t.Errorf("line without fixed fsid or sync: %s", line)
				}
			}
		})
	}
}

func TestNFSConfGolden(t *testing.T) {
	c := fromSite(t, parseSite(t, ""))
	golden.Check(t, "lab-nfs.conf", RenderNFSConf(c))
}

func TestRenderExportsRejects(t *testing.T) {
	ok := Export{Path: "/srv/tandem/a", Clients: []string{"*"}, FSID: "1"}
	cases := map[string][]Export{
		"relative path":  {{Path: "srv", Clients: []string{"*"}, FSID: "1"}},
		"no fsid":        {{Path: "/srv/tandem/a", Clients: []string{"*"}}},
		"fsid 0 (root)":  {{Path: "/srv/tandem/a", Clients: []string{"*"}, FSID: "0"}},
		"no clients":     {{Path: "/srv/tandem/a", FSID: "1"}},
		"duplicate fsid": {ok, {Path: "/srv/tandem/b", Clients: []string{"*"}, FSID: "1"}},
		"client injects": {{Path: "/srv/tandem/a", Clients: []string{"* (rw,no_root_squash)"}, FSID: "1"}},
	}
	for name, exports := range cases {
		if _, err := RenderExports(exports); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

func TestNfsdArgs(t *testing.T) {
	base := Config{Scope: "lab", GraceSeconds: 15, LeaseSeconds: 12, Threads: 8}
	cases := []struct {
		versions []string
		want     string
	}{
		{[]string{"3", "4.1", "4.2"}, "-G 15 -L 12 -U -V 3 -N 4.0 -V 4.1 -V 4.2 8"},
		{[]string{"3"}, "-G 15 -L 12 -U -V 3 -N 4 8"},
		{[]string{"4.2"}, "-G 15 -L 12 -U -N 3 -N 4.0 -N 4.1 -V 4.2 8"},
		{[]string{"4.1"}, "-G 15 -L 12 -U -N 3 -N 4.0 -V 4.1 -N 4.2 8"},
	}
	for _, tc := range cases {
		c := base
		c.Versions = tc.versions
		if got := strings.Join(nfsdArgs(c), " "); got != tc.want {
			t.Errorf("%v:\n got %s\nwant %s", tc.versions, got, tc.want)
		}
	}
}

func TestVersionDiff(t *testing.T) {
	want := wantVersions(Config{Versions: []string{"3", "4.2"}})
	cases := []struct{ proc, diff string }{
		{"-2 +3 +4 -4.0 -4.1 +4.2\n", ""},
		{"-2 +3 +4 +4.0 +4.1 +4.2\n", "4.0 is on, 4.1 is on"},
		{"-2 -3 +4 -4.0 -4.1 -4.2\n", "3 is off, 4.2 is off"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := versionDiff(tc.proc, want); got != tc.diff {
			t.Errorf("%q: %q, want %q", tc.proc, got, tc.diff)
		}
	}
}

func TestFromSiteStateOnReplicatedFS(t *testing.T) {
	c := fromSite(t, parseSite(t, ""))
	if c.Scope != "lab" || c.StateDir != "/srv/tandem/.tandem/nfs" || !slices.Equal(c.Versions, site.DefaultNFSVersions) {
		t.Errorf("config %+v", c)
	}
	if err := c.check(); err != nil {
		t.Error(err)
	}
	c.StateDir = "/var/lib/nfs"
	if c.check() == nil {
		t.Error("state outside the replicated filesystem accepted")
	}
}

// fromSite is FromSite for the site's first head.
func fromSite(t *testing.T, sc *site.Config) Config {
	t.Helper()
	c, err := FromSite(sc, sc.Nodes[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
