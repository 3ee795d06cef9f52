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
