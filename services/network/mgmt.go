package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// ManagementConfig is a head's management interface: static addressing,
// or DHCP when Address is not valid.
type ManagementConfig struct {
	// Link is the NIC's name or MAC address.
	Link string
	// Address is the static address; DHCP is used when it is not valid.
	Address netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr
	// Hostname is sent with DHCP requests.
	Hostname string
	// VIP and Replication are what a DHCP lease must not overlap: a
	// leased VIP would put the service address on two hosts, and a
	// leased subnet over the replication network would route heartbeats
	// and DRBD out of the management NIC. Both come from the site.
	VIP         netip.Addr
	Replication []netip.Prefix
}

// ManagementFromSite turns node's [node.management] into its Config.
func ManagementFromSite(sc *site.Config, node string) (ManagementConfig, error) {
	const op = "new"
	if sc == nil {
		return ManagementConfig{}, errorf(ManagementName, op, services.Config, "no site config")
	}
	nd := sc.Node(node)
	if nd == nil {
		return ManagementConfig{}, errorf(ManagementName, op, services.Config, "node %q is not in the site config", node)
	}
	m := nd.Management
	c := ManagementConfig{Link: cmp.Or(m.MAC, m.Interface), Hostname: nd.Name}
	if c.Link == "" {
		return ManagementConfig{}, errorf(ManagementName, op, services.Config, "the node names no management interface or MAC")
	}
	if !m.DHCP {
		p, err := netip.ParsePrefix(m.Address)
		if err != nil {
			return ManagementConfig{}, errorf(ManagementName, op, services.Config, "management address %q: %w", m.Address, err)
		}
		c.Address = p
	}
	if m.Gateway != "" {
		gw, err := netip.ParseAddr(m.Gateway)
		if err != nil {
			return ManagementConfig{}, errorf(ManagementName, op, services.Config, "management gateway %q: %w", m.Gateway, err)
		}
		c.Gateway = gw
	}
	for _, d := range m.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			c.DNS = append(c.DNS, a)
		}
	}
	if v := sc.VIP.Prefix(); v.IsValid() {
		c.VIP = v.Addr()
	}
	for _, n := range sc.Nodes {
		if r := n.Replication.Prefix(); r.IsValid() && !slices.Contains(c.Replication, r.Masked()) {
			c.Replication = append(c.Replication, r.Masked())
		}
	}
	return c, nil
}

// Options are the paths; the zero value is the real system.
type Options struct {
	// ResolvConf is written from DNS or the lease; default /etc/resolv.conf.
	ResolvConf string
	// SysClassNet is /sys/class/net (tests point it elsewhere).
	SysClassNet string
	Log         *slog.Logger
}

// Management is the management interface resource; it keeps a DHCP
// lease renewed until stopped.
type Management struct {
	ManagementConfig
	resolvConf string
	logger     *slog.Logger

	mu     sync.Mutex
	link   netlink.Link
	addr   *net.IPNet // the address this resource put on the link
	gw     net.IP
	lease  *nclient4.Lease
	client *nclient4.Client
	stop   context.CancelFunc // ends the DHCP renew loop
	done   chan struct{}
}

var _ services.Resource = (*Management)(nil)

// NewManagement builds the resource; it touches nothing.
func NewManagement(cfg ManagementConfig, opts Options) (*Management, error) {
	if cfg.Link == "" {
		return nil, errorf(ManagementName, "new", services.Config, "no management interface or MAC")
	}
	return &Management{ManagementConfig: cfg, resolvConf: opts.ResolvConf, logger: opts.Log}, nil
}

// Name is the resource's name in the graph.
func (m *Management) Name() string { return ManagementName }

// DHCP reports whether the address comes from DHCP.
func (m *Management) DHCP() bool { return !m.Address.IsValid() }

func (m *Management) log() *slog.Logger {
	if m.logger == nil {
		return slog.Default()
	}
	return m.logger
}

// Start brings the link up and addresses it. It is idempotent.
func (m *Management) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	link, err := waitLink(ctx, m.Name(), "start", m.Link)
	if err != nil {
		return err
	}
	m.link = link
	if err := netlink.LinkSetUp(link); err != nil {
		return m.errorf("start", services.Failed, "%s up: %w", link.Attrs().Name, err)
	}
	if !m.DHCP() {
		return m.applyStatic(ctx)
	}
	if m.stop != nil {
		return nil // the renew loop holds a lease already
	}
	return m.startDHCP(ctx)
}

func (m *Management) applyStatic(ctx context.Context) error {
	ipn := prefixNet(m.Address)
	var gw net.IP
	if m.Gateway.IsValid() {
		gw = m.Gateway.AsSlice()
	}
	if err := m.apply(ipn, gw); err != nil {
		return m.errorf("start", services.Failed, "%w", err)
	}
	m.writeDNS(m.DNS)
	args := []any{"link", m.link.Attrs().Name, "addr", m.Address}
	if gw != nil {
		args = append(args, "gw", m.Gateway)
	}
	m.log().Info("mgmt: static address", args...)
	return nil
}

// apply puts ipn (and a default route via gw) on the link, replacing what
// this resource applied before.
func (m *Management) apply(ipn *net.IPNet, gw net.IP) error {
	name := m.link.Attrs().Name
	if m.addr != nil && m.addr.String() != ipn.String() {
		_ = netlink.AddrDel(m.link, &netlink.Addr{IPNet: m.addr})
	}
	if err := netlink.AddrReplace(m.link, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ipn, name, err)
	}
	m.addr = ipn
	if gw != nil {
		r := &netlink.Route{LinkIndex: m.link.Attrs().Index, Gw: gw, Dst: defaultDst(gw)}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s on %s: %w", gw, name, err)
		}
		m.gw = gw
	}
	return nil
}

func defaultDst(gw net.IP) *net.IPNet {
	if gw.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// writeDNS writes resolv.conf atomically; DNS is a convenience for the
// operator's tools, so a failure is only logged.
func (m *Management) writeDNS(servers []netip.Addr) {
	if len(servers) == 0 {
		return
	}
	path := m.resolvConf
	if path == "" {
		path = "/etc/resolv.conf"
	}
	var b strings.Builder
	b.WriteString("# written by tandem from the site config or the DHCP lease\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		err = os.Rename(tmp, path)
		if err == nil {
			return
		}
	}
	m.log().Warn("mgmt: could not write resolv.conf", "path", path)
}

// startDHCP gets a lease before returning (the management address is part
// of "up"), then renews it in the background.
func (m *Management) startDHCP(ctx context.Context) error {
	name := m.link.Attrs().Name
	// A DISCOVER sent before the carrier is up is dropped silently and
	// costs a whole retransmission timeout.
	m.waitCarrier(ctx, carrierWait)
	client, err := nclient4.New(name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return m.errorf("start", services.Failed, "dhcp on %s: %w", name, err)
	}
	lease, err := client.Request(ctx, m.dhcpMods()...)
	if err != nil {
		client.Close()
		kind := services.Failed
		if ctx.Err() != nil {
			kind = services.Timeout
		}
		return m.errorf("start", kind, "dhcp on %s: no lease: %w", name, err)
	}
	if err := m.applyLease(lease, "mgmt: dhcp lease"); err != nil {
		client.Close()
		return m.errorf("start", services.Failed, "dhcp on %s: %w", name, err)
	}
	loop, stop := context.WithCancel(context.Background())
	m.client, m.lease, m.stop, m.done = client, lease, stop, make(chan struct{})
	go m.renewLoop(loop, client, lease, m.done)
	return nil
}

// carrierWait bounds the wait for the management link's carrier.
const carrierWait = 5 * time.Second

// waitCarrier waits until the link is operationally up, at most d; DHCP
// then starts anyway (its retries cover a slow carrier).
func (m *Management) waitCarrier(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if l, err := refresh(m.link); err == nil && up(l) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollEvery):
		}
	}
}

func (m *Management) dhcpMods() []dhcpv4.Modifier {
	if m.Hostname == "" {
		return nil
	}
	return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName(m.Hostname))}
}

// checkLease refuses a lease that overlaps what the site reserves: the
// VIP and the replication subnets. A DHCP server is not part of the pair,
// and anyone on the management network can answer a DISCOVER.
func (c *ManagementConfig) checkLease(ack *dhcpv4.DHCPv4) error {
	addr, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !addr.IsGlobalUnicast() {
		return fmt.Errorf("the lease offers no usable IPv4 address (%v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return fmt.Errorf("the lease for %s has a non-contiguous subnet mask %s", addr, net.IP(mask))
	}
	leased := netip.PrefixFrom(addr, ones).Masked()
	if c.VIP.IsValid() && addr == c.VIP {
		return fmt.Errorf("the lease offers %s, the pair's VIP (vip.address): it would be on two hosts", addr)
	}
	var routers []netip.Addr
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok {
			routers = append(routers, a)
		}
	}
	for _, gw := range routers {
		if c.VIP.IsValid() && gw == c.VIP {
			return fmt.Errorf("the lease for %s names the pair's VIP %s as its gateway", addr, gw)
		}
	}
	for _, r := range c.Replication {
		if leased.Overlaps(r) {
			return fmt.Errorf("the lease's subnet %s overlaps the replication subnet %s (node.replication.address): heartbeats and DRBD would be routed out of the management interface", leased, r)
		}
		for _, gw := range routers {
			if r.Contains(gw) {
				return fmt.Errorf("the lease for %s names %s, in the replication subnet %s, as its gateway", addr, gw, r)
			}
		}
	}
	return nil
}

// applyLease puts the lease on the link and logs it with msg. A lease
// that checkLease refuses is not applied.
func (m *Management) applyLease(l *nclient4.Lease, msg string) error {
	ack := l.ACK
	if err := m.checkLease(ack); err != nil {
		m.log().Error("mgmt: dhcp lease refused", "link", m.link.Attrs().Name, "server", ack.ServerIdentifier(), "err", err)
		return fmt.Errorf("lease refused: %w", err)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	ipn := &net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask}
	var gw net.IP
	if r := ack.Router(); len(r) > 0 {
		gw = r[0]
	}
	if err := m.apply(ipn, gw); err != nil {
		return err
	}
	var dns []netip.Addr
	for _, ip := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			dns = append(dns, a)
		}
	}
	m.writeDNS(dns)
	m.log().Info(msg, "link", m.link.Attrs().Name, "addr", ipn, "gw", gw,
		"server", ack.ServerIdentifier(), "lease", leaseTime(l))
	return nil
}

// leaseTime is the lease's duration; an hour if the server gave none.
func leaseTime(l *nclient4.Lease) time.Duration { return l.ACK.IPAddressLeaseTime(time.Hour) }

// renewAfter is when to renew: the server's T1, else half the lease.
func renewAfter(l *nclient4.Lease) time.Duration {
	return l.ACK.IPAddressRenewalTime(leaseTime(l) / 2)
}

// renewLoop renews at T1; on failure it retries every 10 s (sooner for a
// short lease), and after a NAK or once the lease has expired it asks for
// a new one. The DHCP exchanges run without m.mu, so Monitor and status
// never wait behind a server that does not answer.
func (m *Management) renewLoop(ctx context.Context, client *nclient4.Client, lease *nclient4.Lease, done chan struct{}) {
	defer close(done)
	wait := renewAfter(lease)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		next, err := client.Renew(rctx, lease, m.dhcpMods()...)
		msg := "mgmt: dhcp lease renewed"
		var nak *nclient4.ErrNak
		if err != nil && ctx.Err() == nil && (errors.As(err, &nak) || time.Since(lease.CreationTime) > leaseTime(lease)) {
			// The address is no longer ours: start over (RFC 2131 INIT).
			m.log().Warn("mgmt: dhcp renewal refused or lease expired; asking for a new lease", "err", err)
			next, err = client.Request(rctx, m.dhcpMods()...)
			msg = "mgmt: dhcp lease"
		}
		cancel()
		if err == nil {
			m.mu.Lock()
			if ctx.Err() == nil { // Stop may have begun meanwhile
				m.lease = next
				err = m.applyLease(next, msg)
			}
			m.mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait = min(10*time.Second, leaseTime(lease)/8)
			m.log().Warn("mgmt: dhcp renew failed", "err", err, "retry_in", wait)
			continue
		}
		lease = next
		wait = renewAfter(lease)
	}
}

// Stop removes the address and route this resource added, ends the DHCP
// loop and takes the link down. Stopping a stopped resource is a no-op.
func (m *Management) Stop(ctx context.Context) error {
	m.mu.Lock()
	stop, done := m.stop, m.done
	m.mu.Unlock()
	if stop != nil {
		stop()
		select {
		case <-done:
		case <-ctx.Done():
			return m.errorf("stop", services.Timeout, "dhcp renew loop did not end: %w", ctx.Err())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil {
		if m.lease != nil {
			_ = m.client.Release(m.lease)
		}
		m.client.Close()
		m.client, m.lease, m.stop, m.done = nil, nil, nil, nil
	}
	if m.link == nil {
		return nil
	}
	var errs []error
	if m.gw != nil {
		r := &netlink.Route{LinkIndex: m.link.Attrs().Index, Gw: m.gw, Dst: defaultDst(m.gw)}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("route: %w", err))
		}
		m.gw = nil
	}
	if m.addr != nil {
		if err := netlink.AddrDel(m.link, &netlink.Addr{IPNet: m.addr}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("address: %w", err))
		}
		m.addr = nil
	}
	if err := netlink.LinkSetDown(m.link); err != nil {
		errs = append(errs, fmt.Errorf("link down: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return m.errorf("stop", services.Failed, "%s: %w", m.link.Attrs().Name, err)
	}
	return nil
}

// Monitor checks that the link is up and still carries its address.
func (m *Management) Monitor(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.link == nil {
		return m.errorf("monitor", services.Failed, "not started")
	}
	l, err := refresh(m.link)
	if err != nil {
		return m.errorf("monitor", services.Missing, "link %s: %w", m.link.Attrs().Name, err)
	}
	if !up(l) {
		return m.errorf("monitor", services.Failed, "link %s is %s", l.Attrs().Name, l.Attrs().OperState)
	}
	if m.addr == nil {
		return m.errorf("monitor", services.Failed, "no address on %s", l.Attrs().Name)
	}
	ok, err := addrPresent(l, m.addr)
	if err != nil {
		return m.errorf("monitor", services.Failed, "%w", err)
	}
	if !ok {
		return m.errorf("monitor", services.Failed, "address %s is gone from %s", m.addr, l.Attrs().Name)
	}
	return nil
}

// Addr returns the address in use (static or leased), for status.
func (m *Management) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.addr == nil {
		return ""
	}
	return m.addr.String()
}
