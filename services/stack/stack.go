// Package stack builds one head's service graph from the site config and
// the board, once, with no side effects: PID 1 runs it, and `tandem
// validate` prints its start order without touching the machine.
//
//   - Both heads: the management network, the replication bond, RAID10,
//     DRBD (secondary).
//   - The active head adds DRBD primary, LVM, XFS, NFS and, last, the VIP.
//
// Start and stop order come from the graph (services/graph), never from
// here.
package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/lvm"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/services/nfs"
	"tandem.dev/tandem/services/raid"
	"tandem.dev/tandem/services/vip"
	"tandem.dev/tandem/services/xfs"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// Options are what the graph needs beyond the site config.
type Options struct {
	Board *board.Board // nil: no IPoIB
	// PairKey derives DRBD's shared secret. `tandem validate` on a build
	// host that lacks the key file passes a placeholder.
	PairKey  []byte
	RAIDUUID string // the array this head assembled before ("" at first boot)
	Log      *slog.Logger
}

// Stack is one head's layers, as a graph and as typed handles for the
// HA supervisor and status.
type Stack struct {
	Graph *graph.Graph
	Mgmt  *network.Management
	Bond  *network.Bond
	RAID  *raid.RAID
	DRBD  *drbd.Resource
	LVM   *lvm.Volume
	XFS   *xfs.Filesystem
	NFS   *nfs.Server // nil when the site serves no NFS
	VIP   *vip.Resource
}

// Build declares node's layers and their dependencies.
func Build(sc *site.Config, node string, opts Options) (*Stack, error) {
	nd := sc.Node(node)
	if nd == nil {
		return nil, fmt.Errorf("node %q is not in the site config", node)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	st := &Stack{}
	mc, err := network.ManagementFromSite(sc, node)
	if err != nil {
		return nil, err
	}
	if st.Mgmt, err = network.NewManagement(mc, network.Options{Log: log}); err != nil {
		return nil, err
	}
	bc, err := network.BondFromSite(sc, node, opts.Board)
	if err != nil {
		return nil, err
	}
	if st.Bond, err = network.NewBond(bc, network.Options{Log: log}); err != nil {
		return nil, err
	}
	if err := st.storage(sc, node, opts, log); err != nil {
		return nil, err
	}
	mon := sc.HA.Monitor
	link := policy(sc, mon.Link)
	link.StartTimeout = time.Minute // DHCP may take a while
	nodes := []graph.Node{
		{Resource: st.Mgmt, Role: graph.Both, Policy: link},
		{Resource: st.Bond, Role: graph.Both, Policy: link},
		{Resource: st.RAID, Role: graph.Both, Policy: policy(sc, site.Monitor{IntervalMS: 5000, TimeoutMS: 5000})},
		{Resource: st.DRBD, Role: graph.Both, DependsOn: []string{raid.Name, network.BondName}, Policy: policy(sc, mon.DRBD)},
		{Resource: graph.Primary(st.DRBD), Role: graph.ActiveOnly, DependsOn: []string{drbd.Name}, Policy: policy(sc, mon.DRBD)},
		{Resource: st.LVM, Role: graph.ActiveOnly, DependsOn: []string{drbd.Name + "-primary"}, Policy: policy(sc, mon.LVM)},
		{Resource: st.XFS, Role: graph.ActiveOnly, DependsOn: []string{lvm.Name}, Policy: policy(sc, mon.Filesystem)},
	}
	front := []string{xfs.Name, network.ManagementName}
	if st.NFS != nil {
		nodes = append(nodes, graph.Node{Resource: st.NFS, Role: graph.ActiveOnly, DependsOn: []string{xfs.Name}, Policy: policy(sc, mon.NFS)})
		front = append(front, nfs.Name)
	}
	nodes = append(nodes, graph.Node{Resource: st.VIP, Role: graph.ActiveOnly, Last: true, DependsOn: front, Policy: policy(sc, mon.VIP)})
	if st.Graph, err = graph.New(nodes...); err != nil {
		return nil, err
	}
	return st, nil
}

// StartOrder is the order the layers start in on an active head and on
// a standby; stop order is its reverse.
func (s *Stack) StartOrder() (active, standby []string) {
	for _, name := range s.Graph.StartOrder() {
		if n, ok := s.Graph.Node(name); ok && n.Role == graph.Both {
			standby = append(standby, name)
		}
		active = append(active, name)
	}
	return active, standby
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

// storage builds the storage and service layers, each from the site
// config and the device of the layer below.
func (s *Stack) storage(sc *site.Config, node string, opts Options, log *slog.Logger) error {
	rc, err := raid.FromSite(sc, node, opts.RAIDUUID)
	if err != nil {
		return err
	}
	r, err := raid.New(rc, raid.Options{Log: log})
	if err != nil {
		return err
	}
	dc, err := drbd.FromSite(sc, node, opts.PairKey, r.Device())
	if err != nil {
		return err
	}
	d, err := drbd.New(dc, drbd.Options{Log: log})
	if err != nil {
		return err
	}
	lc, err := lvm.FromSite(sc, node, dc.Device())
	if err != nil {
		return err
	}
	v, err := lvm.New(lc, lvm.Options{Log: log})
	if err != nil {
		return err
	}
	fc, err := xfs.FromSite(sc, node, v.Device())
	if err != nil {
		return err
	}
	f, err := xfs.New(fc, xfs.Options{Log: log})
	if err != nil {
		return err
	}
	s.RAID, s.DRBD, s.LVM, s.XFS = r, d, v, f
	vc, err := vip.FromSite(sc, node)
	if err != nil {
		return err
	}
	// The new head tickles the old head's clients (services/vip/tickle.go).
	vc.ClientsFile = filepath.Join(f.Mountpoint(), site.StateDir, "vip", "tcp-clients.json")
	if sc.Services.NFS.Enabled {
		nc, err := nfs.FromSite(sc, node)
		if err != nil {
			return err
		}
		n, err := nfs.New(nc, nfs.Options{Log: log})
		if err != nil {
			return err
		}
		s.NFS = n
		vc.OnUp = n.NotifyClients // NFSv3 clients reclaim locks from the VIP
		vc.TicklePorts = append(vc.TicklePorts, 2049)
	}
	s.VIP, err = vip.New(vc, vip.Options{Log: log})
	return err
}

// Management is the management interface of a head on its own: PID 1
// brings it up alone, for diagnosis, on a head in maintenance, whose
// site config may fail validation but for this node's section.
func Management(nd *site.Node, log *slog.Logger) (*network.Management, error) {
	if nd == nil {
		return nil, errors.New("no such node in the site config")
	}
	c, err := network.ManagementFromSite(&site.Config{Nodes: []site.Node{*nd}}, nd.Name)
	if err != nil {
		return nil, err
	}
	return network.NewManagement(c, network.Options{Log: log})
}

// Details are the one-line summaries `tandem status` shows per layer.
func (s *Stack) Details() map[string]func() string {
	return map[string]func() string{
		s.Mgmt.Name(): s.Mgmt.Addr,
		s.Bond.Name(): s.Bond.Detail,
		raid.Name: func() string {
			st, err := s.RAID.Status()
			if err != nil {
				return err.Error()
			}
			return st.String()
		},
		drbd.Name: func() string { return s.DRBD.State().String() },
	}
}

// RAIDStatus is the array's health for `tandem status`.
func (s *Stack) RAIDStatus() *status.RAID {
	r, err := s.RAID.Status()
	out := &status.RAID{Device: s.RAID.Device(), UUID: s.RAID.UUID()}
	if err != nil {
		out.State = "not running: " + err.Error()
		return out
	}
	out.State, out.Health, out.Degraded, out.Disks = r.State, r.Health, r.Degraded, r.RaidDisks
	if r.SyncAction != "" && r.SyncAction != "idle" {
		out.Sync = strings.TrimSpace(r.SyncAction + " " + r.Progress)
	}
	for _, m := range r.Members {
		out.Members = append(out.Members, status.RAIDMember{ID: m.ID, Kernel: m.Kernel, State: m.State})
	}
	return out
}

// DRBDStatus is the replicated device as DRBD reports it.
func (s *Stack) DRBDStatus() *status.DRBD {
	d := s.DRBD.State()
	return &status.DRBD{Resource: s.DRBD.Config().Resource, Role: string(d.Role), PeerRole: string(d.PeerRole),
		Connection: string(d.Connection), Replication: d.Replication, Disk: string(d.Disk), PeerDisk: string(d.PeerDisk),
		SyncPercent: d.SyncPercent}
}
