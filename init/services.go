package pid1

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/supervisor"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/services/nfs"
	"tandem.dev/tandem/services/raid"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/services/vip"
	"tandem.dev/tandem/services/xfs"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// servicesBudget bounds bringing the whole graph up at boot.
const servicesBudget = 3 * time.Minute

// serviceGraph declares this head's layers, once. Both heads run the
// network, RAID10 and DRBD as secondary; the active head adds DRBD
// primary, LVM, XFS, NFS and, last, the VIP. Start and stop order come
// from the graph.
func (b *Boot) serviceGraph() (*graph.Graph, *stack, error) {
	nd := b.Site.Node(b.Node)
	if nd == nil {
		return nil, nil, fmt.Errorf("node %q is not in the site config", b.Node)
	}
	mgmt, err := b.management(nd)
	if err != nil {
		return nil, nil, err
	}
	bond, err := b.bond(nd)
	if err != nil {
		return nil, nil, err
	}
	st := &stack{mgmt: mgmt, bond: bond}
	if err := b.storage(st); err != nil {
		return nil, nil, err
	}
	mon := b.Site.HA.Monitor
	link := policy(b.Site, mon.Link)
	link.StartTimeout = time.Minute // DHCP may take a while
	nodes := []graph.Node{
		{Resource: mgmt, Role: graph.Both, Policy: link},
		{Resource: bond, Role: graph.Both, Policy: link},
		{Resource: st.raid, Role: graph.Both, Policy: policy(b.Site, site.Monitor{IntervalMS: 5000, TimeoutMS: 5000})},
		{Resource: st.drbd, Role: graph.Both, DependsOn: []string{raid.ResourceName, bond.Name()}, Policy: policy(b.Site, mon.DRBD)},
		{Resource: graph.Primary(st.drbd), Role: graph.ActiveOnly, DependsOn: []string{drbd.Name}, Policy: policy(b.Site, mon.DRBD)},
		{Resource: st.lvm, Role: graph.ActiveOnly, DependsOn: []string{drbd.Name + "-primary"}, Policy: policy(b.Site, mon.LVM)},
		{Resource: st.xfs, Role: graph.ActiveOnly, DependsOn: []string{lvm.ResourceName}, Policy: policy(b.Site, mon.Filesystem)},
	}
	front := []string{xfs.ResourceName, mgmt.Name()}
	if st.nfs != nil {
		nodes = append(nodes, graph.Node{Resource: st.nfs, Role: graph.ActiveOnly, DependsOn: []string{xfs.ResourceName}, Policy: policy(b.Site, mon.NFS)})
		front = append(front, nfs.Name)
	}
	nodes = append(nodes, graph.Node{Resource: st.vip, Role: graph.ActiveOnly, Last: true, DependsOn: front, Policy: policy(b.Site, mon.VIP)})
	g, err := graph.New(nodes...)
	if err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	b.mgmt = mgmt
	b.mu.Unlock()
	return g, st, nil
}

// policy turns a layer's [ha.monitor.*] and the pair's failure settings
// into the supervisor's policy; zero fields take the graph defaults.
func policy(sc *site.Config, m site.Monitor) graph.Policy {
	p := graph.Policy{
		MonitorInterval:    time.Duration(m.IntervalMS) * time.Millisecond,
		MonitorTimeout:     time.Duration(m.TimeoutMS) * time.Millisecond,
		MigrationThreshold: sc.HA.MigrationThreshold,
		FailureTimeout:     time.Duration(sc.HA.FailureTimeoutSeconds) * time.Second,
	}
	if sc.HA.FailureTimeoutSeconds == 0 {
		p.FailureTimeout = -1 // 0 in site.toml: never forget
	}
	return p
}

// stack holds this head's layers, for status and role changes.
type stack struct {
	mgmt *network.Management
	bond *network.Bond
	raid *raid.RAID
	drbd *drbd.Resource
	lvm  *lvm.Volume
	xfs  *xfs.Filesystem
	nfs  *nfs.Server // nil when the site serves no NFS
	vip  *vip.Resource
}

// details are the one-line summaries `tandem status` shows per layer.
func (s *stack) details() map[string]func() string {
	d := map[string]func() string{s.mgmt.Name(): s.mgmt.Addr, s.bond.Name(): s.bond.Detail}
	if s.raid != nil {
		d[raid.ResourceName] = func() string {
			st, err := s.raid.Status()
			if err != nil {
				return err.Error()
			}
			return st.String()
		}
	}
	if s.drbd != nil {
		d[drbd.Name] = func() string { return s.drbd.State().String() }
	}
	return d
}

// runDirs are what the storage tools expect under /run (a fresh tmpfs):
// drbdadm and lvm lock in /var/lock, which links to /run/lock.
var runDirs = []string{"/run/lock"}

// storage builds the storage and service layers from the site config.
func (b *Boot) storage(st *stack) error {
	sc := b.Site
	if err := loopbackUp(); err != nil {
		return err
	}
	if err := b.mountDataRoot(); err != nil {
		return err
	}
	for _, d := range runDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	uuid, _ := os.ReadFile(raidUUIDFile)
	r, err := raid.New(sc, b.Node, raid.Options{Log: b.Log, UUID: strings.TrimSpace(string(uuid))})
	if err != nil {
		return err
	}
	key, err := sc.PairKey()
	if err != nil {
		return err
	}
	dc, err := drbd.FromSite(sc, b.Node, key, r.Device())
	if err != nil {
		return err
	}
	d, err := drbd.New(dc, b.Log)
	if err != nil {
		return err
	}
	v, err := lvm.New(sc, lvm.Options{Log: b.Log})
	if err != nil {
		return err
	}
	f, err := xfs.New(sc, b.Node, xfs.Options{Log: b.Log, Device: v.Device()})
	if err != nil {
		return err
	}
	st.raid, st.drbd, st.lvm, st.xfs = r, d, v, f
	vc, err := vip.FromSite(sc, b.Node)
	if err != nil {
		return err
	}
	// The new head tickles the old head's clients (services/vip/tickle.go).
	vc.ClientsFile = filepath.Join(f.Mountpoint(), site.StateDir, "vip", "tcp-clients.json")
	if sc.Services.NFS.Enabled {
		n, err := nfs.New(nfs.FromSite(sc), b.Log)
		if err != nil {
			return err
		}
		st.nfs = n
		vc.OnUp = n.NotifyClients // NFSv3 clients reclaim locks from the VIP
		vc.TicklePorts = append(vc.TicklePorts, 2049)
	}
	if st.vip, err = vip.New(vc, b.Log); err != nil {
		return err
	}
	return nil
}

// raidUUIDFile remembers this head's array, so a later boot assembles
// that one and refuses a stranger.
const raidUUIDFile = "/var/lib/tandem/raid.uuid"

// rememberRAID records the array's UUID once it runs.
func (b *Boot) rememberRAID(r *raid.RAID) {
	u := r.UUID()
	if u == "" {
		return
	}
	if old, _ := os.ReadFile(raidUUIDFile); strings.TrimSpace(string(old)) == u {
		return
	}
	if err := atomicfile.Write(raidUUIDFile, []byte(u+"\n"), 0o600); err != nil {
		b.Log.Warn("could not record the RAID UUID", "err", err)
		return
	}
	b.Log.Info("raid10: recorded array UUID " + u)
}

// management turns a node's [node.management] into the resource.
func (b *Boot) management(nd *site.Node) (*network.Management, error) {
	if nd == nil {
		return nil, errors.New("no such node in the site config")
	}
	m := nd.Management
	ref := m.Interface
	if m.MAC != "" {
		ref = m.MAC
	}
	if ref == "" {
		return nil, errors.New("the node names no management interface or MAC")
	}
	r := &network.Management{Link: ref, Hostname: nd.Name, Log: b.Log}
	if !m.DHCP {
		p, err := netip.ParsePrefix(m.Address)
		if err != nil {
			return nil, fmt.Errorf("management address %q: %w", m.Address, err)
		}
		r.Address = p
	}
	if m.Gateway != "" {
		gw, err := netip.ParseAddr(m.Gateway)
		if err != nil {
			return nil, fmt.Errorf("management gateway %q: %w", m.Gateway, err)
		}
		r.Gateway = gw
	}
	for _, d := range m.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			r.DNS = append(r.DNS, a)
		}
	}
	return r, nil
}

// bond turns a node's [node.replication] into the resource; the board
// says whether the links are IPoIB.
func (b *Boot) bond(nd *site.Node) (*network.Bond, error) {
	r := nd.Replication
	bond := &network.Bond{
		Device: r.Bond, Links: r.Links, Mode: r.Mode,
		MIIMon: time.Duration(r.MIIMonMS) * time.Millisecond,
		MTU:    r.MTU, Log: b.Log,
	}
	if b.Board != nil {
		bond.IPoIB, bond.IPoIBMTU = b.Board.IPoIB, b.Board.IPoIBMTU
	}
	if r.Address != "" {
		p, err := netip.ParsePrefix(r.Address)
		if err != nil {
			return nil, fmt.Errorf("replication address %q: %w", r.Address, err)
		}
		bond.Address = p
	}
	for _, t := range r.ARPTargets {
		a, err := netip.ParseAddr(t)
		if err != nil {
			return nil, fmt.Errorf("arp target %q: %w", t, err)
		}
		bond.ARPTargets = append(bond.ARPTargets, a)
	}
	// Refuse what the hardware cannot do before touching anything.
	if _, err := bond.Plan(); err != nil {
		return nil, err
	}
	return bond, nil
}

// startServices starts the graph bottom-up, keeps monitoring it, and
// hands the head's role to the HA supervisor (ha/supervisor).
func (b *Boot) startServices() error {
	g, st, err := b.serviceGraph()
	if err != nil {
		return err
	}
	sup := supervise.New(g, supervise.Options{Logger: b.Log, OnEscalate: b.onEscalate})
	b.mu.Lock()
	b.sup, b.details, b.stack = sup, st.details(), st
	b.mu.Unlock()
	b.Log.Info("services: start order " + fmt.Sprint(g.StartOrder()))
	ctx, cancel := context.WithTimeout(context.Background(), servicesBudget)
	defer cancel()
	// Both heads run the shared layers; the active ones follow once the
	// HA supervisor settles the head's role.
	if err := sup.StartRoles(ctx, graph.Both); err != nil {
		return err
	}
	b.rememberRAID(st.raid)
	h, err := b.newHA(sup, st)
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	if err := h.ServeControl(); err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	b.mu.Lock()
	b.ha = h
	b.mu.Unlock()
	run, stop := context.WithCancel(context.Background())
	b.mu.Lock()
	b.stopRun = stop
	b.mu.Unlock()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.Log.Error("supervisor panic", "panic", fmt.Sprint(r))
			}
		}()
		sup.Run(run)
	}()
	go b.warmStandby(run, sup, h)
	h.Start(run)
	return nil
}

// newHA sets up the HA supervisor for this head's stack: the watchdog's
// timeout from the site config, the heartbeat and the tiebreaker.
func (b *Boot) newHA(sup *supervise.Supervisor, st *stack) (*supervisor.Supervisor, error) {
	sc := b.Site
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	wdTimeout := time.Duration(sc.HA.WatchdogTimeoutSeconds) * time.Second
	if wd == nil {
		b.Log.Warn("HA: no hardware watchdog: a hung PID 1 cannot be reset; a stop that overruns its bound still restarts the kernel")
	} else {
		wdTimeout = wd.setTimeout(wdTimeout, b.Log)
	}
	key, err := sc.PairKey()
	if err != nil {
		return nil, err
	}
	cfg := supervisor.Config{Site: sc, Node: b.Node, Key: key, Params: supervisor.Params(sc, wdTimeout),
		Layers: sup, DRBD: st.drbd, VIP: st.vip, Host: host{b}, Log: b.Log}
	if wd != nil {
		cfg.Watch = wd // a nil *watchdog must not become a non-nil interface
	}
	if err := supervisor.Connect(&cfg); err != nil {
		return nil, err
	}
	return supervisor.New(cfg)
}

// host is what PID 1 does for the HA supervisor.
type host struct{ b *Boot }

func (h host) Stopping() bool             { return h.b.stopping.Load() }
func (h host) LocalStatus() status.Status { return h.b.localStatus() }

// Restart is a self-fence: no sync (a hung filesystem is the likely
// reason to be here, and nothing unsynced was acknowledged to a client).
func (h host) Restart(why string) {
	h.b.drainConsoles()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		h.b.Log.Error("HA: restart failed; waiting for the watchdog", "err", err)
	}
}

// haSup is the HA supervisor, once the services run.
func (b *Boot) haSup() *supervisor.Supervisor {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ha
}

// rewarmEvery renews the standby's warm takeover path: memory pressure
// or emulation can drop it over hours.
const rewarmEvery = 10 * time.Minute

// warmStandby warms the active-only layers while this head is the
// standby: at once after boot (a head that was just power-cycled takes
// over cold otherwise), after each release, and every rewarmEvery. Not
// in maintenance mode, where the head only watches.
func (b *Boot) warmStandby(ctx context.Context, sup *supervise.Supervisor, h *supervisor.Supervisor) {
	for {
		if h.Role() == ha.Standby && !sup.InMaintenance() {
			sup.Warm(ctx, graph.ActiveOnly)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(rewarmEvery):
		case <-h.Released():
		}
	}
}

// onEscalate hands a layer that failed past its migration threshold to
// the HA supervisor, which fails over when the peer can take over.
func (b *Boot) onEscalate(name string, err error) {
	if h := b.haSup(); h != nil {
		h.Escalate(name, err)
		return
	}
	b.Log.Error("service "+name+" needs attention (the HA supervisor is not running)", "err", err)
}

// loopbackUp brings lo up: rpcbind, mountd and the NFS monitor's RPC
// calls talk over 127.0.0.1.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// dataRootStore backs site.DataRoot (/srv), where the data filesystem's
// mount point is made: the root is a read-only squashfs. It is on the
// state partition rather than a tmpfs because NFSv4 exports every
// directory above an export as its pseudo root, and the kernel cannot
// export a tmpfs without an fsid; ext4 has a UUID.
const dataRootStore = "/var/lib/tandem/srv"

// mountDataRoot bind-mounts dataRootStore on /srv, once.
func (b *Boot) mountDataRoot() error {
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+site.DataRoot+" ") {
		return nil
	}
	if err := os.MkdirAll(dataRootStore, 0o755); err != nil {
		return fmt.Errorf("data root: %w", err)
	}
	if err := unix.Mount(dataRootStore, site.DataRoot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", dataRootStore, site.DataRoot, err)
	}
	b.addMount(site.DataRoot)
	return nil
}
