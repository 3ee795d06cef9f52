package network

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"tandem.dev/tandem/internal/netnstest"
)

func TestLinkLocal(t *testing.T) {
	for _, tc := range []struct{ mac, want string }{
		{"52:54:00:1a:0a:00", "169.254.11.0/16"},
		{"52:54:00:1a:fe:ff", "169.254.1.255/16"}, // 0xfe % 254 = 0: never the reserved 169.254.0.x
		{"52:54:00:1a:ff:10", "169.254.2.16/16"},
		{"52:54:00:1a:fd:01", "169.254.254.1/16"}, // never 169.254.255.x
	} {
		p, err := LinkLocal(tc.mac)
		if err != nil || p.String() != tc.want {
			t.Errorf("LinkLocal(%s) = %v, %v; want %s", tc.mac, p, err, tc.want)
		}
	}
	if _, err := LinkLocal("not a mac"); err == nil {
		t.Error("LinkLocal took a malformed MAC")
	}
}

// TestUnconfiguredNetns brings up an unconfigured head's management
// network over veth pairs in a throw-away namespace: with a DHCP server
// behind the second NIC only, that NIC's lease wins and the first is
// left down; with no server at all, the first NIC gets its link-local
// address.
func TestUnconfiguredNetns(t *testing.T) {
	if !netnstest.Inside(t) {
		return
	}
	for _, pair := range [][2]string{{"u0", "s0"}, {"u1", "s1"}} {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}); err != nil {
			t.Fatal(err)
		}
		s, _ := netlink.LinkByName(pair[1])
		if err := netlink.LinkSetUp(s); err != nil {
			t.Fatal(err)
		}
	}
	s1, _ := netlink.LinkByName("s1")
	if err := netlink.AddrAdd(s1, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	var links []LocalLink
	for _, n := range []string{"u0", "u1"} {
		l, _ := netlink.LinkByName(n)
		links = append(links, LocalLink{Name: n, MAC: l.Attrs().HardwareAddr.String()})
	}
	opts := Options{ResolvConf: t.TempDir() + "/resolv.conf", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up := func(name string) bool {
		l, _ := netlink.LinkByName(name)
		return l.Attrs().Flags&net.FlagUp != 0
	}

	t.Run("the lease wins", func(t *testing.T) {
		defer serveDHCP(t, "s1", "10.9.0.1", "10.9.0.50")()
		m, err := Unconfigured(ctx, links, 20*time.Second, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop(ctx)
		if m.Link != "u1" || m.Prefix().String() != "10.9.0.50/24" {
			t.Errorf("took %s on %s; want 10.9.0.50/24 on u1", m.Prefix(), m.Link)
		}
		if !up("u0") {
			t.Error("u0, which got no lease, is down: the inventory could not show its carrier")
		}
	})
	t.Run("no server: link-local", func(t *testing.T) {
		start := time.Now()
		m, err := Unconfigured(ctx, links, 3*time.Second, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop(ctx)
		want, _ := LinkLocal(links[0].MAC)
		if m.Link != "u0" || m.Prefix() != want {
			t.Errorf("took %s on %s; want %s on u0", m.Prefix(), m.Link, want)
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("the fallback took %v, with a 3 s wait", took)
		}
	})
}
