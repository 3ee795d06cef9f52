// Package network holds the network layers of a head as services.Resources:
// the management interface (static or DHCP) and the replication bond
// (active-backup). PID 1 puts them at the bottom of the service graph, so
// the supervisor monitors them like any other layer.
//
// NICs are found by stable identity: a config names a link by MAC address
// or by interface name, and a MAC always wins over the kernel's ethN order.
package network

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"tandem.dev/tandem/services"
)

// The layers' names in the service graph: this package holds two.
const (
	ManagementName = "mgmt"
	BondName       = "bond"
)

// errorf is the one place this package builds its errors; the caller,
// which knows what went wrong, gives the Kind.
func errorf(resource, op string, kind services.Kind, format string, a ...any) error {
	return services.Errorf(resource, op, kind, format, a...)
}

func (m *Management) errorf(op string, kind services.Kind, format string, a ...any) error {
	return errorf(ManagementName, op, kind, format, a...)
}

func (b *Bond) errorf(op string, kind services.Kind, format string, a ...any) error {
	return errorf(BondName, op, kind, format, a...)
}

// pollEvery is how often a missing NIC is looked for again: without udev
// nothing tells us when a driver has finished probing.
const pollEvery = 50 * time.Millisecond

// LocalLink is one NIC of this machine, as identification needs it.
type LocalLink struct {
	Name string
	MAC  string // lower case, colon separated; empty for links without one
}

// LocalLinks lists this machine's links (loopback excluded).
func LocalLinks() ([]LocalLink, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []LocalLink
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		out = append(out, LocalLink{Name: a.Name, MAC: macOf(a)})
	}
	return out, nil
}

// macOf is the permanent address when the driver reports one: a bond
// slave's current address may be the bond's.
func macOf(a *netlink.LinkAttrs) string {
	if len(a.PermHWAddr) > 0 {
		return strings.ToLower(a.PermHWAddr.String())
	}
	return strings.ToLower(a.HardwareAddr.String())
}

// IsMAC reports whether a link reference is a MAC address rather than a name.
func IsMAC(ref string) bool {
	_, err := net.ParseMAC(ref)
	return err == nil
}

// match reports whether a link is the one ref names.
func match(l LocalLink, ref string) bool {
	if hw, err := net.ParseMAC(ref); err == nil {
		return l.MAC != "" && l.MAC == strings.ToLower(hw.String())
	}
	return l.Name == ref
}

// Find returns the local link ref names (a MAC or a name), if present.
func Find(links []LocalLink, ref string) (LocalLink, bool) {
	for _, l := range links {
		if match(l, ref) {
			return l, true
		}
	}
	return LocalLink{}, false
}

// waitLink resolves ref to a netlink link, waiting while the NIC's driver
// probes, until ctx ends. A NIC that never shows up is Missing.
func waitLink(ctx context.Context, resource, op, ref string) (netlink.Link, error) {
	for {
		links, err := LocalLinks()
		if err != nil {
			return nil, errorf(resource, op, services.Failed, "%v", err)
		}
		if l, ok := Find(links, ref); ok {
			link, err := netlink.LinkByName(l.Name)
			if err == nil {
				return link, nil
			}
		}
		select {
		case <-ctx.Done():
			var names []string
			for _, l := range links {
				names = append(names, l.Name+"="+l.MAC)
			}
			return nil, errorf(resource, op, services.Missing,
				"no NIC %s (present: %s)", ref, strings.Join(names, " "))
		case <-time.After(pollEvery):
		}
	}
}

// up reports whether a link is administratively up and has a carrier.
func up(l netlink.Link) bool {
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return false
	}
	return a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
}

// refresh re-reads a link by index (names may change; indexes do not).
func refresh(l netlink.Link) (netlink.Link, error) {
	return netlink.LinkByIndex(l.Attrs().Index)
}

// addrPresent reports whether the link carries exactly this address/prefix.
func addrPresent(l netlink.Link, p *net.IPNet) (bool, error) {
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.String() == p.String() {
			return true, nil
		}
	}
	return false, nil
}
