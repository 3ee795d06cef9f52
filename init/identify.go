package pid1

import (
	"errors"
	"fmt"
	"strings"

	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/site"
)

// Both heads boot the same image and read the same site.toml, so each
// must work out which [[node]] it is. The hints, strongest first:
//
//  1. MAC: a node whose management.mac, or a replication link given as a
//     MAC, is a NIC of this machine. Hardware identity; the way for real
//     heads.
//  2. The pairing: the wizard's site config names the head ID this head
//     keeps on its state partition since its first boot. It must agree
//     with a MAC match if there is one.
//  3. tandem.node=NAME on the kernel command line: an explicit override
//     (direct kernel boot in the lab, or a field fix). It must agree with
//     a MAC match if there is one.
//  4. The SMBIOS system serial number equal to a node name: the lab's
//     OVMF boots set it with -smbios type=1,serial=head-a, because the
//     boot entries of the image are fixed.
//  5. Interface names: exactly one node whose management interface and
//     replication links all exist here. In the lab both nodes say eth0,
//     so this rarely decides.
//
// Anything else is an error (maintenance), never a guess: two heads that
// both believe they are head-a would fight over the same addresses.

// nodeHints is what identify looks at.
type nodeHints struct {
	Links     []network.LocalLink
	Paired    string // the node the pairing wizard made this head
	Cmdline   string
	DMISerial string
}

// errNoMatch: no hint identifies a node.
var errNoMatch = errors.New("cannot tell which node of the site config this head is")

// identify returns the node name and which hint decided it.
func identify(nodes []site.Node, h nodeHints) (name, how string, err error) {
	if len(nodes) == 0 {
		return "", "", errors.New("the site config defines no nodes")
	}
	byName := func(n string) bool {
		for _, nd := range nodes {
			if nd.Name == n {
				return true
			}
		}
		return false
	}
	var macMatches []string // "head-a (52:54:00:...)"
	var mac string
	for _, nd := range nodes {
		if m := macMatch(nd, h.Links); m != "" {
			macMatches = append(macMatches, nd.Name+" ("+m+")")
			name, mac = nd.Name, m
		}
	}
	switch {
	case len(macMatches) > 1:
		return "", "", fmt.Errorf("NICs of several nodes are on this head: %s; every MAC in the site config must belong to one head", strings.Join(macMatches, ", "))
	case len(macMatches) == 1:
		if h.Cmdline != "" && h.Cmdline != name {
			return "", "", fmt.Errorf("tandem.node=%s on the kernel command line, but this head has the NIC of node %s", h.Cmdline, macMatches[0])
		}
		if h.Paired != "" && h.Paired != name {
			return "", "", fmt.Errorf("the pairing made this head node %s, but it has the NIC of node %s", h.Paired, macMatches[0])
		}
		return name, "mac " + mac, nil
	}
	if h.Paired != "" && byName(h.Paired) {
		if h.Cmdline != "" && h.Cmdline != h.Paired {
			return "", "", fmt.Errorf("tandem.node=%s on the kernel command line, but the pairing made this head node %s", h.Cmdline, h.Paired)
		}
		return h.Paired, "pairing", nil
	}
	if h.Cmdline != "" {
		if !byName(h.Cmdline) {
			return "", "", fmt.Errorf("tandem.node=%s on the kernel command line, but the site config has no such node (nodes: %s)", h.Cmdline, nodeNames(nodes))
		}
		return h.Cmdline, "kernel command line tandem.node", nil
	}
	if h.DMISerial != "" && byName(h.DMISerial) {
		return h.DMISerial, "SMBIOS system serial", nil
	}
	var ifMatches []string
	for _, nd := range nodes {
		if namesPresent(nd, h.Links) {
			ifMatches = append(ifMatches, nd.Name)
		}
	}
	if len(ifMatches) == 1 {
		return ifMatches[0], "interface names", nil
	}
	var local []string
	for _, l := range h.Links {
		local = append(local, l.Name+"="+l.MAC)
	}
	return "", "", fmt.Errorf("%w (nodes: %s; NICs here: %s): set node.management.mac, or boot with tandem.node=<name>",
		errNoMatch, nodeNames(nodes), strings.Join(local, " "))
}

// macMatch returns the first MAC of nd that is a NIC here.
func macMatch(nd site.Node, links []network.LocalLink) string {
	refs := append([]string{nd.Management.MAC}, nd.Replication.Links...)
	for _, r := range refs {
		if r == "" || !network.IsMAC(r) {
			continue
		}
		if l, ok := network.Find(links, r); ok {
			return l.MAC
		}
	}
	return ""
}

// namesPresent reports whether nd names its NICs by interface name and
// all of them exist here.
func namesPresent(nd site.Node, links []network.LocalLink) bool {
	refs := append([]string{nd.Management.Interface}, nd.Replication.Links...)
	for _, r := range refs {
		if r == "" || network.IsMAC(r) {
			return false
		}
		if _, ok := network.Find(links, r); !ok {
			return false
		}
	}
	return true
}

// namesMACs reports whether any node is identified by MAC.
func namesMACs(nodes []site.Node) bool {
	for _, nd := range nodes {
		if network.IsMAC(nd.Management.MAC) {
			return true
		}
		for _, l := range nd.Replication.Links {
			if network.IsMAC(l) {
				return true
			}
		}
	}
	return false
}

func nodeNames(nodes []site.Node) string {
	var n []string
	for _, nd := range nodes {
		n = append(n, nd.Name)
	}
	return strings.Join(n, ", ")
}
