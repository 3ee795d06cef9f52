package pid1

import (
	"strings"
	"testing"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/site"
)

func TestIdentify(t *testing.T) {
	node := func(name, ifname, mac string, links ...string) site.Node {
		n := site.Node{Name: name}
		n.Management.Interface, n.Management.MAC = ifname, mac
		n.Replication.Links = links
		return n
	}
	lab := []site.Node{node("head-a", "eth0", "", "eth1", "eth2"), node("head-b", "eth0", "", "eth1", "eth2")}
	byMAC := []site.Node{
		node("head-a", "", "52:54:00:00:0a:00", "eth1", "eth2"),
		node("head-b", "", "52:54:00:00:0b:00", "eth1", "eth2"),
	}
	here := func(macs ...string) []network.LocalLink {
		var l []network.LocalLink
		for i, m := range macs {
			l = append(l, network.LocalLink{Name: "eth" + string(rune('0'+i)), MAC: m})
		}
		return l
	}
	aNICs := here("52:54:00:00:0a:00", "52:54:00:00:0a:01", "52:54:00:00:0a:02")
	tests := []struct {
		name    string
		nodes   []site.Node
		hints   nodeHints
		want    string
		how     string
		wantErr string
	}{
		{"mac", byMAC, nodeHints{Links: aNICs}, "head-a", "mac 52:54:00:00:0a:00", ""},
		{"mac, upper case in config", []site.Node{node("head-a", "", "52:54:00:00:0A:00"), node("head-b", "", "52:54:00:00:0b:00")},
			nodeHints{Links: aNICs}, "head-a", "mac", ""},
		{"mac beats the SMBIOS serial", byMAC, nodeHints{Links: aNICs, DMISerial: "head-b"}, "head-a", "mac", ""},
		{"mac agrees with the cmdline", byMAC, nodeHints{Links: aNICs, Cmdline: "head-a"}, "head-a", "mac", ""},
		{"mac disagrees with the cmdline", byMAC, nodeHints{Links: aNICs, Cmdline: "head-b"}, "", "", "tandem.node=head-b on the kernel command line, but this head has the NIC of node head-a"},
		{"both nodes' MACs here", byMAC, nodeHints{Links: here("52:54:00:00:0a:00", "52:54:00:00:0b:00")}, "", "", "NICs of several nodes"},
		{"replication link by MAC", []site.Node{node("head-a", "eth0", "", "52:54:00:00:0a:01", "eth2"), node("head-b", "eth0", "", "52:54:00:00:0b:01", "eth2")},
			nodeHints{Links: aNICs}, "head-a", "mac 52:54:00:00:0a:01", ""},
		{"pairing", lab, nodeHints{Links: aNICs, Paired: "head-b"}, "head-b", "pairing", ""},
		{"pairing beats the SMBIOS serial", lab, nodeHints{Links: aNICs, Paired: "head-b", DMISerial: "head-a"}, "head-b", "pairing", ""},
		{"pairing agrees with the mac", byMAC, nodeHints{Links: aNICs, Paired: "head-a"}, "head-a", "mac", ""},
		{"pairing disagrees with the mac", byMAC, nodeHints{Links: aNICs, Paired: "head-b"}, "", "", "the pairing made this head node head-b, but it has the NIC of node head-a"},
		{"pairing disagrees with the cmdline", lab, nodeHints{Links: aNICs, Paired: "head-b", Cmdline: "head-a"}, "", "", "tandem.node=head-a on the kernel command line, but the pairing made this head node head-b"},
		{"cmdline", lab, nodeHints{Links: aNICs, Cmdline: "head-b"}, "head-b", "kernel command line tandem.node", ""},
		{"cmdline beats the SMBIOS serial", lab, nodeHints{Links: aNICs, Cmdline: "head-b", DMISerial: "head-a"}, "head-b", "kernel command line", ""},
		{"cmdline names no node", lab, nodeHints{Cmdline: "head-c"}, "", "", "no such node (nodes: head-a, head-b)"},
		{"SMBIOS serial", lab, nodeHints{Links: aNICs, DMISerial: "head-a"}, "head-a", "SMBIOS system serial", ""},
		{"SMBIOS serial of another machine", lab, nodeHints{Links: aNICs, DMISerial: "VMware-42 1a"}, "", "", "cannot tell which node"},
		{"interface names decide", []site.Node{node("head-a", "eno1", "", "ib0", "ib1"), node("head-b", "eth0", "", "eth1", "eth2")},
			nodeHints{Links: aNICs}, "head-b", "interface names", ""},
		{"interface names ambiguous", lab, nodeHints{Links: aNICs}, "", "", "set node.management.mac, or boot with tandem.node=<name>"},
		{"MACs configured but absent", byMAC, nodeHints{Links: here("52:54:00:00:0c:00")}, "", "", "cannot tell which node"},
		{"no nodes", nil, nodeHints{}, "", "", "defines no nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, how, err := identify(tt.nodes, tt.hints)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || !strings.HasPrefix(how, tt.how) {
				t.Errorf("got %s by %q, want %s by %q", got, how, tt.want, tt.how)
			}
		})
	}
}

// A real board refuses the lab's key and shell; the lab board takes them.
func TestRefuseLabSettings(t *testing.T) {
	sc, err := site.Load("../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		board   string
		refused bool
	}{{"qemu-x86_64", false}, {"generic-x86_64", true}} {
		bd, err := board.Load(tc.board)
		if err != nil {
			t.Fatal(err)
		}
		b := &Boot{Board: bd, Site: sc}
		err = b.refuseLabSettings()
		if (err != nil) != tc.refused {
			t.Errorf("%s: %v, want refused %v", tc.board, err, tc.refused)
		}
		if err != nil && !strings.Contains(err.Error(), "pair.key") {
			t.Errorf("%s: the error does not name the key: %v", tc.board, err)
		}
	}
}
