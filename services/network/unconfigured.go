package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"tandem.dev/tandem/services"
)

// PhysicalLinks lists the NICs that are hardware (a device behind them
// in sysfs): the ones an unconfigured head may take its management
// address on, and the inventory offers.
func PhysicalLinks(sysClassNet string) ([]LocalLink, error) {
	if sysClassNet == "" {
		sysClassNet = "/sys/class/net"
	}
	links, err := LocalLinks()
	if err != nil {
		return nil, err
	}
	var out []LocalLink
	for _, l := range links {
		if _, err := os.Stat(filepath.Join(sysClassNet, l.Name, "device")); err == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

// LinkLocal is the fixed IPv4 link-local address (RFC 3927) an
// unconfigured head takes on a NIC when no DHCP server answers: derived
// from the MAC, so it is the same at every boot and the operator can
// note it, and outside 169.254.0.0/24 and 169.254.255.0/24, which the
// RFC reserves.
func LinkLocal(mac string) (netip.Prefix, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) < 6 {
		return netip.Prefix{}, fmt.Errorf("link-local address from MAC %q: %v", mac, err)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 1 + hw[4]%254, hw[5]}), 16), nil
}

// Unconfigured brings up the management network of a head that has no
// site config yet, for the pairing wizard: it asks for a DHCP lease on
// every link at once and keeps the first lease (the others are let go;
// links without a lease stay up, unaddressed);
// when none comes within wait, it puts LinkLocal on the first link. The
// returned Management owns the address (Stop removes it).
func Unconfigured(ctx context.Context, links []LocalLink, wait time.Duration, opts Options) (*Management, error) {
	if len(links) == 0 {
		return nil, errorf(ManagementName, "start", services.Missing, "no NIC to take a management address on")
	}
	dctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	type result struct {
		m   *Management
		err error
	}
	results := make(chan result, len(links))
	for _, l := range links {
		m, err := NewManagement(ManagementConfig{Link: l.Name, Hostname: "tandem"}, opts)
		if err != nil {
			return nil, err
		}
		go func() { results <- result{m, m.Start(dctx)} }()
	}
	var won *Management
	var errs []error
	for range links {
		r := <-results
		switch {
		case r.err == nil && won == nil:
			won = r.m
			cancel() // the others give up their DHCP exchange
		case r.err == nil: // a second lease in the same instant: let it go
			_ = r.m.Stop(context.WithoutCancel(ctx))
		default:
			// Left up without an address: the wizard's inventory shows
			// whether it has a carrier.
			errs = append(errs, r.err)
		}
	}
	if won != nil {
		return won, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	p, err := LinkLocal(links[0].MAC)
	if err != nil {
		return nil, errorf(ManagementName, "start", services.Failed, "no DHCP lease (%v), and %w", errors.Join(errs...), err)
	}
	m, err := NewManagement(ManagementConfig{Link: links[0].Name, Address: p}, opts)
	if err != nil {
		return nil, err
	}
	m.log().Warn("mgmt: no DHCP server answered; using a link-local address", "link", links[0].Name, "addr", p, "waited", wait)
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Prefix is the address in use, invalid when there is none.
func (m *Management) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(m.Addr())
	return p
}
