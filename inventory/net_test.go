package inventory

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/netnstest"
)

// TestReadNetNetns reads real netlink in a throw-away network namespace
// (the test binary re-runs itself under `unshare -n`): two veth NICs,
// each with a default route; the lower metric wins, an IPv4 gateway wins
// over an IPv6 one whatever its metric, and link-local addresses are
// left out.
func TestReadNetNetns(t *testing.T) {
	if !netnstest.Inside(t) {
		return
	}
	add := func(name, cidr string) netlink.Link {
		t.Helper()
		l, err := netlink.LinkByName(name)
		if err != nil {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{name + "p", name} {
				if l, err = netlink.LinkByName(n); err != nil {
					t.Fatal(err)
				}
				if err := netlink.LinkSetUp(l); err != nil {
					t.Fatal(err)
				}
			}
		}
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags = unix.IFA_F_NODAD
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatalf("%s %s: %v", name, cidr, err)
		}
		return l
	}
	route := func(l netlink.Link, gw string, metric int) {
		t.Helper()
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw), Priority: metric}); err != nil {
			t.Fatalf("default via %s: %v", gw, err)
		}
	}
	a := add("inva", "192.0.2.10/24")
	add("inva", "2001:db8::10/64")
	b := add("invb", "198.51.100.10/24")
	route(a, "192.0.2.1", 100)
	route(b, "198.51.100.1", 50)
	route(a, "2001:db8::1", 1)

	ns, err := readNet()
	if err != nil {
		t.Fatal(err)
	}
	if ns.gateway != "198.51.100.1" || ns.gatewayLink != "invb" {
		t.Errorf("gateway %s via %s, want 198.51.100.1 via invb", ns.gateway, ns.gatewayLink)
	}
	la := ns.links["inva"]
	if !slices.Contains(la.addrs, "192.0.2.10/24") || !slices.Contains(la.addrs, "2001:db8::10/64") {
		t.Errorf("inva addresses %v", la.addrs)
	}
	for _, s := range la.addrs {
		if strings.HasPrefix(s, "fe80:") {
			t.Errorf("link-local address %s offered", s)
		}
	}
	if _, err := net.ParseMAC(la.mac); err != nil || la.mac != strings.ToLower(la.mac) {
		t.Errorf("inva MAC %q", la.mac)
	}

	// Without an IPv4 default route, the IPv6 one is the suggestion.
	if err := netlink.RouteDel(&netlink.Route{LinkIndex: a.Attrs().Index, Gw: net.ParseIP("192.0.2.1"), Priority: 100}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteDel(&netlink.Route{LinkIndex: b.Attrs().Index, Gw: net.ParseIP("198.51.100.1"), Priority: 50}); err != nil {
		t.Fatal(err)
	}
	if ns, err = readNet(); err != nil || ns.gateway != "2001:db8::1" || ns.gatewayLink != "inva" {
		t.Errorf("IPv6 only: gateway %q via %q, %v", ns.gateway, ns.gatewayLink, err)
	}
}

func TestDefaultRoute(t *testing.T) {
	_, sub, _ := net.ParseCIDR("10.1.0.0/16")
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	tests := []struct {
		name   string
		routes []netlink.Route
		want   string
		link   int
	}{
		{"none", nil, "", 0},
		{"subnet routes are not default", []netlink.Route{{Dst: sub, Gw: net.ParseIP("10.1.0.1"), LinkIndex: 2}}, "", 0},
		{"no gateway (on-link default)", []netlink.Route{{LinkIndex: 2}}, "", 0},
		{"nil Dst", []netlink.Route{{Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2}}, "10.0.0.1", 2},
		{"0.0.0.0/0 Dst", []netlink.Route{{Dst: all, Gw: net.ParseIP("10.0.0.1"), LinkIndex: 3}}, "10.0.0.1", 3},
		{"lowest metric", []netlink.Route{{Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Priority: 200}, {Gw: net.ParseIP("10.9.0.1"), LinkIndex: 4, Priority: 100}}, "10.9.0.1", 4},
	}
	for _, tt := range tests {
		gw, link, ok := defaultRoute(tt.routes)
		got := ""
		if ok {
			got = gw.String()
		}
		if got != tt.want || link != tt.link {
			t.Errorf("%s: %q via %d, want %q via %d", tt.name, got, link, tt.want, tt.link)
		}
	}
}
