package inventory

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services/network"
)

// netState is what the kernel's network side says, by link name.
type netState struct {
	links map[string]linkNet
	// gateway is the default route's next hop; gatewayLink the NIC it
	// leaves by: on an unconfigured head, the one DHCP configured, so
	// the one the operator's browser most likely reaches.
	gateway, gatewayLink string
}

type linkNet struct {
	mac   string   // permanent address when the driver reports one
	addrs []string // CIDR, link-local ones left out
}

// readNet reads links, addresses and the default route over netlink.
func readNet() (netState, error) {
	ns := netState{links: map[string]linkNet{}}
	links, err := network.LocalLinks()
	if err != nil {
		return ns, err
	}
	for _, l := range links {
		ns.links[l.Name] = linkNet{mac: l.MAC}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return ns, fmt.Errorf("list interfaces: %w", err)
	}
	names := map[int]string{}
	for _, i := range ifs {
		names[i.Index] = i.Name
		as, err := i.Addrs()
		if err != nil {
			return ns, fmt.Errorf("%s: addresses: %w", i.Name, err)
		}
		l := ns.links[i.Name]
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			p, ok := prefixOf(ipn)
			if !ok || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			l.addrs = append(l.addrs, p.String())
		}
		ns.links[i.Name] = l
	}
	// An IPv4 gateway is what the site form wants; IPv6 only without one.
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return ns, fmt.Errorf("list routes: %w", err)
		}
		if gw, idx, ok := defaultRoute(routes); ok {
			ns.gateway, ns.gatewayLink = gw.String(), names[idx]
			break
		}
	}
	return ns, nil
}

// defaultRoute picks the default route with the lowest metric that has
// a gateway.
func defaultRoute(routes []netlink.Route) (netip.Addr, int, bool) {
	var best *netlink.Route
	for i, rt := range routes {
		if rt.Gw == nil {
			continue
		}
		if rt.Dst != nil {
			if ones, _ := rt.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if best == nil || rt.Priority < best.Priority {
			best = &routes[i]
		}
	}
	if best == nil {
		return netip.Addr{}, 0, false
	}
	gw, ok := netip.AddrFromSlice(best.Gw)
	return gw.Unmap(), best.LinkIndex, ok
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
