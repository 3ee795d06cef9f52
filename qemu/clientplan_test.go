package qemu

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/site"
)

// labSite is configs/site.lab.toml, with old replaced by new.
func labSite(t *testing.T, old, new string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "configs", "site.lab.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("site.lab.toml has no %q", old)
	}
	return []byte(strings.Replace(string(b), old, new, 1))
}

func TestPlanClient(t *testing.T) {
	lab := labSite(t, "", "")
	elsewhere := labSite(t, `address = "10.0.0.2:7791"`, `address = "10.0.0.5:7791"`)
	noNFS := labSite(t, "[services.nfs]\nenabled = true", "[services.nfs]\nenabled = false")
	tests := []struct {
		name    string
		site    []byte
		addr    string
		witness bool
		export  string
		wantErr bool
	}{
		{name: "no site", addr: "10.0.0.2/24"},
		{name: "site.lab.toml", site: lab, addr: "10.0.0.2/24", witness: true, export: "10.0.0.10:/srv/tandem/vm"},
		{name: "the witness elsewhere", site: elsewhere, addr: "10.0.0.5/24", witness: true, export: "10.0.0.10:/srv/tandem/vm"},
		{name: "NFS off", site: noNFS, addr: "10.0.0.2/24", witness: true},
		{name: "a broken site", site: []byte("version = 1\n[pair\n"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanClient(tc.site)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("PlanClient = %+v, want an error", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Witness != nil {
				// The client gets the witness config, never the pair key.
				sc, err := site.Parse("site.toml", tc.site)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := witness.ParseFile("witness.toml", p.Witness); err != nil || strings.Contains(string(p.Witness), sc.Pair.Key) {
					t.Errorf("the client's witness config: %v\n%s", err, p.Witness)
				}
			}
			if p.Addr != netip.MustParsePrefix(tc.addr) || (p.Witness != nil) != tc.witness || p.Export != tc.export {
				t.Errorf("PlanClient = addr %s, witness %v, export %q; want %s, %v, %q", p.Addr, p.Witness != nil, p.Export, tc.addr, tc.witness, tc.export)
			}
		})
	}
}

func TestMountNFSv3(t *testing.T) {
	p, err := PlanClient(labSite(t, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mount.nfs", "10.0.0.10:/srv/tandem/vm", "/mnt", "-o", "vers=3,hard,proto=tcp,nolock"}
	if got := p.MountNFSv3("/mnt"); !slices.Equal(got, want) {
		t.Errorf("MountNFSv3 = %q, want %q", got, want)
	}
	if got := (ClientPlan{}).MountNFSv3("/mnt"); got != nil {
		t.Errorf("MountNFSv3 without an export = %q, want nil", got)
	}
}
