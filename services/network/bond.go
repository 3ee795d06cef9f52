package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// ModeActiveBackup is the only bond mode Tandem uses: it needs no switch
// support and is the only mode that works over IPoIB.
const ModeActiveBackup = "active-backup"

// BondConfig is the replication bond (DRBD and heartbeats run over it).
type BondConfig struct {
	Device string   // e.g. bond0
	Links  []string // the slaves, by name or MAC; two or more
	Mode   string   // "" means active-backup
	// MIIMon is the carrier poll interval. With ARPTargets the bond uses
	// ARP monitoring at the same interval instead: the kernel runs only one
	// of the two, and only ARP sees a far-end failure.
	MIIMon     time.Duration
	ARPTargets []netip.Addr
	Address    netip.Prefix
	MTU        int
	// IPoIB boards: slaves in connected mode with IPoIBMTU, and the bond
	// with fail_over_mac=active (IPoIB addresses cannot move).
	IPoIB    bool
	IPoIBMTU int
}

// BondFromSite turns node's [node.replication] into its Config; the
// board (nil: none) says whether the links are IPoIB, which the site
// config cannot.
func BondFromSite(sc *site.Config, node string, bd *board.Board) (BondConfig, error) {
	const op = "new"
	if sc == nil {
		return BondConfig{}, errorf(BondName, op, services.Config, "no site config")
	}
	nd := sc.Node(node)
	if nd == nil {
		return BondConfig{}, errorf(BondName, op, services.Config, "node %q is not in the site config", node)
	}
	r := nd.Replication
	c := BondConfig{
		Device: r.Bond, Links: r.Links, Mode: r.Mode,
		MIIMon: time.Duration(r.MIIMonMS) * time.Millisecond,
		MTU:    r.MTU,
	}
	if bd != nil {
		c.IPoIB, c.IPoIBMTU = bd.IPoIB, bd.IPoIBMTU
	}
	if r.Address != "" {
		p, err := netip.ParsePrefix(r.Address)
		if err != nil {
			return BondConfig{}, errorf(BondName, op, services.Config, "replication address %q: %w", r.Address, err)
		}
		c.Address = p
	}
	for _, t := range r.ARPTargets {
		a, err := netip.ParseAddr(t)
		if err != nil {
			return BondConfig{}, errorf(BondName, op, services.Config, "arp target %q: %w", t, err)
		}
		c.ARPTargets = append(c.ARPTargets, a)
	}
	return c, nil
}

// Bond is the replication bond resource.
type Bond struct {
	BondConfig
	sysNet string
	logger *slog.Logger

	mu sync.Mutex
}

var _ services.Resource = (*Bond)(nil)

// NewBond builds the resource, refusing what the hardware cannot do
// (Plan); it touches nothing.
func NewBond(cfg BondConfig, opts Options) (*Bond, error) {
	b := &Bond{BondConfig: cfg, sysNet: opts.SysClassNet, logger: opts.Log}
	if _, err := b.Plan(); err != nil {
		return nil, err
	}
	return b, nil
}

// Name is the resource's name in the graph.
func (b *Bond) Name() string { return BondName }

func (b *Bond) log() *slog.Logger {
	if b.logger == nil {
		return slog.Default()
	}
	return b.logger
}

// mtu is the MTU of the bond and its slaves.
func (b *Bond) mtu() int {
	if b.IPoIB && b.IPoIBMTU > 0 {
		return b.IPoIBMTU
	}
	return b.MTU
}

// Plan turns the settings into the netlink bond to create, refusing what
// the hardware cannot do. It touches nothing.
func (b *Bond) Plan() (*netlink.Bond, error) {
	mode := b.Mode
	if mode == "" {
		mode = ModeActiveBackup
	}
	m, ok := netlink.StringToBondModeMap[mode]
	if !ok {
		return nil, b.errorf("start", services.Config, "unknown bond mode %q", mode)
	}
	if b.IPoIB && m != netlink.BOND_MODE_ACTIVE_BACKUP {
		return nil, b.errorf("start", services.Refused,
			"bond mode %s on IPoIB: only active-backup works over InfiniBand", mode)
	}
	if m != netlink.BOND_MODE_ACTIVE_BACKUP {
		return nil, b.errorf("start", services.Config, "bond mode %s: Tandem supports only active-backup", mode)
	}
	if b.Device == "" || len(b.Device) >= unix.IFNAMSIZ {
		return nil, b.errorf("start", services.Config, "bond name %q", b.Device)
	}
	if len(b.Links) < 2 {
		return nil, b.errorf("start", services.Config, "a bond needs two or more links, got %d", len(b.Links))
	}
	if b.MIIMon <= 0 {
		return nil, b.errorf("start", services.Config, "miimon must be positive")
	}
	nb := netlink.NewLinkBond(netlink.LinkAttrs{Name: b.Device})
	nb.Mode = m
	ms := int(b.MIIMon / time.Millisecond)
	if len(b.ARPTargets) > 0 {
		nb.Miimon = 0
		nb.ArpInterval = ms
		for _, t := range b.ARPTargets {
			nb.ArpIpTargets = append(nb.ArpIpTargets, net.IP(t.AsSlice()))
		}
		// Only the active slave sends ARP probes; validating it alone keeps
		// an idle back-to-back backup link from being marked down.
		nb.ArpValidate = netlink.BOND_ARP_VALIDATE_ACTIVE
		nb.ArpAllTargets = netlink.BOND_ARP_ALL_TARGETS_ANY
	} else {
		nb.Miimon = ms
	}
	if b.IPoIB {
		nb.FailOverMac = netlink.BOND_FAIL_OVER_MAC_ACTIVE
	}
	if mtu := b.mtu(); mtu > 0 {
		nb.MTU = mtu
	}
	return nb, nil
}

// Start creates the bond, enslaves the links, addresses it and waits for an
// active slave. It is idempotent: an existing bond of ours is reused.
func (b *Bond) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	plan, err := b.Plan()
	if err != nil {
		return err
	}
	var slaves []netlink.Link
	for _, ref := range b.Links {
		l, err := waitLink(ctx, b.Name(), "start", ref)
		if err != nil {
			return err
		}
		if b.IPoIB && l.Type() != "ipoib" && l.Attrs().EncapType != "infiniband" {
			return b.errorf("start", services.Config,
				"%s (%s) is not an IPoIB link, but the board replicates over IPoIB", ref, l.Attrs().Name)
		}
		slaves = append(slaves, l)
	}
	bond, err := b.ensureBond(plan)
	if err != nil {
		return err
	}
	for _, s := range slaves {
		if err := b.enslave(bond, s); err != nil {
			return b.errorf("start", services.Failed, "%w", err)
		}
	}
	if err := netlink.LinkSetUp(bond); err != nil {
		return b.errorf("start", services.Failed, "%s up: %w", b.Device, err)
	}
	if b.Address.IsValid() {
		if err := netlink.AddrReplace(bond, &netlink.Addr{IPNet: prefixNet(b.Address)}); err != nil {
			return b.errorf("start", services.Failed, "address %s on %s: %w", b.Address, b.Device, err)
		}
	}
	monitor := fmt.Sprintf("miimon=%dms", plan.Miimon)
	if plan.ArpInterval > 0 {
		monitor = fmt.Sprintf("arp_interval=%dms arp_ip_target=%v", plan.ArpInterval, b.ARPTargets)
	}
	for {
		st, err := b.state()
		if err == nil && st.active != "" {
			b.log().Info("bond: up", "bond", b.Device, "mode", plan.Mode, "monitor", monitor,
				"active", st.active, "slaves", st.String(), "addr", b.Address, "mtu", plan.MTU)
			return nil
		}
		select {
		case <-ctx.Done():
			return b.errorf("start", services.Timeout, "%s has no active slave (%s)", b.Device, st.String())
		case <-time.After(pollEvery):
		}
	}
}

// ensureBond returns the bond, creating it; a stale bond of another mode
// is replaced (only Tandem creates bonds on a head).
func (b *Bond) ensureBond(plan *netlink.Bond) (netlink.Link, error) {
	if l, err := netlink.LinkByName(b.Device); err == nil {
		if old, ok := l.(*netlink.Bond); ok && old.Mode == plan.Mode {
			return l, nil
		}
		if l.Type() != "bond" {
			return nil, b.errorf("start", services.Config, "%s exists and is a %s, not a bond", b.Device, l.Type())
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, b.errorf("start", services.Failed, "replace stale %s: %w", b.Device, err)
		}
	}
	if err := netlink.LinkAdd(plan); err != nil {
		return nil, b.errorf("start", services.Failed, "create %s: %w", b.Device, err)
	}
	l, err := netlink.LinkByName(b.Device)
	if err != nil {
		return nil, b.errorf("start", services.Failed, "%s: %w", b.Device, err)
	}
	return l, nil
}

// enslave adds one link to the bond; the kernel wants slaves down.
func (b *Bond) enslave(bond, s netlink.Link) error {
	name := s.Attrs().Name
	if s.Attrs().MasterIndex == bond.Attrs().Index {
		return nil
	}
	if s.Attrs().MasterIndex != 0 {
		return fmt.Errorf("%s is already enslaved elsewhere (master index %d)", name, s.Attrs().MasterIndex)
	}
	if err := netlink.LinkSetDown(s); err != nil {
		return fmt.Errorf("%s down: %w", name, err)
	}
	if b.IPoIB {
		// Connected mode carries the large IPoIB MTU; datagram mode cannot.
		p := filepath.Join(b.sysClassNet(), name, "mode")
		if err := os.WriteFile(p, []byte("connected\n"), 0); err != nil {
			return fmt.Errorf("%s connected mode: %w", name, err)
		}
	}
	if mtu := b.mtu(); mtu > 0 && s.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(s, mtu); err != nil {
			return fmt.Errorf("%s mtu %d: %w", name, mtu, err)
		}
	}
	if err := netlink.LinkSetMasterByIndex(s, bond.Attrs().Index); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", name, b.Device, err)
	}
	return nil
}

func (b *Bond) sysClassNet() string {
	if b.sysNet != "" {
		return b.sysNet
	}
	return "/sys/class/net"
}

// bondState is what the kernel says about the bond and its slaves.
type bondState struct {
	up     bool
	active string
	slaves []slaveState
	// adminUp is the IFF_UP flag: a bond whose slaves reach nothing is
	// operationally down but still configured, and that is not a failure
	// a restart can fix.
	adminUp bool
}

type slaveState struct {
	name string
	up   bool
}

func (s bondState) String() string {
	var parts []string
	for _, sl := range s.slaves {
		st := "down"
		if sl.up {
			st = "up"
		}
		parts = append(parts, sl.name+" "+st)
	}
	if len(parts) == 0 {
		return "no slaves"
	}
	return strings.Join(parts, ", ")
}

func (s bondState) down() []string {
	var d []string
	for _, sl := range s.slaves {
		if !sl.up {
			d = append(d, sl.name)
		}
	}
	return d
}

// state reads the bond, its slaves and the active slave.
func (b *Bond) state() (bondState, error) {
	var st bondState
	bond, err := netlink.LinkByName(b.Device)
	if err != nil {
		return st, err
	}
	st.up = up(bond)
	st.adminUp = bond.Attrs().Flags&net.FlagUp != 0
	links, err := netlink.LinkList()
	if err != nil {
		return st, err
	}
	for _, l := range links {
		if l.Attrs().MasterIndex != bond.Attrs().Index {
			continue
		}
		st.slaves = append(st.slaves, slaveState{name: l.Attrs().Name, up: l.Attrs().OperState == netlink.OperUp})
	}
	raw, err := os.ReadFile(filepath.Join(b.sysClassNet(), b.Device, "bonding", "active_slave"))
	if err == nil {
		st.active = strings.TrimSpace(string(raw))
	}
	return st, nil
}

// Stop deletes the bond, which releases its slaves. Idempotent.
func (b *Bond) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, err := netlink.LinkByName(b.Device)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return b.errorf("stop", services.Failed, "%s: %w", b.Device, err)
	}
	if err := netlink.LinkSetDown(l); err != nil {
		return b.errorf("stop", services.Failed, "%s down: %w", b.Device, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return b.errorf("stop", services.Failed, "delete %s: %w", b.Device, err)
	}
	return nil
}

// Monitor is the link layer's probe: the bond is up with an active slave;
// a slave that is down makes it Degraded (it serves without redundancy).
func (b *Bond) Monitor(ctx context.Context) error {
	st, err := b.state()
	if err != nil {
		return b.errorf("monitor", services.Missing, "%s: %w", b.Device, err)
	}
	if !st.adminUp {
		return b.errorf("monitor", services.Failed, "%s is administratively down (%s)", b.Device, st)
	}
	// No active slave on a bond that is up means no link reaches the far
	// end (with ARP monitoring: the peer does not answer, e.g. it is still
	// booting or has died). Recreating the bond cannot fix that, so report
	// it and let the HA layer judge the peer; never restart-loop on it.
	if st.active == "" || !st.up {
		return b.errorf("monitor", services.Degraded, "%s has no active slave: no link reaches the far end (%s)", b.Device, st)
	}
	if d := st.down(); len(d) > 0 || len(st.slaves) < len(b.Links) {
		return b.errorf("monitor", services.Degraded, "%s runs on %s only (%s)", b.Device, st.active, st)
	}
	return nil
}

// Detail is a one-line state for status: the active slave and each slave.
func (b *Bond) Detail() string {
	st, err := b.state()
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("active %s; %s", st.active, st)
}
