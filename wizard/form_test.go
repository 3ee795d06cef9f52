package wizard

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"tandem.dev/tandem/site"
)

func TestFieldFor(t *testing.T) {
	rows := []int{0, 2} // export[1] is the form's third row
	tests := []struct{ path, want string }{
		{"pair.name", "pair_name"},
		{"vip.address", "vip"},
		{"witness", "witness"},
		{"witness.address", "witness_addr"},
		{"witness.ping_target", "ping_target"},
		{"node[0].name", "node0_name"},
		{"node[1].management.address", "node1_mgmt"},
		{"node[1].management.gateway", "node1_gw"},
		{"node[0].management.dns[1]", "node0_dns"},
		{"node[0].replication.address", "node0_repl"},
		{"node[1].replication.links", "hw1.repl"},
		{"node[1].replication.links[0]", "hw1.repl"},
		{"node[0].management.interface", "hw0.mgmt"},
		{"node[0].disks", "hw0.disk"},
		{"node[1].disks[3]", "hw1.disk"},
		{"services.nfs.export[0].path", "export0_path"},
		{"services.nfs.export[1].clients[0]", "export2_clients"},
		{"services.nfs.export[1].options[2]", "export2_options"},
		{"services.nfs.export[5].path", ""},
		{"storage.drbd.port", ""},
		{"node[0].replication.mtu", ""},
	}
	for _, tc := range tests {
		if got := fieldFor(tc.path, rows); got != tc.want {
			t.Errorf("fieldFor(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// TestValidationWords: what the site form shows next to a field is, word
// for word, what the site package (and so tandem validate) says about
// the key behind it; what has no field is shown whole, file:line:col
// and key path.
func TestValidationWords(t *testing.T) {
	id, peer := testIdentities(t)
	hw := [2]Hardware{fakeHardware(1), fakeHardware(2)}
	base := suggest(id, peer, hw)
	base.VIP, base.WitnessAddr = "10.0.0.10/24", "10.0.0.2:7791"
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*37 + 11)
	}
	if cfg, fe, err := validate(&base, key); err != nil || len(fe) != 0 {
		t.Fatalf("the suggestion does not validate: %v %v\n%s", err, fe, cfg)
	}
	tests := []struct {
		name  string
		edit  func(in *siteInput)
		field string
	}{
		{"VIP outside the subnet", func(in *siteInput) { in.VIP = "10.9.0.10/24" }, "vip"},
		{"no VIP", func(in *siteInput) { in.VIP = "" }, "vip"},
		{"bad pair name", func(in *siteInput) { in.PairName = "NAS_1" }, "pair_name"},
		{"same host names", func(in *siteInput) { in.Nodes[1].Name = "nas-a" }, "node1_name"},
		{"gateway outside", func(in *siteInput) { in.Nodes[0].Gateway = "10.1.0.1" }, "node0_gw"},
		{"bad DNS", func(in *siteInput) { in.Nodes[1].DNS = "10.0.0.53, dns" }, "node1_dns"},
		{"replication subnets differ", func(in *siteInput) { in.Nodes[1].Repl = "192.168.254.2/24" }, "node1_repl"},
		{"witness on a head", func(in *siteInput) { in.WitnessAddr = "10.0.0.11:7791" }, "witness_addr"},
		{"no tiebreaker", func(in *siteInput) { in.WitnessAddr = "" }, "witness"},
		{"bad ping target", func(in *siteInput) { in.Witness, in.PingTarget = "ping", "gateway" }, "ping_target"},
		{"export outside", func(in *siteInput) { in.Exports[2] = exportInput{Path: "/etc", Clients: "*"} }, "export2_path"},
		{"async", func(in *siteInput) { in.Exports[0].Options = "rw, async" }, "export0_options"},
		{"no clients", func(in *siteInput) { in.Exports[0].Clients = "" }, "export0_clients"},
		{"three disks", func(in *siteInput) { in.Nodes[1].Disks = in.Nodes[1].Disks[:3] }, "hw1.disk"},
		{"one link", func(in *siteInput) { in.Nodes[0].Links = in.Nodes[0].Links[:1] }, "hw0.repl"},
	}
	for _, tc := range tests {
		in := base
		in.Nodes = base.Nodes // arrays copy; the slices inside are not edited in place
		tc.edit(&in)
		cfg, fe, err := validate(&in, key)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, perr := site.Parse(configName, cfg)
		var verrs site.ValidationErrors
		if !errors.As(perr, &verrs) {
			t.Fatalf("%s: the site package accepts it: %v", tc.name, perr)
		}
		var want []string
		for _, e := range verrs {
			if f := fieldFor(e.Path, in.exportRows()); f == tc.field {
				want = append(want, e.Msg)
			}
		}
		got := fe[tc.field]
		if len(want) == 0 || strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: field %s shows %q, the site package says %q (all: %v)", tc.name, tc.field, got, want, perr)
		}
	}
	// A problem that belongs to no field: the whole line.
	in := base
	in.Exports[0].Options = "rw, sync, fsid=3"
	_, fe, _ := validate(&in, key)
	if msgs := fe["export0_options"]; len(msgs) == 0 {
		t.Errorf("fsid in options: %v", fe)
	}
}

func testIdentities(t *testing.T) (*Identity, Peer) {
	t.Helper()
	a, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return a, Peer{ID: b.ID, Fingerprint: b.Fingerprint, Image: testImage}
}

// TestSuggest: disks with a signature and the system disk are never
// pre-selected; the NIC the wizard is reached on is management.
func TestSuggest(t *testing.T) {
	id, peer := testIdentities(t)
	hw := [2]Hardware{fakeHardware(1), fakeHardware(2)}
	// Only two blank disks on B: still no disk with data chosen.
	hw[1].Disks = append([]Disk(nil), hw[1].Disks[:3]...)
	hw[1].Disks = append(hw[1].Disks, Disk{Model: "X", Serial: "DATA2", SizeBytes: 1, Signature: "linux_raid_member"})
	in := suggest(id, peer, hw)
	for h, n := range in.Nodes {
		for _, s := range n.Disks {
			d, _ := hw[h].disk(s)
			if d.Signature != "" || d.System {
				t.Errorf("head %d: %s pre-selected (%q, system %v)", h, s, d.Signature, d.System)
			}
		}
		if n.MgmtNIC != "eno1" || len(n.Links) != 2 || contains(n.Links, "eno2") {
			t.Errorf("head %d: mgmt %s, links %v", h, n.MgmtNIC, n.Links)
		}
	}
	if len(in.Nodes[0].Disks) != 4 || len(in.Nodes[1].Disks) != 2 {
		t.Errorf("disks: %v / %v", in.Nodes[0].Disks, in.Nodes[1].Disks)
	}
}

// TestDataDiskNeedsConfirmation: through HTTP, a disk that holds data is
// refused until the form confirms its destruction by serial, and the
// confirmation of one disk does not cover another.
func TestDataDiskNeedsConfirmation(t *testing.T) {
	p := newPair(t, nil, nil)
	p.toHardware(t)
	data := "WD-WCC7K2HX4TZ"
	f := p.hardwareForm()
	f["disk1"] = append(f["disk1"][:3], data)
	st, body := p.op.post("/hardware", f)
	if st != http.StatusUnprocessableEntity || !strings.Contains(body, "holds data (xfs): tick &#34;Destroy the data on "+data+"&#34; to use it") {
		t.Fatalf("unconfirmed: %d\n%s", st, body)
	}
	f["destroy1"] = []string{"WD-WCC7K1HX4TZ"} // A's disk, not this one
	f["destroy0"] = []string{data}
	if st, _ := p.op.post("/hardware", f); st != http.StatusUnprocessableEntity {
		t.Fatalf("confirmed for the wrong disk: %d", st)
	}
	f["destroy1"] = []string{data}
	if st, body := p.op.post("/hardware", f); st != http.StatusOK || !strings.Contains(body, "Site settings") {
		t.Fatalf("confirmed: %d\n%s", st, body)
	}
	p.a.w.mu.Lock()
	got := p.a.w.ini.in.Nodes[1].Destroy
	p.a.w.mu.Unlock()
	if len(got) != 1 || got[0] != data {
		t.Errorf("destroy list %v", got)
	}
	// The system disk cannot be chosen at all.
	f["disk0"] = append(f["disk0"], "S45RNA0M100001")
	p.op.post("/hardware", f)
	p.a.w.mu.Lock()
	defer p.a.w.mu.Unlock()
	if contains(p.a.w.ini.in.Nodes[0].Disks, "S45RNA0M100001") {
		t.Error("the system disk was taken")
	}
}
