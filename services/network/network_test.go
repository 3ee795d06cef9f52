package network

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"tandem.dev/tandem/services"
)

func TestBondPlan(t *testing.T) {
	base := func() *Bond {
		return &Bond{BondConfig: BondConfig{Device: "bond0", Links: []string{"eth1", "eth2"}, MIIMon: 100 * time.Millisecond, MTU: 1500}}
	}
	tests := []struct {
		name     string
		edit     func(b *Bond)
		wantKind services.Kind
		wantErr  string
		check    func(t *testing.T, nb *netlink.Bond)
	}{
		{name: "ethernet miimon", edit: func(*Bond) {}, check: func(t *testing.T, nb *netlink.Bond) {
			if nb.Mode != netlink.BOND_MODE_ACTIVE_BACKUP || nb.Miimon != 100 || nb.ArpInterval > 0 || nb.MTU != 1500 {
				t.Errorf("got mode %v miimon %d arp %d mtu %d", nb.Mode, nb.Miimon, nb.ArpInterval, nb.MTU)
			}
			if nb.FailOverMac == netlink.BOND_FAIL_OVER_MAC_ACTIVE {
				t.Error("fail_over_mac=active on Ethernet")
			}
		}},
		{name: "arp monitoring replaces miimon", edit: func(b *Bond) {
			b.ARPTargets = []netip.Addr{netip.MustParseAddr("10.10.0.12")}
		}, check: func(t *testing.T, nb *netlink.Bond) {
			if nb.Miimon != 0 || nb.ArpInterval != 100 || len(nb.ArpIpTargets) != 1 || nb.ArpIpTargets[0].String() != "10.10.0.12" {
				t.Errorf("got miimon %d arp %d targets %v", nb.Miimon, nb.ArpInterval, nb.ArpIpTargets)
			}
			if nb.ArpValidate != netlink.BOND_ARP_VALIDATE_ACTIVE {
				t.Errorf("arp_validate %v", nb.ArpValidate)
			}
		}},
		{name: "ipoib", edit: func(b *Bond) { b.IPoIB, b.IPoIBMTU = true, 65520 }, check: func(t *testing.T, nb *netlink.Bond) {
			if nb.FailOverMac != netlink.BOND_FAIL_OVER_MAC_ACTIVE || nb.MTU != 65520 || nb.Mode != netlink.BOND_MODE_ACTIVE_BACKUP {
				t.Errorf("got fail_over_mac %v mtu %d mode %v", nb.FailOverMac, nb.MTU, nb.Mode)
			}
		}},
		{name: "explicit active-backup", edit: func(b *Bond) { b.Mode = "active-backup" }},
		{name: "802.3ad on ipoib refused", edit: func(b *Bond) { b.IPoIB, b.IPoIBMTU, b.Mode = true, 65520, "802.3ad" },
			wantKind: services.Refused, wantErr: "only active-backup works over InfiniBand"},
		{name: "balance-rr on ipoib refused", edit: func(b *Bond) { b.IPoIB, b.Mode = true, "balance-rr" },
			wantKind: services.Refused, wantErr: "InfiniBand"},
		{name: "balance-rr on ethernet", edit: func(b *Bond) { b.Mode = "balance-rr" }, wantKind: services.Config, wantErr: "only active-backup"},
		{name: "unknown mode", edit: func(b *Bond) { b.Mode = "fastest" }, wantKind: services.Config, wantErr: "unknown bond mode"},
		{name: "one link", edit: func(b *Bond) { b.Links = b.Links[:1] }, wantKind: services.Config, wantErr: "two or more links"},
		{name: "no miimon", edit: func(b *Bond) { b.MIIMon = 0 }, wantKind: services.Config, wantErr: "miimon"},
		{name: "name too long", edit: func(b *Bond) { b.Device = "bond-replication0" }, wantKind: services.Config, wantErr: "bond name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := base()
			tt.edit(b)
			nb, err := b.Plan()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || services.KindOf(err) != tt.wantKind {
					t.Fatalf("err = %v (kind %v), want %v %q", err, services.KindOf(err), tt.wantKind, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if nb.Name != "bond0" {
				t.Errorf("name %q", nb.Name)
			}
			if tt.check != nil {
				tt.check(t, nb)
			}
		})
	}
}

func TestFindLink(t *testing.T) {
	links := []LocalLink{{Name: "eth0", MAC: "52:54:00:00:0a:00"}, {Name: "eth1", MAC: "52:54:00:00:0a:01"}}
	tests := []struct {
		ref, want string
		ok        bool
	}{
		{"eth1", "eth1", true},
		{"52:54:00:00:0A:01", "eth1", true}, // MACs compare case-insensitively
		{"52-54-00-00-0a-00", "eth0", true},
		{"eth9", "", false},
		{"52:54:00:00:0a:09", "", false},
	}
	for _, tt := range tests {
		l, ok := Find(links, tt.ref)
		if ok != tt.ok || l.Name != tt.want {
			t.Errorf("Find(%q) = %q %v, want %q %v", tt.ref, l.Name, ok, tt.want, tt.ok)
		}
	}
}
