package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkOps is netOps on the real kernel.
type netlinkOps struct{}

func (netlinkOps) Link(ref string) (Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return Link{}, err
	}
	for _, nl := range links {
		a := nl.Attrs()
		if !matchLink(ref, a.Name, a.HardwareAddr, a.PermHWAddr) {
			continue
		}
		return Link{
			Index: a.Index, Name: a.Name, HW: a.HardwareAddr,
			Broadcast: a.HardwareAddr, // replaced below when known
			Up:        a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown),
			IPoIB:     a.EncapType == "infiniband" || len(a.HardwareAddr) == ipoibHWLen,
		}.withBroadcast(a), nil
	}
	return Link{}, fmt.Errorf("%w: %s", ErrNoLink, ref)
}

func (l Link) withBroadcast(a *netlink.LinkAttrs) Link {
	l.Broadcast = nil
	if len(a.HardwareAddr) == ipoibHWLen {
		// netlink's LinkAttrs has no broadcast field; IPoIB's is the
		// all-nodes multicast GID with this link's P_Key, which
		// /sys/class/net/<if>/broadcast shows. Read it there.
		if b, err := readSysBroadcast(a.Name); err == nil {
			l.Broadcast = b
		}
	}
	return l
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (netlinkOps) HasAddr(l Link, p netip.Prefix) (bool, error) {
	addrs, err := netlink.AddrList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == p.Addr() {
			return true, nil
		}
	}
	return false, nil
}

func (n netlinkOps) AddAddr(l Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipnet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD // serve at once; the peer released it
	}
	err := netlink.AddrAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, a)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (netlinkOps) DelAddr(l Link, p netip.Prefix) error {
	err := netlink.AddrDel(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, &netlink.Addr{IPNet: ipnet(p)})
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// silenceTable and silencePriority name the policy rule that sends every
// packet from a released service address to a blackhole. The numbers
// are Tandem's own; nothing else on a head uses policy routing.
const (
	silenceTable    = 0x7444
	silencePriority = 100
)

// Silence adds (on) or removes (off) "from <address> lookup 0x7444" and
// a blackhole default route in that table. Both are idempotent.
func (netlinkOps) Silence(p netip.Prefix, on bool) error {
	host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	family := unix.AF_INET
	if p.Addr().Is6() {
		family = unix.AF_INET6
	}
	rule := netlink.NewRule()
	rule.Family, rule.Src, rule.Table, rule.Priority = family, ipnet(host), silenceTable, silencePriority
	zero := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if p.Addr().Is6() {
		zero = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	route := &netlink.Route{Table: silenceTable, Type: unix.RTN_BLACKHOLE, Dst: ipnet(zero), Family: family}
	if !on {
		if err := netlink.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove rule: %w", err)
		}
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove blackhole route: %w", err)
		}
		return nil
	}
	if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("blackhole route: %w", err)
	}
	if err := netlink.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rule: %w", err)
	}
	return nil
}
