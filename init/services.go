package pid1

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"tandem.dev/tandem/init/site"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/services/supervise"
)

// servicesBudget bounds bringing the whole graph up at boot.
const servicesBudget = 3 * time.Minute

// serviceGraph declares this head's layers, once. Today: the management
// network and the replication bond; the storage layers join here, on top
// of "bond", as they are written.
func (b *Boot) serviceGraph() (*graph.Graph, map[string]func() string, error) {
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
	link := b.Site.HA.Monitor.Link
	linkPolicy := graph.Policy{
		StartTimeout:    time.Minute, // DHCP may take a while
		MonitorInterval: time.Duration(link.IntervalMS) * time.Millisecond,
		MonitorTimeout:  time.Duration(link.TimeoutMS) * time.Millisecond,
	}
	g, err := graph.New(
		graph.Node{Resource: mgmt, Role: graph.Both, Policy: linkPolicy},
		graph.Node{Resource: bond, Role: graph.Both, Policy: linkPolicy},
	)
	if err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	b.mgmt = mgmt
	b.mu.Unlock()
	return g, map[string]func() string{"mgmt": mgmt.Addr, "bond": bond.Detail}, nil
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

// startServices starts the graph bottom-up and keeps monitoring it.
func (b *Boot) startServices() error {
	g, details, err := b.serviceGraph()
	if err != nil {
		return err
	}
	sup := supervise.New(g, supervise.Options{Logger: b.Log, OnEscalate: b.onEscalate})
	b.mu.Lock()
	b.sup, b.details = sup, details
	b.mu.Unlock()
	b.Log.Info("services: start order " + fmt.Sprint(g.StartOrder()))
	ctx, cancel := context.WithTimeout(context.Background(), servicesBudget)
	defer cancel()
	if err := sup.Start(ctx); err != nil {
		return err
	}
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
	return nil
}

// onEscalate is where the HA layer will fail over; today the failure is
// logged (by the supervisor) and shows in status.
func (b *Boot) onEscalate(name string, err error) {
	b.Log.Error("service "+name+" needs attention (no HA layer yet to fail over)", "err", err)
}
