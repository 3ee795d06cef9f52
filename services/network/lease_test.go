package network

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"

	"tandem.dev/tandem/internal/netnstest"
	"tandem.dev/tandem/site"
)

func ack(t *testing.T, addr, mask string, routers ...string) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithYourIP(net.ParseIP(addr))}
	if mask != "" {
		mods = append(mods, dhcpv4.WithNetmask(net.IPMask(net.ParseIP(mask).To4())))
	}
	var rs []net.IP
	for _, r := range routers {
		rs = append(rs, net.ParseIP(r))
	}
	if len(rs) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(rs...)))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A DHCP server is anyone on the management network who answers first: a
// lease that would give this head the VIP, or route the replication
// subnet out of the management NIC, is refused.
func TestCheckLease(t *testing.T) {
	c := ManagementConfig{VIP: netip.MustParseAddr("10.0.0.10"),
		Replication: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24")}}
	tests := []struct {
		name, addr, mask string
		routers          []string
		errHas           string // "" accepted
	}{
		{"ordinary lease", "10.0.0.50", "255.255.255.0", []string{"10.0.0.1"}, ""},
		{"no gateway", "10.0.0.50", "255.255.255.0", nil, ""},
		{"the VIP", "10.0.0.10", "255.255.255.0", nil, "the pair's VIP"},
		{"the VIP as gateway", "10.0.0.50", "255.255.255.0", []string{"10.0.0.10"}, "VIP 10.0.0.10 as its gateway"},
		{"in the replication subnet", "10.10.0.11", "255.255.255.0", nil, "overlaps the replication subnet 10.10.0.0/24"},
		{"a subnet that covers the replication one", "10.0.0.50", "255.0.0.0", nil, "overlaps the replication subnet"},
		{"classful default mask covers it", "10.0.0.50", "", nil, "overlaps the replication subnet"},
		{"gateway in the replication subnet", "10.0.0.50", "255.255.255.0", []string{"10.10.0.12"}, "in the replication subnet"},
		{"no address", "0.0.0.0", "255.255.255.0", nil, "no usable IPv4 address"},
		{"broadcast", "255.255.255.255", "255.255.255.0", nil, "no usable IPv4 address"},
		{"non-contiguous mask", "10.0.0.50", "255.0.255.0", nil, "non-contiguous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.checkLease(ack(t, tt.addr, tt.mask, tt.routers...))
			if tt.errHas == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("got %v, want an error containing %q", err, tt.errHas)
			}
		})
	}
}

// The site's VIP and every node's replication subnet reach the config.
func TestManagementFromSiteReserved(t *testing.T) {
	sc := &site.Config{
		VIP: site.VIP{Address: "10.0.0.10/24"},
		Nodes: []site.Node{
			{Name: "a", Management: site.Management{Interface: "eth0", DHCP: true}, Replication: site.Replication{Address: "10.10.0.11/24"}},
			{Name: "b", Management: site.Management{Interface: "eth0", DHCP: true}, Replication: site.Replication{Address: "10.10.0.12/24"}},
		},
	}
	c, err := ManagementFromSite(sc, "a")
	if err != nil {
		t.Fatal(err)
	}
	if c.VIP != netip.MustParseAddr("10.0.0.10") || len(c.Replication) != 1 || c.Replication[0] != netip.MustParsePrefix("10.10.0.0/24") {
		t.Errorf("VIP %v, replication %v", c.VIP, c.Replication)
	}
}

// TestDHCPLeaseNetns runs the real DHCP client against a server that
// hands out the VIP, over a veth pair in a throw-away network namespace
// (the test binary re-runs itself under `unshare -n`): Start must fail
// and leave the address off the link.
func TestDHCPLeaseNetns(t *testing.T) {
	if !netnstest.Inside(t) {
		return
	}

	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mA"}, PeerName: "mB"}); err != nil {
		t.Fatal(err)
	}
	srv, _ := netlink.LinkByName("mB")
	if err := netlink.AddrAdd(srv, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 0, 2), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(srv); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, offer string
		ok          bool
	}{
		{"the VIP is refused", "10.0.0.10", false},
		{"another address is taken", "10.0.0.50", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer serveDHCP(t, "mB", "10.0.0.2", tc.offer)()
			sc := &site.Config{VIP: site.VIP{Address: "10.0.0.10/24"}, Nodes: []site.Node{
				{Name: "a", Management: site.Management{Interface: "mA", DHCP: true}, Replication: site.Replication{Address: "10.10.0.11/24"}}}}
			cfg, err := ManagementFromSite(sc, "a")
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewManagement(cfg, Options{ResolvConf: t.TempDir() + "/resolv.conf", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = m.Start(ctx)
			defer m.Stop(context.Background())
			l, _ := netlink.LinkByName("mA")
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			on := false
			for _, a := range addrs {
				on = on || a.IP.Equal(net.ParseIP(tc.offer))
			}
			switch {
			case tc.ok && (err != nil || !on):
				t.Errorf("Start: %v; %s on the link: %v", err, tc.offer, on)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "the pair's VIP")):
				t.Errorf("Start took the lease of the VIP: err %v", err)
			case !tc.ok && on:
				t.Errorf("the VIP %s is on the link after a refused lease", tc.offer)
			}
		})
	}
}

// serveDHCP answers DHCP on iface (whose address is server) with offer,
// a /24, until the returned func is called.
func serveDHCP(t *testing.T, iface, server, offer string) func() {
	t.Helper()
	s, err := server4.NewServer(iface, nil, func(conn net.PacketConn, _ net.Addr, req *dhcpv4.DHCPv4) {
		typ := dhcpv4.MessageTypeOffer
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(net.ParseIP(offer)), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithServerIP(net.ParseIP(server)), dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(server))))
		if err == nil {
			conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	return func() { s.Close() }
}
